"""A default `rlx train` is quiet (issue 12 item 8): a few lines besides the progress bar, vLLM's start-up and
per-sync warnings in the run's log file only, `train.progress_bar=false` leaves no bar at all, and `-v` shows
library output again. Real CLI, real tiny model, real vLLM engine."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
ENV.pop("RLX_VERBOSE", None)
SHORT = ["train.steps=2", "train.prompts_per_step=4", "train.eval_size=8", "train.eval_every=0"]


def console_lines(run: subprocess.CompletedProcess) -> list[str]:
    """Every line written to the terminal; a carriage return (a bar redrawing itself) starts a new line."""
    return [line for line in re.split(r"[\r\n]+", run.stdout + run.stderr) if line.strip()]


def rlx(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rlx.cli", *args], env=ENV, capture_output=True, text=True,
                          timeout=900)


@pytest.mark.slow
def test_default_vllm_run_prints_a_few_lines_and_logs_the_rest(tiny_model_dir, tmp_path):
    run = rlx("train", "sampler=vllm", f"model.path={tiny_model_dir}", *SHORT, f"hydra.run.dir={tmp_path}")
    assert run.returncode == 0, run.stderr[-3000:]
    lines = console_lines(run)
    bar = [line for line in lines if line.startswith("rlx trepo:")]
    others = [line for line in lines if not line.startswith("rlx trepo:")]
    assert bar and len(others) <= 15, others
    assert not any("WARNING" in line or "Warning" in line or "it/s" in line for line in others), others
    assert sum(line.startswith("[rlx] test accuracy") for line in others) == 2
    log = (tmp_path / "app.log").read_text()
    assert log.count("RotaryEmbedding: Failed to load weights") >= 2  # one per weight sync, in the file only
    assert "[vllm.engine.arg_utils][WARNING]" in log  # start-up warnings too


@pytest.mark.slow
def test_progress_bar_false_leaves_no_bar_and_verbose_shows_library_output(tiny_model_dir, tmp_path):
    common = ["train", "sampler=hf", f"model.path={tiny_model_dir}", *SHORT, "train.save_every=1",
              "train.progress_bar=false"]
    quiet = rlx(*common, f"hydra.run.dir={tmp_path / 'quiet'}")
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    lines = console_lines(quiet)
    assert not any("%|" in line or "it/s" in line for line in lines), lines  # no bar: loading, saving or steps
    assert len(lines) <= 15, lines
    verbose = rlx("-v", *common, f"hydra.run.dir={tmp_path / 'verbose'}")
    assert verbose.returncode == 0, verbose.stderr[-3000:]
    assert any(line.startswith("Loading weights") for line in console_lines(verbose))  # transformers' own bar
    assert Path(tmp_path / "verbose" / "summary.json").exists()
