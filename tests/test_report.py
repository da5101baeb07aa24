"""`rlx report` on hand-made sweep dirs with known numbers: grouping, mean ± std over seeds, tokens, plots."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rlx.report import build_report, mean_curve, mean_std, read_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_run(root: Path, name: str, overrides: list[str] | None, *, evals: dict[int, float], final: float | None,
             steps: int = 2, tokens: tuple[int, int] = (100, 50), wall: float = 10.0,
             config: dict | None = None) -> Path:
    """A run dir as `rlx train` leaves it: metrics.jsonl (+ summary.json and the final row when finished)."""
    run = root / name
    run.mkdir(parents=True)
    rows = [{"step": 0, "test_accuracy": evals.get(0, 0.1)}]
    for step in range(1, steps + 1):
        row = {"step": step, "tokens_policy": tokens[0], "tokens_branch": tokens[1], "wall_seconds": step * 1.0,
               "cpu_train_s": step * 0.25, "tokens_forward": 4 * sum(tokens)}
        if step in evals and step != steps:
            row["test_accuracy"] = evals[step]
        rows.append(row)
    if final is not None:
        rows.append({"step": steps, "test_accuracy": final, "final": True})
        (run / "summary.json").write_text(json.dumps({"accuracy_after": final, "wall_seconds": wall}))
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if overrides is not None:
        (run / ".hydra").mkdir()
        (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (run / "config.yaml").write_text(yaml.safe_dump(config or {"seed": 0, "algo": {"name": "x"}}))
    return run


@pytest.fixture
def sweep(tmp_path) -> Path:
    root = tmp_path / "multirun" / "2025-01-01" / "12-00-00"
    finals, mids = [0.5, 0.6, 0.7], [0.6, 0.8, 0.4]
    for seed in range(3):  # trepo: 3 seeds; best of seed s = max(mid, final) = 0.6, 0.8, 0.7
        make_run(root, f"{seed}_trepo", ["+sweep=x", "algo=trepo", "algo.gamma=1.0", f"seed={seed}"],
                 evals={1: mids[seed]}, final=finals[seed], wall=10.0 + seed)
    make_run(root, "3_ppo", ["+sweep=x", "algo=ppo", "algo.gamma=1.0", "seed=0"], evals={1: 0.45}, final=0.4,
             tokens=(200, 0), wall=5.0)
    make_run(root, "4_ppo", ["+sweep=x", "algo=ppo", "algo.gamma=1.0", "seed=1"], evals={1: 0.9}, final=None)
    (root / "multirun.yaml").write_text("hydra: {}\n")
    return root


def read_csv(path: Path) -> dict[str, dict[str, str]]:
    with path.open() as f:
        return {row["configuration"]: row for row in csv.DictReader(f)}


def test_mean_std_is_the_sample_std():
    assert mean_std([0.5, 0.6, 0.7]) == pytest.approx((0.6, 0.1))
    assert mean_std([0.3]) == (0.3, 0.0)
    assert all(math.isnan(v) for v in mean_std([]))


def test_report_numbers_per_configuration(sweep):
    rows = build_report(sweep)
    table = read_csv(sweep / "report.csv")
    assert [r["configuration"] for r in rows] == ["algo=trepo", "algo=ppo"]  # best final accuracy first
    trepo, ppo = table["algo=trepo"], table["algo=ppo"]  # shared overrides (+sweep, gamma) left out of labels
    assert int(trepo["n_seeds"]) == 3 and trepo["seeds"] == "0 1 2"
    assert float(trepo["final_acc_mean"]) == pytest.approx(0.6)
    assert float(trepo["final_acc_std"]) == pytest.approx(0.1)
    assert float(trepo["best_acc_mean"]) == pytest.approx(0.7)
    assert float(trepo["best_acc_std"]) == pytest.approx(0.1)
    assert float(trepo["tokens_mean"]) == 300  # (100 policy + 50 branch) x 2 steps
    assert float(trepo["tokens_branch_mean"]) == 100
    assert float(trepo["tokens_forward_mean"]) == 1200  # 4 x 150 forward tokens x 2 steps: the training compute
    assert float(trepo["wall_seconds_mean"]) == pytest.approx(11.0)
    assert int(trepo["steps"]) == 2
    assert float(trepo["cpu_train_s_mean"]) == pytest.approx(0.5)  # the last step row's cpu_train_s, 2 x 0.25
    # ppo: the unfinished seed 1 is left out (its 0.9 must not count), so one seed and std 0
    assert int(ppo["n_seeds"]) == 1 and ppo["seeds"] == "0"
    assert float(ppo["final_acc_mean"]) == pytest.approx(0.4) and float(ppo["final_acc_std"]) == 0.0
    assert float(ppo["best_acc_mean"]) == pytest.approx(0.45)
    assert float(ppo["tokens_mean"]) == 400


def test_report_markdown_and_plots(sweep):
    build_report(sweep)
    text = (sweep / "report.md").read_text()
    # 95% CI: 0.6 ± t(0.975, 2) 0.1 / sqrt(3) = 0.6 ± 4.303 x 0.0577; no grpo run, so no paired difference
    assert "| algo=trepo | 3 | 0.600 ± 0.100 | [0.352, 0.848] | n/a | 0.700 ± 0.100 | 300 |" in text
    assert "4_ppo" in text  # the unfinished run is named, not silently dropped
    for name in ("accuracy_vs_step.png", "accuracy_vs_tokens.png", "accuracy_vs_forward.png", "accuracy_vs_wall.png",
                 "accuracy_vs_cpu.png"):
        assert (sweep / name).read_bytes().startswith(PNG_MAGIC)


def test_mean_curve_aligns_seeds_by_step(sweep):
    runs = [read_run(sweep / f"{s}_trepo") for s in range(3)]
    curve = mean_curve(runs)
    assert [point[0] for point in curve] == [0, 1, 2]
    step, tokens, mean, low, high, seconds, cpu, forward = curve[-1]  # step 2 = the final evaluation
    assert (step, tokens, seconds, forward) == (2, 300, 2.0, 1200)  # seconds: the last step row's wall clock
    assert cpu == 2 * 0.25  # cpu_train_s of the last step row
    assert (mean, low, high) == pytest.approx((0.6, 0.5, 0.7))
    assert curve[1][1:] == pytest.approx((150, 0.6, 0.4, 0.8, 1.0, 0.25, 600))


def test_without_overrides_runs_group_by_config_minus_seed(tmp_path):
    for seed, final in [(0, 0.2), (1, 0.4)]:
        make_run(tmp_path, f"a{seed}", None, evals={}, final=final,
                 config={"seed": seed, "output_dir": f"/x/a{seed}", "algo": {"name": "grpo", "gamma": 1.0}})
    make_run(tmp_path, "b0", None, evals={}, final=0.9,
             config={"seed": 0, "output_dir": "/x/b0", "algo": {"name": "grpo", "gamma": 0.9}})
    build_report(tmp_path, plots=False)
    table = read_csv(tmp_path / "report.csv")
    assert set(table) == {"algo.gamma=1.0", "algo.gamma=0.9"}
    assert float(table["algo.gamma=1.0"]["final_acc_mean"]) == pytest.approx(0.3)
    assert int(table["algo.gamma=1.0"]["n_seeds"]) == 2


def test_cli(sweep, tmp_path):
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "rlx.cli", "report", str(sweep), "--out", str(out)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "2 configurations" in result.stdout
    assert {p.name for p in out.iterdir()} == {"report.md", "report.csv", "accuracy_vs_step.png",
                                               "accuracy_vs_tokens.png", "accuracy_vs_forward.png",
                                               "accuracy_vs_wall.png", "accuracy_vs_cpu.png"}
    empty = tmp_path / "empty"
    empty.mkdir()
    result = subprocess.run([sys.executable, "-m", "rlx.cli", "report", str(empty)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode != 0 and "no run" in result.stderr


def test_confidence_interval_and_paired_difference_to_grpo(sweep):
    finals = {0: 0.4, 1: 0.6, 2: 0.5}  # trepo's are 0.5, 0.6, 0.7: differences +0.1, 0.0, +0.2 per seed
    for seed, final in finals.items():
        make_run(sweep, f"{5 + seed}_grpo", ["+sweep=x", "algo=grpo", "algo.gamma=1.0", f"seed={seed}"], evals={},
                 final=final)
    build_report(sweep, plots=False)
    table = read_csv(sweep / "report.csv")
    trepo, grpo, ppo = table["algo=trepo"], table["algo=grpo"], table["algo=ppo"]
    half = 4.303 * 0.1 / math.sqrt(3)  # t(0.975, df=2) x sample std / sqrt(n), for both
    assert float(trepo["final_acc_ci95"]) == pytest.approx(half)
    assert float(trepo["diff_vs_baseline_mean"]) == pytest.approx(0.1)
    assert float(trepo["diff_vs_baseline_ci95"]) == pytest.approx(half) and int(trepo["diff_n"]) == 3
    assert float(grpo["diff_vs_baseline_mean"]) == 0.0
    assert int(ppo["diff_n"]) == 1 and float(ppo["diff_vs_baseline_mean"]) == pytest.approx(0.0)  # 0.4 - 0.4
    assert math.isnan(float(ppo["diff_vs_baseline_ci95"]))  # one pair: no interval
    text = (sweep / "report.md").read_text()
    assert "| algo=trepo | 3 | 0.600 ± 0.100 | [0.352, 0.848] | +0.100 [-0.148, +0.348] (3) |" in text
    assert "| algo=grpo | 3 | 0.500 ± 0.100 | [0.252, 0.748] | baseline |" in text


def test_baseline_by_label_and_an_unknown_label_names_the_choices(sweep):
    build_report(sweep, plots=False, baseline="algo=ppo")
    assert float(read_csv(sweep / "report.csv")["algo=trepo"]["diff_vs_baseline_mean"]) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="algo=trepo"):
        build_report(sweep, plots=False, baseline="algo=nope")


def test_branching_diagnostics_are_averaged_over_steps_then_seeds(tmp_path):
    for seed, agreement in [(0, (0.6, 0.8)), (1, (0.7, 0.9))]:
        run = make_run(tmp_path, f"{seed}_trepo", ["algo=trepo", f"seed={seed}"], evals={}, final=0.5)
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        for row, value in zip([r for r in rows if r["step"] >= 1 and "tokens_policy" in r], agreement):
            row.update(adv_sign_agreement=value, knot_value_stderr=2 * value)
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    grpo = make_run(tmp_path, "0_grpo", ["algo=grpo", "seed=0"], evals={}, final=0.4, tokens=(100, 0))
    rows = [json.loads(line) for line in (grpo / "metrics.jsonl").read_text().splitlines()]
    for row in (r for r in rows if "tokens_policy" in r):
        row["knot_value_stderr"] = 0.0  # every algorithm logs a 0 there
    (grpo / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    build_report(tmp_path, plots=False)
    table = read_csv(tmp_path / "report.csv")
    assert float(table["algo=trepo"]["adv_sign_agreement"]) == pytest.approx((0.7 + 0.8) / 2)
    assert float(table["algo=trepo"]["knot_value_stderr"]) == pytest.approx(1.5)
    assert table["algo=grpo"]["adv_sign_agreement"] == "nan"  # not logged by that run: no number invented
    assert table["algo=grpo"]["knot_value_stderr"] == "nan"  # no branch tokens: its logged 0 is no knot statistic
    text = (tmp_path / "report.md").read_text()
    assert "| algo=trepo | 1.500 | n/a | 0.750 |" in text and "| algo=grpo | n/a" not in text


def test_the_verdict_at_equal_forward_tokens_reads_the_baselines_curve_there(tmp_path):
    """Each step logs 600 forward tokens (make_run): GRPO's curve is (0, 0.1), (1200, 0.3), (2400, 0.5); a tree run
    of one step (600 forward tokens) meets GRPO at 0.2, halfway between its first two evaluations."""
    for seed in (0, 1):
        make_run(tmp_path, f"{seed}_grpo", ["algo=grpo", f"seed={seed}"], evals={0: 0.1, 2: 0.3}, final=0.5, steps=4)
        make_run(tmp_path, f"{seed}_tree", ["algo=tree", f"seed={seed}"], evals={}, final=0.4 + 0.1 * seed, steps=1)
    make_run(tmp_path, "0_long", ["algo=long", "seed=0"], evals={}, final=0.9, steps=5)  # 3000 > GRPO's 2400
    build_report(tmp_path, plots=False)
    table = read_csv(tmp_path / "report.csv")
    tree, long = table["algo=tree"], table["algo=long"]
    assert float(tree["baseline_acc_at_forward"]) == pytest.approx(0.2)
    assert float(tree["diff_at_forward_mean"]) == pytest.approx(0.25) and int(tree["diff_at_forward_n"]) == 2
    assert float(tree["diff_vs_baseline_mean"]) == pytest.approx(-0.05)  # at the end of each run, as before
    assert int(long["diff_at_forward_n"]) == 0  # beyond the baseline's curve: no pair invented
    text = (tmp_path / "report.md").read_text()
    assert "| algo=tree | 600 | 0.450 ± 0.071 | 0.200 | +0.250 [-0.385, +0.885] (2) |" in text
    assert "| algo=long | 3,000 | 0.900 ± 0.000 | n/a | n/a |" in text
