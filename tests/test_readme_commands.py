"""The README's commands that read a run directory, run as written against a short default run's directory
(docs/experiments.md, "Logging and W&B"): the default job logs the sample dumps `rlx inspect` reads, at the
steps a newcomer would look at (every 10 steps, `logger.log_samples_every`)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RUN = "runs/<date>/<time>"
# only to make the run and the evaluation short: the logger, run directory and sampler stay the default job's
SHORT_TRAIN = ("train.steps=10", "train.prompts_per_step=2", "train.eval_size=8", "train.progress_bar=false",
               "algo.num_branch_points=2", "algo.rollouts_per_branch=2")
SHORT_EVAL = ("eval.size=8",)


def readme_commands() -> list[list[str]]:
    """Every `rlx ...` line of the README's bash blocks that names a run directory, comments dropped."""
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, re.DOTALL)
    lines = [line.split("  #")[0].strip() for block in blocks for line in block.splitlines()]
    return [shlex.split(line) for line in lines if line.startswith("rlx ") and RUN in line]


def rlx(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "rlx.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=900)


@pytest.mark.slow
def test_every_readme_command_works_on_a_short_default_run(tiny_model_dir, tmp_path):
    commands = readme_commands()
    assert sorted(c[1] for c in commands) == ["eval", "inspect"]  # what the README shows on a run directory
    run_dir = tmp_path / "runs" / "2026-01-01" / "00-00-00"
    train = rlx(["train", *SHORT_TRAIN, f"hydra.run.dir={run_dir}"], tmp_path)
    assert train.returncode == 0, train.stderr[-3000:]
    for command in commands:
        args = [arg.replace(RUN, str(run_dir.relative_to(tmp_path))) for arg in command[1:]]
        if args[0] == "eval":
            args += [*SHORT_EVAL, f"hydra.run.dir={tmp_path / 'eval'}"]
        result = rlx(args, tmp_path)
        assert result.returncode == 0, (command, result.stderr[-3000:])
        if args[0] == "inspect":
            page = run_dir / "inspect" / "step_000010.html"
            assert result.stdout.strip() == f"[rlx] wrote {page.relative_to(tmp_path)}"
            assert "step 10" in page.read_text()
    assert sorted(p.name for p in (run_dir / "samples").glob("*.jsonl")) == ["step_000010.jsonl"]
