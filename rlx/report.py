"""`rlx report <sweep dir>`: one table and two plots comparing the configurations of a finished sweep.

Every directory below the sweep dir that holds a `metrics.jsonl` is a run. Runs are grouped into
configurations by their Hydra overrides (`.hydra/overrides.yaml`) minus `seed`; without overrides, by their
resolved config (`config.yaml` or `.hydra/config.yaml`) minus `seed` and `output_dir`. Numbers per
configuration are mean ± std over its seeds (sample std, ddof=1; 0 with a single seed), the final accuracy's 95%
confidence interval over seeds (Student t), and its paired difference to a baseline configuration (by default
the one run with `algo=grpo`; `--baseline LABEL`): per seed, accuracy minus the baseline's with the same seed,
then mean and 95% interval of those differences.

Writes into the sweep dir (or --out): report.md, report.csv and accuracy_vs_{step,tokens,forward,wall,cpu}.png
(training wall time and CPU time exclude evaluations; CPU time, `cpu_train_s`, is the fair clock when runs share a
machine). Two compute axes: generated tokens (what sampling cost) and forward tokens, the sum of the steps'
`tokens_forward` (the tokens one forward pass over each step's batch computes, a shared prefix once with
`train.share_prefix`: what training cost, since the update's FLOPs scale with it). Where runs log forward tokens,
a second verdict compares at equal forward tokens: per seed, a configuration's final accuracy minus the
baseline's accuracy at the same forward-token count (its curve linear between the two evaluations around it;
none where that count lies beyond the baseline's run).
This is a plain argparse program, not a Hydra app: it reads finished runs and composes nothing.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

IGNORED_KEYS = ("seed", "+seed", "++seed", "output_dir", "hydra.run.dir", "hydra.sweep.dir")
CSV_COLUMNS = ["configuration", "n_seeds", "seeds", "final_acc_mean", "final_acc_std", "final_acc_ci95",
               "diff_vs_baseline_mean", "diff_vs_baseline_ci95", "diff_n", "best_acc_mean", "best_acc_std",
               "tokens_mean", "tokens_policy_mean", "tokens_branch_mean", "tokens_forward_mean", "wall_seconds_mean",
               "cpu_train_s_mean",
               "steps", "knot_value_stderr", "exact_token_share", "adv_sign_agreement",
               "baseline_acc_at_forward", "diff_at_forward_mean", "diff_at_forward_ci95", "diff_at_forward_n"]
# per-step metrics averaged over a run's steps, then over seeds: why prefix branching does or does not pay
# (docs/frontier.md, "The compute-matched comparison")
DIAGNOSTIC_KEYS = ("knot_value_stderr", "exact_token_share", "adv_sign_agreement")
# Student t quantiles t(0.975, df) for df = 1..30 (beyond: the normal's 1.96); no scipy dependency for a table
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


@dataclass
class Run:
    path: Path
    key: tuple[str, ...]  # what identifies its configuration (overrides or flattened config, minus seed)
    seed: int | None
    curve: list[tuple[int, float, int, float, float, int]]  # per evaluation: (step, test accuracy, generated
    # tokens, training wall seconds, training CPU seconds, forward tokens)
    final_acc: float | None  # None: the run did not finish (no summary.json, no `final` row)
    best_acc: float | None
    tokens_policy: int
    tokens_branch: int
    wall_seconds: float | None
    steps: int
    diagnostics: dict[str, float] = field(default_factory=dict)  # DIAGNOSTIC_KEYS' means over the run's steps
    cpu_train_s: float | None = None  # the last logged cpu_train_s (training CPU seconds); None if never logged
    tokens_forward: int = 0  # the steps' tokens_forward summed: the training compute


@dataclass
class Configuration:
    key: tuple[str, ...]
    label: str = ""
    runs: list[Run] = field(default_factory=list)


# ------------------------------------------------------------------------------------------- reading
def find_run_dirs(sweep_dir: Path) -> list[Path]:
    return sorted(p.parent for p in sweep_dir.rglob("metrics.jsonl") if "wandb" not in p.parts)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    rows = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a run killed mid-write leaves a torn last line
                continue
    return rows


def read_yaml(*candidates: Path) -> Any:
    for path in candidates:
        if path.exists():
            return yaml.safe_load(path.read_text())
    return None


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{"algo": {"gamma": 1.0}} -> {"algo.gamma": 1.0}."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def override_key(override: str) -> str:
    return override.split("=", 1)[0]


def run_identity(run_dir: Path) -> tuple[tuple[str, ...], int | None]:
    """(configuration key, seed) of one run, from its overrides if Hydra saved them, else its config."""
    config = read_yaml(run_dir / "config.yaml", run_dir / ".hydra" / "config.yaml") or {}
    seed = config.get("seed") if isinstance(config, dict) else None
    overrides = read_yaml(run_dir / ".hydra" / "overrides.yaml")
    if isinstance(overrides, list):
        for item in overrides:
            if override_key(item).lstrip("+") == "seed":
                seed = yaml.safe_load(item.split("=", 1)[1])
        key = tuple(sorted(o for o in overrides if override_key(o) not in IGNORED_KEYS))
    else:
        flat = flatten(config) if isinstance(config, dict) else {}
        key = tuple(f"{k}={v}" for k, v in sorted(flat.items()) if k not in IGNORED_KEYS)
    return key, (int(seed) if isinstance(seed, (int, float)) else None)


def read_run(run_dir: Path) -> Run:
    rows = read_metrics(run_dir / "metrics.jsonl")
    summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").exists() else {}
    key, seed = run_identity(run_dir)
    curve: dict[int, tuple[float, int, float, float, int]] = {}  # step -> (accuracy, tokens, wall s, CPU s, forward)
    tokens_policy = tokens_branch = tokens_forward = 0
    generated = None  # the run's own cumulative `tokens_total` (also counts dynamic sampling's dropped groups)
    final_acc, wall, trained_s, cpu_s = None, None, 0.0, 0.0
    for row in rows:
        step = int(row.get("step", 0))
        tokens_policy += int(row.get("tokens_policy", 0))
        tokens_branch += int(row.get("tokens_branch", 0))
        tokens_forward += int(row.get("tokens_forward", 0))
        if "tokens_total" in row:
            generated = int(row["tokens_total"])
        if "wall_seconds" in row:
            wall = float(row["wall_seconds"])
        trained_s = float(row.get("wall_train_s", row.get("wall_seconds", trained_s)))  # training time, no evals
        cpu_s = float(row.get("cpu_train_s", cpu_s))
        if "test_accuracy" in row:
            tokens = tokens_policy + tokens_branch if generated is None else generated
            curve[step] = (float(row["test_accuracy"]), tokens, trained_s, cpu_s, tokens_forward)  # a later row wins
            if row.get("final"):
                final_acc = float(row["test_accuracy"])
    if "accuracy_after" in summary:
        final_acc = float(summary["accuracy_after"])
    if "wall_seconds" in summary:
        wall = float(summary["wall_seconds"])
    points = [(step, *point) for step, point in sorted(curve.items())]
    trained = [acc for step, acc, *_ in points if step >= 1]  # best over training: the step-0 eval is the base
    best = max(trained) if trained else (final_acc if final_acc is not None else None)
    steps = max((int(r.get("step", 0)) for r in rows), default=0)
    logged = DIAGNOSTIC_KEYS if tokens_branch else DIAGNOSTIC_KEYS[2:]  # knot statistics only where there are knots
    diagnostics = {k: sum(v) / len(v) for k in logged if (v := [float(r[k]) for r in rows if k in r])}
    cpu = next((float(r["cpu_train_s"]) for r in reversed(rows) if "cpu_train_s" in r), None)
    return Run(run_dir, key, seed, points, final_acc, best, tokens_policy, tokens_branch, wall, steps, diagnostics,
               cpu, tokens_forward)


def group_runs(runs: Iterable[Run]) -> list[Configuration]:
    groups: dict[tuple[str, ...], Configuration] = {}
    for run in runs:
        groups.setdefault(run.key, Configuration(run.key)).runs.append(run)
    configurations = list(groups.values())
    shared = set.intersection(*(set(c.key) for c in configurations)) if configurations else set()
    for c in configurations:  # label by what differs between configurations; the rest is the same for all
        varying = [item for item in c.key if item not in shared]
        c.label = ",".join(varying) if varying else (",".join(c.key) or "default")
    return configurations


# ------------------------------------------------------------------------------------------- numbers
def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample std (ddof=1) over seeds; std is 0.0 for one seed and both are nan for none."""
    if not values:
        return math.nan, math.nan
    mean = sum(values) / len(values)
    if len(values) == 1:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def ci95(values: Sequence[float]) -> float:
    """Half-width of the 95% confidence interval of the mean over seeds (Student t, df = n - 1); nan below 2."""
    if len(values) < 2:
        return math.nan
    t = T975[len(values) - 2] if len(values) - 1 <= len(T975) else 1.96
    return t * mean_std(values)[1] / math.sqrt(len(values))


def finished_by_seed(config: Configuration) -> dict[int | None, float]:
    return {r.seed: r.final_acc for r in config.runs if r.final_acc is not None}


def paired_difference(config: Configuration, baseline: Configuration | None) -> tuple[float, float, int]:
    """(mean, 95% half-width, pairs) of final accuracy minus the baseline's, seed by seed (seeds both finished)."""
    if baseline is None:
        return math.nan, math.nan, 0
    mine, theirs = finished_by_seed(config), finished_by_seed(baseline)
    diffs = [mine[seed] - theirs[seed] for seed in sorted(set(mine) & set(theirs), key=str) if seed is not None]
    return mean_std(diffs)[0], ci95(diffs), len(diffs)


def accuracy_at_forward(run: Run, forward: float) -> float:
    """`run`'s test accuracy at `forward` forward tokens (its steps' `tokens_forward` summed), linear between the
    two evaluations around that count; nan beyond its last evaluation or where it logs no forward tokens."""
    points = [(point[5], point[1]) for point in run.curve]  # (forward tokens, accuracy) per evaluation
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x0 <= forward <= x1 and x1 > x0:
            return y0 + (y1 - y0) * (forward - x0) / (x1 - x0)
    return math.nan


def paired_at_forward(config: Configuration, baseline: Configuration | None) -> tuple[float, float, int, float]:
    """(mean, 95% half-width, pairs, the baseline's mean accuracy there) of final accuracy minus the baseline's
    accuracy at the same forward tokens (this run's total; `accuracy_at_forward`), seed by seed."""
    if baseline is None:
        return math.nan, math.nan, 0, math.nan
    theirs = {r.seed: r for r in baseline.runs if r.final_acc is not None and r.seed is not None}
    pairs = [(r.final_acc, accuracy_at_forward(theirs[r.seed], r.tokens_forward)) for r in config.runs
             if r.final_acc is not None and r.seed in theirs and r.tokens_forward > 0]
    pairs = [(mine, base) for mine, base in pairs if not math.isnan(base)]
    diffs = [mine - base for mine, base in pairs]
    return mean_std(diffs)[0], ci95(diffs), len(diffs), mean_std([base for _, base in pairs])[0]


