"""Metrics sinks. `metrics.jsonl` in the run directory always gets every step; W&B is an optional mirror.

The loop talks to one object with this interface (both loggers have it):

    logger = build_logger(cfg.logger, run_dir, resolved_config=..., sweep_id=None)
    logger.log(step, metrics)                 # step = optimizer step (0 = before training)
    if logger.wants_samples(step):
        logger.log_samples(step, rows)        # rows: {prompt, completion, reward, advantages, tokens, knots}
    logger.log_summary(summary)               # final eval numbers
    logger.close()

W&B is never allowed to stop a run: any W&B error warns once and the run goes on with `metrics.jsonl`.
The API key is read by wandb itself from WANDB_API_KEY / `wandb login`; it is never passed, logged or stored
here, and any string equal to it is redacted from what we send or write.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

SAMPLES_DIR = "samples"
MAX_HEATMAP_TOKENS = 512  # longer responses are cut in the image (the JSONL keeps everything)
HEATMAP_COLUMNS = 16  # tokens per line of the heatmap


# ------------------------------------------------------------------------------------------- JSONL
class JsonlLogger:
    """`metrics.jsonl` (one JSON object per log call) plus `samples/` dumps and `summary.json` merges."""

    def __init__(self, path: Path, log_samples_every: int = 0, num_samples: int = 4):
        self.path = Path(path)
        self.run_dir = self.path.parent
        self.log_samples_every = log_samples_every
        self.num_samples = num_samples
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", buffering=1)  # line-buffered: a crash loses at most one line

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        self._file.write(strict_json({"step": step, **metrics}, sort_keys=True) + "\n")

    def wants_samples(self, step: int) -> bool:
        """True on the steps where the loop should build sample rows (building them costs decoding)."""
        return self.log_samples_every > 0 and step > 0 and step % self.log_samples_every == 0

    def log_samples(self, step: int, rows: Sequence[Mapping[str, Any]]) -> list[Path]:
        """Write `samples/step_XXXXXX.jsonl` and one heatmap PNG per row; returns the PNG paths.

        Only the first `num_samples` rows are kept. Each step gets its own files, so nothing is overwritten.
        """
        rows = [_sample_row(r) for r in rows[: self.num_samples]]
        folder = self.run_dir / SAMPLES_DIR
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / f"step_{step:06d}.jsonl").open("w") as f:
            for row in rows:
                f.write(strict_json({"step": step, **row}) + "\n")
        images = []
        for i, row in enumerate(rows):
            png = folder / f"step_{step:06d}_{i}.png"
            advantage_heatmap(row["tokens"], row["advantages"], row["knots"], png,
                              title=f"step {step}, sample {i}, reward {row['reward']:.3g}")
            images.append(png)
        return images

    def log_summary(self, summary: Mapping[str, Any]) -> None:
        """Merge into `summary.json` (the loop may have written it already; merging keeps both)."""
        path = self.run_dir / "summary.json"
        merged = json.loads(path.read_text()) if path.exists() else {}
        merged.update(summary)
        path.write_text(strict_json(merged, indent=2))

    def close(self) -> None:
        self._file.close()


# ------------------------------------------------------------------------------------------- W&B
class WandbLogger:
    """Mirrors every JSONL call to a W&B run; the JSONL logger it wraps is written first, always."""

    def __init__(self, cfg: Any, run_dir: Path, resolved_config: Mapping[str, Any] | None = None,
                 sweep_id: str | None = None):
        self.jsonl = JsonlLogger(Path(run_dir) / "metrics.jsonl", cfg.log_samples_every, cfg.num_samples)
        self._secret = os.environ.get("WANDB_API_KEY") or None
        self._warned = False
        self._run = None
        hydra_group, hydra_job = hydra_sweep()
        self.group = cfg.group or sweep_id or hydra_group
        self.run_name = cfg.run_name or (hydra_job if self.group else None)
        if cfg.mode == "disabled":
            return
        config = redact(dict(resolved_config or {}), self._secret)
        self._guard(lambda: self._init(cfg, Path(run_dir), config))

    def _init(self, cfg: Any, run_dir: Path, config: dict[str, Any]) -> None:
        import wandb

        self._wandb = wandb
        self._run = wandb.init(
            mode=cfg.mode, project=cfg.project, entity=cfg.entity, group=self.group, tags=list(cfg.tags) or None,
            name=self.run_name, dir=str(run_dir), config=config, reinit="finish_previous",
            # console="off": W&B would otherwise copy all stdout into the run dir and upload it.
            settings=wandb.Settings(init_timeout=cfg.init_timeout, console="off"),
        )
        # The x axis of every chart is the optimizer step (trl #4004: W&B's own step counted log calls).
        self._run.define_metric("optimizer_step")
        self._run.define_metric("*", step_metric="optimizer_step")

    def _guard(self, action: Callable[[], Any]) -> Any:
        """Run a W&B action; on any error warn once, drop W&B for the rest of the run, and carry on."""
        if self._run is None and self._warned:
            return None
        try:
            return action()
        except Exception as err:  # no W&B failure may stop training
            self._disable(err)
            return None

    def _disable(self, err: Exception) -> None:
        if not self._warned:
            message = redact(f"{type(err).__name__}: {err}", self._secret)
            warnings.warn(f"rlx: W&B logging failed ({message}); continuing with metrics.jsonl only",
                          RuntimeWarning, stacklevel=3)
            self._warned = True
        run, self._run = self._run, None
        if run is not None:
            with contextlib.suppress(Exception):  # already failing: nothing more to report
                run.finish(exit_code=1, quiet=True)

    @property
    def active(self) -> bool:
        return self._run is not None

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        self.jsonl.log(step, metrics)
        if self._run is not None:
            payload = redact({**metrics, "optimizer_step": step}, self._secret)
            self._guard(lambda: self._run.log(payload, step=step))

    def wants_samples(self, step: int) -> bool:
        return self.jsonl.wants_samples(step)

    def log_samples(self, step: int, rows: Sequence[Mapping[str, Any]]) -> list[Path]:
        images = self.jsonl.log_samples(step, rows)
        if self._run is not None:
            self._guard(lambda: self._log_table(step, [_sample_row(r) for r in rows[: len(images)]], images))
        return images

    def _log_table(self, step: int, rows: list[dict[str, Any]], images: list[Path]) -> None:
        wandb = self._wandb
        table = wandb.Table(columns=["step", "prompt", "completion", "reward", "advantage_heatmap", "knots",
                                     "advantages"])
        for row, png in zip(rows, images):
            table.add_data(step, redact(row["prompt"], self._secret), redact(row["completion"], self._secret),
                           row["reward"], wandb.Image(str(png)), json.dumps(row["knots"]),
                           json.dumps([round(a, 4) for a in row["advantages"]]))
        # One key per step (trl PR #6568: a single key is overwritten and earlier tables are lost).
        self._run.log({f"samples/step_{step:06d}": table, "optimizer_step": step}, step=step)

    def log_summary(self, summary: Mapping[str, Any]) -> None:
        self.jsonl.log_summary(summary)
        if self._run is not None:
            payload = redact(dict(summary), self._secret)
            self._guard(lambda: self._run.summary.update(payload))

    def close(self) -> None:
        self.jsonl.close()
        if self._run is not None:
            self._guard(self._run.finish)
            self._run = None


Logger = JsonlLogger | WandbLogger


def build_logger(cfg: Any, run_dir: Path, resolved_config: Mapping[str, Any] | str | None = None,
                 sweep_id: str | None = None) -> Logger:
    """The logger `cfg.logger` names. `resolved_config` (dict or YAML text) is what W&B shows as the run's
    config; `sweep_id` names the W&B group (default: `logger.group`, else the Hydra sweep dir under `-m`)."""
    run_dir = Path(run_dir)
    name = getattr(cfg, "name", "jsonl")
    if name == "jsonl":
        return JsonlLogger(run_dir / "metrics.jsonl", getattr(cfg, "log_samples_every", 0),
                           getattr(cfg, "num_samples", 4))
    if name == "wandb":
        if isinstance(resolved_config, str):
            import yaml

            resolved_config = yaml.safe_load(resolved_config) or {}
        return WandbLogger(cfg, run_dir, resolved_config, sweep_id)
    raise ValueError(f"logger.name: unknown logger {name!r}; valid: ['jsonl', 'wandb']")


# ------------------------------------------------------------------------------------------- sweeps
def hydra_sweep() -> tuple[str | None, str | None]:
    """(sweep id, job overrides) when running as one job of a Hydra multirun, else (None, None).

    The sweep id is the sweep dir without its leading `multirun/`, with `/` turned into `-`
    (`multirun/gamma_lambda/2025-01-02/10-00-00` -> `gamma_lambda-2025-01-02-10-00-00`): unique per
    sweep and the same for all of its jobs, whichever launcher runs them.
    """
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode
    except ImportError:
        return None, None
    if not HydraConfig.initialized():
        return None, None
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None, None
    return sweep_id_from_dir(hydra_cfg.sweep.dir), hydra_cfg.job.override_dirname or None


def sweep_id_from_dir(sweep_dir: str | Path) -> str:
    path = Path(sweep_dir)
    if path.is_absolute():
        try:
            path = path.relative_to(Path.cwd())
        except ValueError:
            path = Path(*path.parts[-3:])  # an absolute dir elsewhere: its last parts still name it
    parts = [p for p in path.parts if p not in ("", ".", "/")]
    if len(parts) > 1 and parts[0] == "multirun":
        parts = parts[1:]
    return "-".join(parts)[-128:]  # W&B caps group names at 128 characters


# ------------------------------------------------------------------------------------------- helpers
def redact(value: Any, secret: str | None) -> Any:
    """`value` with every occurrence of `secret` replaced, recursively (keys, strings, lists)."""
    if not secret:
        return value
    if isinstance(value, str):
        return value.replace(secret, "<redacted>")
    if isinstance(value, Mapping):
        return {redact(k, secret): redact(v, secret) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact(v, secret) for v in value)
    return value


def _sample_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """Validate and normalise one sample row (plain floats/ints/strs, so it is JSON and W&B friendly).

    Optional per-knot `knot_values` / `knot_stderrs` (see `knot_stats`) are kept when given, for `rlx inspect`."""
    missing = {"prompt", "completion", "reward", "advantages", "tokens", "knots"} - set(row)
    if missing:
        raise ValueError(f"log_samples: row lacks {sorted(missing)}")
    out = {"prompt": str(row["prompt"]), "completion": str(row["completion"]), "reward": float(row["reward"]),
           "advantages": [float(a) for a in row["advantages"]], "tokens": [str(t) for t in row["tokens"]],
           "knots": [int(k) for k in row["knots"]]}
    for key in ("knot_values", "knot_stderrs"):
        if row.get(key) is not None:
            if len(row[key]) != len(out["knots"]):
                raise ValueError(f"log_samples: {key} has {len(row[key])} entries for {len(out['knots'])} knots")
            out[key] = [None if v is None else float(v) for v in row[key]]
    return out


def knot_stats(rollout_rewards: Sequence[Sequence[float]]) -> dict[str, list[float | None]]:
    """Per knot, the mean reward of its branch rollouts and its standard error std(ddof=1)/sqrt(M) (None when
    M < 2; both None when the knot has no rollouts): the knot values `rlx inspect` draws with error bars."""
    values, stderrs = [], []
    for rewards in rollout_rewards:
        m = len(rewards)
        mean = sum(rewards) / m if m else None
        values.append(mean)
        var = sum((r - mean) ** 2 for r in rewards) / (m - 1) if m > 1 else None
        stderrs.append(math.sqrt(var / m) if var is not None else None)
    return {"knot_values": values, "knot_stderrs": stderrs}


def strict_json(value: Any, **kwargs) -> str:
    """json.dumps that never writes bare NaN/Infinity (not JSON): a non-finite number becomes null."""
    return json.dumps(_finite(value), allow_nan=False, default=lambda v: _finite(_jsonable(v)), **kwargs)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _jsonable(value: Any) -> Any:
    """json.dumps fallback: numpy/torch scalars and arrays become Python numbers/lists."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def advantage_heatmap(tokens: Sequence[str], advantages: Sequence[float], knots: Sequence[int], path: Path,
                      title: str = "") -> Path:
    """PNG of the response as a grid of tokens coloured by advantage (blue > 0 > red); boxed tokens are the
    branch points (`knots` are 1-based positions t, as in `AdvantageInputs.knots`)."""
    import numpy as np
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend, thread-safe enough
    from matplotlib.patches import Rectangle

    n = min(len(tokens), MAX_HEATMAP_TOKENS)
    values = np.full(max(1, math.ceil(n / HEATMAP_COLUMNS)) * HEATMAP_COLUMNS, np.nan)
    values[: min(n, len(advantages))] = np.asarray(advantages[:n], dtype=float)
    grid = values.reshape(-1, HEATMAP_COLUMNS)  # [lines, columns]
    finite = values[np.isfinite(values)]
    scale = float(np.abs(finite).max()) if finite.size and np.abs(finite).max() > 0 else 1.0
    fig = Figure(figsize=(HEATMAP_COLUMNS * 0.75, 0.45 * grid.shape[0] + 1.2))
    ax = fig.add_subplot()
    image = ax.imshow(grid, cmap="RdBu", vmin=-scale, vmax=scale, aspect="auto")
    for i in range(n):
        text = tokens[i].replace("\n", "\\n")[:8]
        dark = np.isfinite(values[i]) and abs(values[i]) > 0.6 * scale  # white text stays legible on dark cells
        ax.text(i % HEATMAP_COLUMNS, i // HEATMAP_COLUMNS, text, ha="center", va="center", fontsize=7,
                color="white" if dark else "black")
    for t in knots:
        if 1 <= t <= n:
            row, col = divmod(t - 1, HEATMAP_COLUMNS)
            ax.add_patch(Rectangle((col - 0.5, row - 0.5), 1, 1, fill=False, edgecolor="black", linewidth=2))
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"{title}  (boxed: branch points)" if title else "boxed: branch points", fontsize=9)
    fig.colorbar(image, ax=ax, label="advantage", fraction=0.03)
    fig.savefig(path, dpi=80, bbox_inches="tight")
    return Path(path)
