"""`rlx report <sweep dir>`: one table and two plots comparing the configurations of a finished sweep.

Every directory below the sweep dir that holds a `metrics.jsonl` is a run. Runs are grouped into
configurations by their Hydra overrides (`.hydra/overrides.yaml`) minus `seed`; without overrides, by their
resolved config (`config.yaml` or `.hydra/config.yaml`) minus `seed` and `output_dir`. Numbers per
configuration are mean ± std over its seeds (sample std, ddof=1; 0 with a single seed).

Writes into the sweep dir (or --out): report.md, report.csv, accuracy_vs_step.png, accuracy_vs_tokens.png.
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
CSV_COLUMNS = ["configuration", "n_seeds", "seeds", "final_acc_mean", "final_acc_std", "best_acc_mean",
               "best_acc_std", "tokens_mean", "tokens_policy_mean", "tokens_branch_mean", "wall_seconds_mean",
               "steps"]


@dataclass
class Run:
    path: Path
    key: tuple[str, ...]  # what identifies its configuration (overrides or flattened config, minus seed)
    seed: int | None
    curve: list[tuple[int, float, int]]  # (step, test accuracy, generated tokens up to that step)
    final_acc: float | None  # None: the run did not finish (no summary.json, no `final` row)
    best_acc: float | None
    tokens_policy: int
    tokens_branch: int
    wall_seconds: float | None
    steps: int


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
    curve: dict[int, tuple[float, int]] = {}
    tokens_policy = tokens_branch = 0
    generated = None  # the run's own cumulative `tokens_total` (also counts dynamic sampling's dropped groups)
    final_acc, wall = None, None
    for row in rows:
        step = int(row.get("step", 0))
        tokens_policy += int(row.get("tokens_policy", 0))
        tokens_branch += int(row.get("tokens_branch", 0))
        if "tokens_total" in row:
            generated = int(row["tokens_total"])
        if "wall_seconds" in row:
            wall = float(row["wall_seconds"])
        if "test_accuracy" in row:
            tokens = tokens_policy + tokens_branch if generated is None else generated
            curve[step] = (float(row["test_accuracy"]), tokens)  # a later row wins
            if row.get("final"):
                final_acc = float(row["test_accuracy"])
    if "accuracy_after" in summary:
        final_acc = float(summary["accuracy_after"])
    if "wall_seconds" in summary:
        wall = float(summary["wall_seconds"])
    points = [(step, acc, tokens) for step, (acc, tokens) in sorted(curve.items())]
    trained = [acc for step, acc, _ in points if step >= 1]  # best over training: the step-0 eval is the base
    best = max(trained) if trained else (final_acc if final_acc is not None else None)
    steps = max((int(r.get("step", 0)) for r in rows), default=0)
    return Run(run_dir, key, seed, points, final_acc, best, tokens_policy, tokens_branch, wall, steps)


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


def summarize(config: Configuration) -> dict[str, Any]:
    finished = [r for r in config.runs if r.final_acc is not None]
    final = mean_std([r.final_acc for r in finished])
    best = mean_std([r.best_acc for r in finished if r.best_acc is not None])
    walls = [r.wall_seconds for r in finished if r.wall_seconds is not None]
    return {
        "configuration": config.label,
        "n_seeds": len(finished),
        "seeds": " ".join(str(r.seed) for r in sorted(finished, key=lambda r: (r.seed is None, r.seed or 0))),
        "final_acc_mean": final[0], "final_acc_std": final[1],
        "best_acc_mean": best[0], "best_acc_std": best[1],
        "tokens_mean": mean_std([r.tokens_policy + r.tokens_branch for r in finished])[0],
        "tokens_policy_mean": mean_std([r.tokens_policy for r in finished])[0],
        "tokens_branch_mean": mean_std([r.tokens_branch for r in finished])[0],
        "wall_seconds_mean": mean_std(walls)[0],
        "steps": max((r.steps for r in finished), default=0),
    }


def mean_curve(runs: Sequence[Run]) -> list[tuple[int, float, float, float, float]]:
    """(step, mean tokens, mean acc, min acc, max acc) at every step evaluated by all finished seeds.

    Runs evaluated at token intervals (`train.eval_every_tokens`, `train.token_budget`) reach their evaluations
    at different steps per seed; when the seeds share fewer evaluated steps than their shortest curve, the
    k-th evaluations are averaged instead (at the mean step and mean token count)."""
    per_run = [{step: (acc, tokens) for step, acc, tokens in r.curve} for r in runs if r.curve]
    if not per_run:
        return []
    common = sorted(set.intersection(*(set(c) for c in per_run)))
    shortest = min(len(c) for c in per_run)
    if len(common) >= shortest:
        points = [[(step, *c[step]) for c in per_run] for step in common]
    else:  # by evaluation index
        ordered = [sorted((step, acc, tokens) for step, (acc, tokens) in c.items()) for c in per_run]
        points = [[o[k] for o in ordered] for k in range(shortest)]
    out = []
    for group in points:
        steps, accs, tokens = ([p[i] for p in group] for i in range(3))
        out.append((round(sum(steps) / len(steps)), sum(tokens) / len(tokens), sum(accs) / len(accs), min(accs),
                    max(accs)))
    return out


# ------------------------------------------------------------------------------------------- writing
def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def write_markdown(rows: list[dict[str, Any]], skipped: list[Path], sweep_dir: Path, path: Path) -> None:
    lines = [f"# Sweep report: {sweep_dir}", "",
             "Test accuracy as mean ± std over seeds (sample std). Best = best evaluation after step 0. "
             "Tokens = policy + branch tokens generated over the whole run (mean over seeds).", "",
             "| configuration | seeds | final acc | best acc | tokens | policy tokens | branch tokens | wall (s) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['configuration']} | {r['n_seeds']} | {_pm(r['final_acc_mean'], r['final_acc_std'])} | "
                     f"{_pm(r['best_acc_mean'], r['best_acc_std'])} | {_num(r['tokens_mean'])} | "
                     f"{_num(r['tokens_policy_mean'])} | {_num(r['tokens_branch_mean'])} | "
                     f"{_num(r['wall_seconds_mean'])} |")
    lines += ["", "![accuracy vs step](accuracy_vs_step.png)", "", "![accuracy vs tokens](accuracy_vs_tokens.png)"]
    if skipped:
        lines += ["", "Unfinished runs (no summary.json and no final evaluation), left out:", ""]
        lines += [f"- {p}" for p in skipped]
    path.write_text("\n".join(lines) + "\n")


def _pm(mean: float, std: float) -> str:
    return "n/a" if math.isnan(mean) else f"{mean:.3f} ± {std:.3f}"


def _num(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:,.0f}"


def plot_curves(configurations: list[Configuration], x_axis: str, path: Path) -> None:
    """One line per configuration (mean over seeds), the seeds' min-max range shaded."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no display needed

    fig = Figure(figsize=(8, 5))
    ax = fig.add_subplot()
    for config in configurations:
        curve = mean_curve([r for r in config.runs if r.final_acc is not None])
        if not curve:
            continue
        xs = [point[0] if x_axis == "step" else point[1] for point in curve]
        line, = ax.plot(xs, [p[2] for p in curve], marker="o", markersize=3, label=config.label)
        ax.fill_between(xs, [p[3] for p in curve], [p[4] for p in curve], color=line.get_color(), alpha=0.2)
    ax.set_xlabel("optimizer step" if x_axis == "step" else "generated tokens (policy + branch)")
    ax.set_ylabel("test accuracy")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=7, loc="best")
    fig.savefig(path, dpi=100, bbox_inches="tight")