def summarize(config: Configuration, baseline: Configuration | None = None) -> dict[str, Any]:
    finished = [r for r in config.runs if r.final_acc is not None]
    final = mean_std([r.final_acc for r in finished])
    diff = paired_difference(config, baseline)
    at_forward = paired_at_forward(config, baseline)
    best = mean_std([r.best_acc for r in finished if r.best_acc is not None])
    walls = [r.wall_seconds for r in finished if r.wall_seconds is not None]
    return {
        "configuration": config.label,
        "n_seeds": len(finished),
        "seeds": " ".join(str(r.seed) for r in sorted(finished, key=lambda r: (r.seed is None, r.seed or 0))),
        "final_acc_mean": final[0], "final_acc_std": final[1], "final_acc_ci95": ci95([r.final_acc for r in finished]),
        "diff_vs_baseline_mean": diff[0], "diff_vs_baseline_ci95": diff[1], "diff_n": diff[2],
        "best_acc_mean": best[0], "best_acc_std": best[1],
        "tokens_mean": mean_std([r.tokens_policy + r.tokens_branch for r in finished])[0],
        "tokens_policy_mean": mean_std([r.tokens_policy for r in finished])[0],
        "tokens_branch_mean": mean_std([r.tokens_branch for r in finished])[0],
        "tokens_forward_mean": mean_std([r.tokens_forward for r in finished])[0],
        "wall_seconds_mean": mean_std(walls)[0],
        "cpu_train_s_mean": mean_std([r.cpu_train_s for r in finished if r.cpu_train_s is not None])[0],
        "steps": max((r.steps for r in finished), default=0),
        **{k: mean_std([r.diagnostics[k] for r in finished if k in r.diagnostics])[0] for k in DIAGNOSTIC_KEYS},
        "baseline_acc_at_forward": at_forward[3], "diff_at_forward_mean": at_forward[0],
        "diff_at_forward_ci95": at_forward[1], "diff_at_forward_n": at_forward[2],
    }


