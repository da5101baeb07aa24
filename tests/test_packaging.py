"""A plain (non-editable) `pip install .` ships conf/ inside the package: Hydra finds it through pkg://rlx.conf."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_install_composes_configs(tmp_path):
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    build = subprocess.run([*pip[:-1], "-v", "wheel", "--no-deps", "--no-build-isolation", "-w",
                            str(tmp_path / "wheel"), str(REPO)],
                           check=True, capture_output=True, text=True, timeout=300)
    assert "would be ignored" not in build.stdout + build.stderr  # every conf group is a declared package
    wheel = next((tmp_path / "wheel").glob("rlx-*.whl"))
    subprocess.run([*pip, "install", "--no-deps", "--target", str(tmp_path / "site"), str(wheel)], check=True,
                   capture_output=True, timeout=300)
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    run = subprocess.run([sys.executable, "-m", "rlx.cli", "train", "--cfg", "job", "algo=grpo"], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert yaml.safe_load(run.stdout)["algo"]["name"] == "grpo"
    where = subprocess.run([sys.executable, "-c", "import rlx; print(rlx.__file__)"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=60)
    assert where.stdout.strip().startswith(str(tmp_path / "site"))  # the installed copy, not the checkout


def test_every_config_group_and_subpackage_is_a_declared_package():
    """An undeclared conf/ subdirectory makes setuptools warn "Package would be ignored" on every install; an
    undeclared rlx subpackage is missing from the wheel (`rlx train` fails to import it)."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib

    declared = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    groups = {"rlx.conf." + ".".join(d.relative_to(REPO / "conf").parts)
              for d in (REPO / "conf").rglob("*") if d.is_dir() and d.name != "__pycache__"}
    assert groups and groups <= declared, sorted(groups - declared)
    packages = {".".join(d.relative_to(REPO).parts) for d in (REPO / "rlx").rglob("*")
                if (d / "__init__.py").exists() and d.name != "conf"}
    assert "rlx.train.rollout" in packages and packages <= declared, sorted(packages - declared)