def build_report(sweep_dir: Path, out_dir: Path | None = None, plots: bool = True) -> list[dict[str, Any]]:
    """Read every run below `sweep_dir`, write the report files into `out_dir`; returns the table rows."""
    sweep_dir = Path(sweep_dir)
    out_dir = Path(out_dir) if out_dir else sweep_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = [read_run(d) for d in find_run_dirs(sweep_dir)]
    if not runs:
        raise FileNotFoundError(f"no run (a directory with metrics.jsonl) under {sweep_dir}")
    skipped = [r.path for r in runs if r.final_acc is None]
    configurations = group_runs(runs)
    rows = sorted((summarize(c) for c in configurations),
                  key=lambda r: (math.isnan(r["final_acc_mean"]), -_nan_to(r["final_acc_mean"]), r["configuration"]))
    write_csv(rows, out_dir / "report.csv")
    write_markdown(rows, skipped, sweep_dir, out_dir / "report.md")
    if plots:
        plot_curves(configurations, "step", out_dir / "accuracy_vs_step.png")
        plot_curves(configurations, "tokens", out_dir / "accuracy_vs_tokens.png")
    return rows


def _nan_to(value: float, default: float = 0.0) -> float:
    return default if math.isnan(value) else value


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="rlx report", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path, help="a multirun dir (e.g. multirun/2025-01-02/10-00-00)")
    parser.add_argument("--out", type=Path, default=None, help="where to write the report (default: sweep_dir)")
    parser.add_argument("--no-plots", action="store_true", help="only report.md and report.csv")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if not args.sweep_dir.is_dir():
        parser.error(f"not a directory: {args.sweep_dir}")
    try:
        rows = build_report(args.sweep_dir, args.out, plots=not args.no_plots)
    except FileNotFoundError as err:
        sys.exit(f"rlx report: {err}")
    out = args.out or args.sweep_dir
    print(f"[rlx] {len(rows)} configurations -> {out / 'report.md'}, {out / 'report.csv'}")


if __name__ == "__main__":
    main()