def mean_curve(runs: Sequence[Run]) -> list[tuple[int, float, float, float, float, float, float, float]]:
    """(step, mean tokens, mean acc, min acc, max acc, mean training wall seconds, mean training CPU seconds, mean
    forward tokens) at every step evaluated by all finished seeds.

    Runs evaluated at token intervals (`train.eval_every_tokens`, `train.token_budget`) reach their evaluations
    at different steps per seed; when the seeds share fewer evaluated steps than their shortest curve, the
    k-th evaluations are averaged instead (at the mean step and mean token count)."""
    per_run = [{step: rest for step, *rest in r.curve} for r in runs if r.curve]
    if not per_run:
        return []
    common = sorted(set.intersection(*(set(c) for c in per_run)))
    shortest = min(len(c) for c in per_run)
    if len(common) >= shortest:
        points = [[(step, *c[step]) for c in per_run] for step in common]
    else:  # by evaluation index
        ordered = [sorted((step, *rest) for step, rest in c.items()) for c in per_run]
        points = [[o[k] for o in ordered] for k in range(shortest)]
    out = []
    for group in points:
        steps, accs, tokens, seconds, cpu, forward = ([p[i] for p in group] for i in range(6))
        out.append((round(sum(steps) / len(steps)), sum(tokens) / len(tokens), sum(accs) / len(accs), min(accs),
                    max(accs), sum(seconds) / len(seconds), sum(cpu) / len(cpu), sum(forward) / len(forward)))
    return out


# ------------------------------------------------------------------------------------------- writing
def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def write_markdown(rows: list[dict[str, Any]], skipped: list[Path], sweep_dir: Path, path: Path,
                   baseline: str | None = None) -> None:
    lines = [f"# Sweep report: {sweep_dir}", "",
             "Final test accuracy as mean ± std over seeds (sample std) and its 95% confidence interval (Student t "
             f"over seeds). Δ = paired difference to {baseline or 'a baseline (none chosen)'}: per seed, accuracy "
             "minus the baseline's with the same seed; mean [95% interval] (pairs). Best = best evaluation after "
             "step 0. Tokens = policy + branch tokens generated over the whole run (mean over seeds); forward "
             "tokens = the tokens the update's forward passes computed, one pass per step (its training compute).",
             "", "| configuration | seeds | final acc | 95% CI | Δ (paired) | best acc | tokens | policy tokens | "
             "branch tokens | forward tokens | wall (s) | train CPU (s) |", "|---" * 12 + "|"]
    for r in rows:
        lines.append(f"| {r['configuration']} | {r['n_seeds']} | {_pm(r['final_acc_mean'], r['final_acc_std'])} | "
                     f"{_interval(r['final_acc_mean'], r['final_acc_ci95'])} | "
                     f"{_paired(r, r['configuration'] == baseline)} | {_pm(r['best_acc_mean'], r['best_acc_std'])} | "
                     f"{_num(r['tokens_mean'])} | {_num(r['tokens_policy_mean'])} | {_num(r['tokens_branch_mean'])} | "
                     f"{_num(r['tokens_forward_mean'])} | {_num(r['wall_seconds_mean'])} | "
                     f"{_num(r['cpu_train_s_mean'])} |")
    lines += forward_table(rows, baseline)
    lines += diagnostics_table(rows)
    lines += ["", "![accuracy vs step](accuracy_vs_step.png)", "", "![accuracy vs tokens](accuracy_vs_tokens.png)",
              "", "![accuracy vs forward tokens](accuracy_vs_forward.png)", "",
              "![accuracy vs training wall time](accuracy_vs_wall.png)", "",
              "![accuracy vs training CPU time](accuracy_vs_cpu.png)"]
    if skipped:
        lines += ["", "Unfinished runs (no summary.json and no final evaluation), left out:", ""]
        lines += [f"- {p}" for p in skipped]
    path.write_text("\n".join(lines) + "\n")


