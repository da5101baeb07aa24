"""The comparison sweep composes for every algorithm, and `rlx report` puts token-budgeted runs on one
accuracy-vs-tokens axis (the runs' own `tokens_total`; seeds evaluated at different steps align by evaluation)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from rlx.config import parse_run_config
from rlx.report import Run, mean_curve, read_run
from tests.test_sweeps import compose_with_hydra, grid_size


def test_compare_sweep_is_five_algorithms_three_seeds_one_token_budget():
    cfg = compose_with_hydra("+sweep=compare")
    params = dict(cfg.hydra.sweeper.params)
    assert params == {"algo": "ppo,grpo,rloo,trepo,vineppo", "seed": "0,1,2"} and grid_size(params) == 15
    for algo in params["algo"].split(","):
        job = compose_with_hydra("+sweep=compare", f"algo={algo}", hydra_config=False)
        parsed = parse_run_config(OmegaConf.to_container(job, resolve=True))
        assert (parsed.train.token_budget, parsed.train.eval_every_tokens, parsed.train.eval_every) == (
            1_000_000, 100_000, 0)


def test_report_reads_tokens_total_and_aligns_evaluations_by_index(tmp_path: Path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    rows = [{"step": 0, "test_accuracy": 0.1},
            {"step": 1, "tokens_policy": 10, "tokens_branch": 0, "tokens_dropped": 5, "tokens_total": 15},
            {"step": 2, "tokens_policy": 10, "tokens_branch": 0, "tokens_total": 25, "test_accuracy": 0.3},
            {"step": 2, "test_accuracy": 0.4, "final": True}]
    (run_dir / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    assert read_run(run_dir).curve == [(0, 0.1, 0, 0.0, 0.0, 0), (2, 0.4, 25, 0.0, 0.0, 0)]  # tokens_total: + dropped
    a = Run(run_dir, ("x",), 0, [(0, 0.1, 0, 0.0, 0.0, 0), (3, 0.3, 100, 3.0, 2.0, 400), (5, 0.5, 200, 5.0, 4.0, 800)],
            0.5, 0.5, 200, 0, 1.0, 5)
    b = Run(run_dir, ("x",), 1, [(0, 0.2, 0, 0.0, 0.0, 0), (4, 0.4, 110, 5.0, 3.0, 600), (6, 0.6, 210, 7.0, 5.0, 900)],
            0.6, 0.6, 210, 0, 1.0, 6)
    expected = [(0, 0.0, 0.15, 0.1, 0.2, 0.0, 0.0, 0.0), (4, 105.0, 0.35, 0.3, 0.4, 4.0, 2.5, 500.0),
                (6, 205.0, 0.55, 0.5, 0.6, 6.0, 4.5, 850.0)]
    got = mean_curve([a, b])
    assert [p[0] for p in got] == [0, 4, 6]  # the k-th evaluations, at their mean step
    assert all(g == pytest.approx(e) for g, e in zip(got, expected))
