"""Layering of the grader move (issue 13): rlx.grading is the lowest package that reads answers and imports
nothing else from rlx; rlx.data uses it and no longer imports rlx.rewards (or anything above data)."""

from __future__ import annotations

import ast
from pathlib import Path

RLX = Path(__file__).resolve().parents[2] / "rlx"


def rlx_imports(package: str) -> dict[str, set[str]]:
    """module file -> the rlx modules it imports (at any depth of the file, lazy imports included)."""
    found: dict[str, set[str]] = {}
    for path in sorted((RLX / package).glob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
        found[path.name] = {name for name in names if name == "rlx" or name.startswith("rlx.")}
    return found


def test_grading_imports_nothing_else_from_rlx():
    imports = rlx_imports("grading")
    assert {"grader.py", "extract.py", "screen.py", "verify.py", "worker.py", "arith.py"} <= set(imports)
    outside = {module: sorted(n for n in names if not n.startswith("rlx.grading")) for module, names in imports.items()}
    assert {module: names for module, names in outside.items() if names} == {}


def test_data_imports_nothing_above_data():
    above = ("rlx.rewards", "rlx.models", "rlx.sampling", "rlx.algos", "rlx.train", "rlx.eval", "rlx.config")
    imports = rlx_imports("data")
    back_edges = {module: sorted(n for n in names if n.startswith(above)) for module, names in imports.items()}
    assert {module: names for module, names in back_edges.items() if names} == {}
    assert "rlx.grading.grader" in imports["tasks.py"] and "rlx.grading.extract" in imports["configs.py"]