def _pm(mean: float, std: float) -> str:
    return "n/a" if math.isnan(mean) else f"{mean:.3f} ± {std:.3f}"


def forward_table(rows: list[dict[str, Any]], baseline: str | None) -> list[str]:
    """Markdown lines: the verdict at equal forward tokens (`paired_at_forward`), where a baseline is chosen and the
    runs log forward tokens."""
    if baseline is None or not any(r["diff_at_forward_n"] for r in rows):
        return []
    lines = ["", f"At equal forward tokens (training compute): per seed, final accuracy minus {baseline}'s accuracy "
             "at the same forward-token count, its curve linear between the two evaluations around it; mean "
             "[95% interval] (pairs).", "", f"| configuration | forward tokens | final acc | {baseline} at those "
             "forward tokens | Δ at equal forward tokens |", "|---" * 5 + "|"]
    for r in rows:
        if r["configuration"] == baseline:
            continue
        paired = {"diff_vs_baseline_mean": r["diff_at_forward_mean"], "diff_vs_baseline_ci95":
                  r["diff_at_forward_ci95"], "diff_n": r["diff_at_forward_n"]}
        base = "n/a" if math.isnan(r["baseline_acc_at_forward"]) else f"{r['baseline_acc_at_forward']:.3f}"
        lines.append(f"| {r['configuration']} | {_num(r['tokens_forward_mean'])} | "
                     f"{_pm(r['final_acc_mean'], r['final_acc_std'])} | {base} | {_paired(paired, False)} |")
    return lines


def diagnostics_table(rows: list[dict[str, Any]]) -> list[str]:
    """Markdown lines: the configurations that log branching diagnostics, their means over steps and seeds."""
    logged = [r for r in rows if any(not math.isnan(r[k]) for k in DIAGNOSTIC_KEYS)]
    if not logged:
        return []
    lines = ["", "Diagnostics, mean over steps and seeds: knot value standard error (branch rollouts), share of "
             "response tokens that are knots (exactly estimated), share of nonzero-advantage tokens whose sign "
             "is the response's outcome.", "", "| configuration | " + " | ".join(DIAGNOSTIC_KEYS) + " |",
             "|---" * (len(DIAGNOSTIC_KEYS) + 1) + "|"]
    for r in logged:
        lines.append(f"| {r['configuration']} | " + " | ".join(
            "n/a" if math.isnan(r[k]) else f"{r[k]:.3f}" for k in DIAGNOSTIC_KEYS) + " |")
    return lines


def _interval(mean: float, half: float) -> str:
    return "n/a" if math.isnan(mean) or math.isnan(half) else f"[{mean - half:.3f}, {mean + half:.3f}]"


def _paired(row: dict[str, Any], is_baseline: bool) -> str:
    if is_baseline:
        return "baseline"
    mean, half, pairs = row["diff_vs_baseline_mean"], row["diff_vs_baseline_ci95"], row["diff_n"]
    if math.isnan(mean):
        return "n/a"
    interval = "" if math.isnan(half) else f" [{mean - half:+.3f}, {mean + half:+.3f}]"
    return f"{mean:+.3f}{interval} ({pairs})"


def _num(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:,.0f}"


