"""The package layers have no back-edges: grading -> data -> models -> sampling -> rewards -> (recipes) -> algos ->
train -> eval/report, with config, the Hydra apps and the CLI on top. A module may import its own layer or
any lower one, never a higher one. Imports under `if TYPE_CHECKING:` (annotations only) are not edges."""

from __future__ import annotations

import ast
from pathlib import Path

import rlx

ROOT = Path(rlx.__file__).parent
LAYERS = {  # package or module -> level (higher = may import more)
    "rlx.grading": 0,  # answer grading, used by data (answer checks) and rewards alike
    "rlx.console": 0,  # log levels of the libraries: a leaf any layer may use
    "rlx.data": 1,
    "rlx.record": 1,  # the rollout record: what sampling hands to learning (read by algos and train)
    "rlx.models": 2,
    "rlx.sampling": 3,
    "rlx.rewards": 4,
    "rlx.recipes": 5,  # models the project builds itself: they sample and grade
    "rlx.algos": 6,
    "rlx.logger": 7,
    "rlx.train": 7,
    "rlx.eval": 8,
    "rlx.report": 8,
    "rlx.inspect": 8,  # reads a run directory's sample tables
    "rlx.config": 9,
    "rlx.sweep_guard": 9,
    "rlx.preflight": 9,  # cheap checks before the heavy imports (Hydra and the standard library only)
    "rlx.helptext": 9,
    "rlx.train.app": 10,  # Hydra entry points: the CLI layer
    "rlx.eval.app": 10,
    "rlx.cli": 10,
    "rlx": 10,
}


def level(module: str) -> tuple[int, str]:
    """The level of the longest LAYERS prefix of `module`."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        name = ".".join(parts[:n])
        if name in LAYERS:
            return LAYERS[name], name
    raise AssertionError(f"{module}: not in any layer; add it to LAYERS in tests/test_layers.py")


def _is_module(name: str) -> bool:
    path = ROOT.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def _type_checking_only(node: ast.AST, parents: dict) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def imports(path: Path) -> list[tuple[str, int]]:
    """(imported rlx module, line) of every runtime import in `path`, including function-local ones."""
    tree = ast.parse(path.read_text())
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            subs = [f"{node.module}.{a.name}" for a in node.names]
            names = [node.module] + [n for n in subs if _is_module(n)]  # `from rlx.x import y` with y a module
        else:
            continue
        if not _type_checking_only(node, parents):
            found += [(n, node.lineno) for n in names if n.startswith("rlx.")]
    return found


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def back_edges() -> list[str]:
    edges = []
    for path in sorted(ROOT.rglob("*.py")):
        source = module_name(path)
        src_level, _ = level(source)
        for target, line in imports(path):
            tgt_level, tgt_layer = level(target)
            if tgt_level > src_level:
                edges.append(f"{path.relative_to(ROOT.parent)}:{line}: {source} imports {target} ({tgt_layer})")
    return edges


def test_no_module_imports_a_higher_layer():
    assert back_edges() == []


def test_the_check_sees_a_back_edge(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import torch\n\ndef f():\n    from rlx.train.loop import Trainer\n")
    assert ("rlx.train.loop", 4) in imports(bad) and level("rlx.train.loop")[0] > level("rlx.models.load")[0]
    guarded = tmp_path / "guarded.py"
    guarded.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from rlx.config import RunConfig\n")
    assert imports(guarded) == []


# ------------------------------------------------------------------ import circles, inside a package too
def import_graph() -> dict[str, set[str]]:
    """module -> the rlx modules (files, not package __init__s) it imports at run time."""
    graph = {}
    for path in sorted(ROOT.rglob("*.py")):
        source = module_name(path)
        graph[source] = {target for target, _ in imports(path)
                         if target != source and ROOT.parent.joinpath(*target.split(".")).with_suffix(".py").exists()}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles of `graph`: its strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while not component or component[-1] != node:
                component.append(stack.pop())
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def test_no_import_circles_anywhere_not_even_inside_a_package():
    assert circles(import_graph()) == []


def test_the_circle_check_sees_a_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circles(graph) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []
