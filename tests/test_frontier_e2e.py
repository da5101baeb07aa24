"""Every frontier option end to end through the real CLI (Hydra, the tiny model, sampler=hf, 2 steps), plus
`mode=none` = the default job exactly, and the budgets stopping and evaluating where they must."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_train_e2e import short_run

TIMING = ("time_", "wall_", "cpu_")  # measured durations differ between two identical runs


def rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def step_rows(run_dir: Path) -> list[dict]:
    return [r for r in rows(run_dir) if "reward_mean" in r]


def run_ok(tmp_path: Path, model_dir: Path, algo: str, *extra: str) -> list[dict]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    run_dir = tmp_path / "run"
    result = short_run(algo, run_dir, model_dir, "train.prompts_per_step=2", *extra)
    assert result.returncode == 0, result.stderr[-3000:]
    steps = step_rows(run_dir)
    assert [r["step"] for r in steps] == [1, 2]
    for r in steps:  # the mismatch is logged every step and is ~0 with the fp32 HF sampler on CPU
        assert 0.0 <= r["mismatch_k3"] < 1e-4 and r["mismatch_outside_frac"] == 0.0
        assert abs(r["mismatch_ratio_max"] - 1.0) < 1e-3 and r["tokens_total"] > 0
    return steps


OPTIONS = {
    "tis": ("grpo", "algo.samples_per_prompt=2", "algo.rollout_correction.mode=tis"),
    "mis": ("trepo", "algo.rollouts_per_branch=2", "algo.rollout_correction.mode=mis",
            "algo.rollout_correction.cap=1.5"),
    "seq_mask": ("rloo", "algo.rollout_correction.mode=seq_mask", "algo.optimization_num=2"),
    "clip_higher": ("ppo", "algo.clip_eps_low=0.1", "algo.clip_eps_high=0.28", "algo.optimization_num=2"),
    "cispo": ("cispo", "algo.samples_per_prompt=2"),
    "tempo": ("grpo", "algo.samples_per_prompt=4", "algo.tempo=true"),
    "dynamic_sampling": ("grpo", "algo.samples_per_prompt=4", "train.dynamic_sampling=true",
                         "train.max_refill_rounds=2"),
    "overlong_filter": ("grpo", "algo.samples_per_prompt=2", "train.overlong_filter=true", "train.max_new_tokens=8"),
    "overlong_penalty": ("grpo", "algo.samples_per_prompt=2", "train.max_new_tokens=8",
                         "reward_model.overlong_penalty.cache=8"),
    "entropy_knots": ("vineppo", "algo.branch_selection=entropy", "algo.num_branch_points=3",
                      "algo.rollouts_per_branch=2"),
    "adaptive_rollouts": ("trepo", "algo.adaptive_rollouts=true", "algo.adaptive_first_round=2",
                          "algo.rollouts_per_branch=4"),
    "low_prob_knots": ("trepo", "algo.branch_selection=low_prob", "algo.num_branch_points=3",
                       "algo.rollouts_per_branch=2"),
}


@pytest.mark.slow
@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_option_runs_end_to_end(option, tiny_model_dir, tmp_path):
    algo, *extra = OPTIONS[option]
    steps = run_ok(tmp_path, tiny_model_dir, algo, *extra)
    for r in steps:
        if option in ("tis", "mis", "seq_mask"):  # pi_old = pi_sampler up to fp32 rounding: nothing corrected
            assert r["rc_rejected_frac"] == 0.0 and abs(r["rc_weight_mean"] - 1.0) < 1e-4
        if option == "dynamic_sampling":
            kept = r["dynamic_kept_groups"]
            assert kept == 2 or r["dynamic_refill_rounds"] == 2  # a full batch, or the refill rounds ran out
            assert r["tokens_total"] - (r["step"] > 1) * steps[0]["tokens_total"] == r["tokens_policy"] + \
                r["tokens_dropped"]
        if option == "overlong_penalty":  # cache = L_max = 8: every reward is correct - length / 8, exactly
            assert r["reward_mean"] == pytest.approx(r["train_accuracy"] - r["response_length"] / 8, abs=1e-6)
        if option.endswith("_knots"):
            assert r["num_knots"] == 3 * 2 * 4 if option == "low_prob_knots" else r["num_knots"] > 0
        if option == "adaptive_rollouts":
            assert r["adaptive_extra_rollouts"] > 0 and r["adaptive_se_after"] < r["adaptive_se_before"]
            assert r["num_branch_rollouts"] == 2 * r["num_knots"] + r["adaptive_extra_rollouts"]
        if option == "cispo":
            assert 0.0 < r["is_weight_mean"] <= 1.28


@pytest.mark.slow
def test_rollout_correction_none_reproduces_the_default_job_exactly(tiny_model_dir, tmp_path):
    default = run_ok(tmp_path / "a", tiny_model_dir, "trepo", "algo.rollouts_per_branch=2")
    explicit = run_ok(tmp_path / "b", tiny_model_dir, "trepo", "algo.rollouts_per_branch=2",
                      "algo.rollout_correction.mode=none", "algo.rollout_correction.cap=3")
    for a, b in zip(default, explicit):
        a = {k: v for k, v in a.items() if not k.startswith(TIMING)}
        assert a == {k: v for k, v in b.items() if not k.startswith(TIMING)}
        assert "rc_weight_mean" not in a  # mode none adds no weights


@pytest.mark.slow
def test_token_budget_stops_at_the_right_step_and_evals_fall_at_token_intervals(tiny_model_dir, tmp_path):
    run_dir = tmp_path / "run"
    result = short_run("grpo", run_dir, tiny_model_dir, "algo.samples_per_prompt=2", "train.prompts_per_step=2",
                       "train.steps=50", "train.eval_every=0", "train.token_budget=300", "train.eval_every_tokens=100")
    assert result.returncode == 0, result.stderr[-3000:]
    all_rows, steps = rows(run_dir), step_rows(run_dir)
    totals = [r["tokens_total"] for r in steps]
    assert totals == [sum(s["tokens_policy"] for s in steps[: i + 1]) for i in range(len(steps))]
    assert totals[-1] >= 300 and all(t < 300 for t in totals[:-1])  # stopped at the first step past the budget
    last = steps[-1]["step"]
    crossed = [r["step"] for i, r in enumerate(steps[:-1]) if totals[i] // 100 > ([0] + totals)[i] // 100]
    assert [r["step"] for r in all_rows if "test_accuracy" in r] == [0, *crossed, last]  # + before and final
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == last and summary["tokens_total"] == totals[-1] and all_rows[-1]["step"] == last
    assert "token_budget spent after step" in result.stdout


@pytest.mark.slow
def test_time_budget_stops_after_the_first_step(tiny_model_dir, tmp_path):
    run_dir = tmp_path / "run"
    result = short_run("rloo", run_dir, tiny_model_dir, "train.prompts_per_step=2", "train.steps=50",
                       "train.time_budget_s=0.001")
    assert result.returncode == 0, result.stderr[-3000:]
    steps = step_rows(run_dir)
    assert [r["step"] for r in steps] == [1] and steps[0]["wall_train_s"] > 0.001
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 1


@pytest.mark.slow
def test_dynamic_sampling_is_deterministic_under_the_seed(tiny_model_dir, tmp_path):
    algo, *extra = OPTIONS["dynamic_sampling"]
    first = run_ok(tmp_path / "a", tiny_model_dir, algo, *extra)
    second = run_ok(tmp_path / "b", tiny_model_dir, algo, *extra)
    assert sum(r["dynamic_dropped_groups"] for r in first) > 0  # the filter was exercised
    for a, b in zip(first, second):
        assert {k: v for k, v in a.items() if not k.startswith(TIMING)} == \
            {k: v for k, v in b.items() if not k.startswith(TIMING)}