X_COLUMN = {"step": 0, "tokens": 1, "forward": 7, "wall": 5, "cpu": 6}  # columns of mean_curve's points
X_LABEL = {"step": "optimizer step", "tokens": "generated tokens (policy + branch)",
           "forward": "forward tokens of the update (training compute)",
           "wall": "training wall time (s, evaluations excluded)",
           "cpu": "training CPU time of the run's process (s, evaluations excluded)"}


def plot_curves(configurations: list[Configuration], x_axis: str, path: Path) -> None:
    """One line per configuration (mean over seeds), the seeds' min-max range shaded."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no display needed

    fig = Figure(figsize=(8, 5))
    ax = fig.add_subplot()
    for config in configurations:
        curve = mean_curve([r for r in config.runs if r.final_acc is not None])
        if not curve:
            continue
        xs = [point[X_COLUMN[x_axis]] for point in curve]
        line, = ax.plot(xs, [p[2] for p in curve], marker="o", markersize=3, label=config.label)
        ax.fill_between(xs, [p[3] for p in curve], [p[4] for p in curve], color=line.get_color(), alpha=0.2)
    ax.set_xlabel(X_LABEL[x_axis])
    ax.set_ylabel("test accuracy")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=7, loc="best")
    fig.savefig(path, dpi=100, bbox_inches="tight")


def pick_baseline(configurations: list[Configuration], label: str | None) -> Configuration | None:
    """The configuration labelled `label`, else the only one run with `algo=grpo`, else None."""
    if label is not None:
        matches = [c for c in configurations if c.label == label]
        if not matches:
            raise ValueError(f"--baseline {label!r} is not a configuration of this sweep; "
                             f"choose one of: {', '.join(c.label for c in configurations)}")
        return matches[0]
    grpo = [c for c in configurations if "algo=grpo" in c.key]
    return grpo[0] if len(grpo) == 1 else None


def build_report(sweep_dir: Path, out_dir: Path | None = None, plots: bool = True,
                 baseline: str | None = None) -> list[dict[str, Any]]:
    """Read every run below `sweep_dir`, write the report files into `out_dir`; returns the table rows."""
    sweep_dir = Path(sweep_dir)
    out_dir = Path(out_dir) if out_dir else sweep_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = [read_run(d) for d in find_run_dirs(sweep_dir)]
    if not runs:
        raise FileNotFoundError(f"no run (a directory with metrics.jsonl) under {sweep_dir}")
    skipped = [r.path for r in runs if r.final_acc is None]
    configurations = group_runs(runs)
    base = pick_baseline(configurations, baseline)
    rows = sorted((summarize(c, base) for c in configurations),
                  key=lambda r: (math.isnan(r["final_acc_mean"]), -_nan_to(r["final_acc_mean"]), r["configuration"]))
    write_csv(rows, out_dir / "report.csv")
    write_markdown(rows, skipped, sweep_dir, out_dir / "report.md", base.label if base else None)
    if plots:
        for x_axis in X_COLUMN:
            plot_curves(configurations, x_axis, out_dir / f"accuracy_vs_{x_axis}.png")
    return rows


def _nan_to(value: float, default: float = 0.0) -> float:
    return default if math.isnan(value) else value


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="rlx report", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path, help="a multirun dir (e.g. multirun/2025-01-02/10-00-00)")
    parser.add_argument("--out", type=Path, default=None, help="where to write the report (default: sweep_dir)")
    parser.add_argument("--no-plots", action="store_true", help="only report.md and report.csv")
    parser.add_argument("--baseline", default=None,
                        help="configuration label for the paired differences (default: the one with algo=grpo)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if not args.sweep_dir.is_dir():
        parser.error(f"not a directory: {args.sweep_dir}")
    try:
        rows = build_report(args.sweep_dir, args.out, plots=not args.no_plots, baseline=args.baseline)
    except (FileNotFoundError, ValueError) as err:
        sys.exit(f"rlx report: {err}")
    out = args.out or args.sweep_dir
    print(f"[rlx] {len(rows)} configurations -> {out / 'report.md'}, {out / 'report.csv'}")


if __name__ == "__main__":
    main()
