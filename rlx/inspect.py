"""`rlx inspect <run dir> [--step N]`: where did the credit go? One self-contained HTML page per logged step.

Reads the sample dumps the logger writes with `logger.log_samples_every > 0` (`<run dir>/samples/step_XXXXXX.jsonl`:
prompt, completion, reward, per-token advantages, tokens, 1-based knots, and when the loop saved them the knot
values with their standard errors) and writes `<run dir>/inspect/step_XXXXXX.html`: every response token coloured
by its advantage (blue > 0 > red, scaled per sample), knots boxed and numbered, and a small SVG plot of the knot
values with +-1 standard-error bars. No JavaScript, no external files: open it in any browser.

This is a plain argparse program, not a Hydra app: it reads a finished (or running) run and composes nothing.
"""

from __future__ import annotations

import argparse
import html
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path

SAMPLES_DIR = "samples"  # as rlx.logger.SAMPLES_DIR (not imported: inspect must not pull in matplotlib/W&B)
STEP_FILE = re.compile(r"^step_(\d+)\.jsonl$")
POSITIVE = (33, 102, 172)  # RdBu's blue end, as in the logger's PNG heatmaps
NEGATIVE = (178, 24, 43)  # RdBu's red end
PLOT_W, PLOT_H, PAD = 640, 160, 28

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
.sample { border-top: 1px solid #ccc; padding: 0.8em 0; }
.tokens { font-family: ui-monospace, monospace; font-size: 14px; line-height: 2.1; white-space: pre-wrap; }
.tok { padding: 2px 1px; border-radius: 2px; }
.knot { outline: 2px solid #000; position: relative; }
.knot sup { font-size: 9px; color: #000; position: absolute; top: -1.1em; left: 0; }
.meta { color: #555; font-size: 13px; }
"""


def available_steps(run_dir: Path) -> list[int]:
    folder = Path(run_dir) / SAMPLES_DIR
    if not folder.is_dir():
        return []
    return sorted(int(m.group(1)) for p in folder.iterdir() if (m := STEP_FILE.match(p.name)))


def load_step(run_dir: Path, step: int) -> list[dict]:
    """The sample rows of one step, with a clear error naming the file and line of a bad row."""
    path = Path(run_dir) / SAMPLES_DIR / f"step_{step:06d}.jsonl"
    if not path.is_file():
        have = available_steps(run_dir)
        raise FileNotFoundError(f"no samples for step {step} in {path.parent} (steps with samples: {have or 'none'}; "
                                "log them with logger.log_samples_every=N)")
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{n}: not JSON ({err})") from err
        missing = {"tokens", "advantages", "knots"} - set(row)
        if missing:
            raise ValueError(f"{path}:{n}: sample row lacks {sorted(missing)}")
        rows.append(row)
    return rows


def advantage_colour(value: float, scale: float) -> str:
    """CSS rgb() from white (0) towards blue (> 0) or red (< 0), saturating at |value| = scale."""
    alpha = min(1.0, abs(value) / scale) if scale > 0 else 0.0
    end = POSITIVE if value > 0 else NEGATIVE
    r, g, b = (round(255 + (c - 255) * alpha) for c in end)
    return f"rgb({r},{g},{b})"


def render_tokens(tokens: Sequence[str], advantages: Sequence[float], knots: Sequence[int]) -> str:
    """One <span class="tok"> per response token (class "knot" on the 1-based knot positions)."""
    scale = max((abs(a) for a in advantages), default=0.0)
    knot_set = set(knots)
    spans = []
    for i, token in enumerate(tokens):
        t = i + 1
        adv = advantages[i] if i < len(advantages) else 0.0
        cls = "tok knot" if t in knot_set else "tok"
        mark = f"<sup>{t}</sup>" if t in knot_set else ""
        dark = scale > 0 and abs(adv) > 0.6 * scale
        colour = "#fff" if dark else "#000"
        style = f"background:{advantage_colour(adv, scale)};color:{colour}"
        spans.append(f'<span class="{cls}" data-t="{t}" data-adv="{adv:.6g}" title="t={t} A={adv:.4g}" '
                     f'style="{style}">{mark}{html.escape(token)}</span>')
    return "".join(spans)


def render_knot_plot(knots: Sequence[int], values: Sequence[float | None], stderrs: Sequence[float | None] | None,
                     length: int) -> str:
    """Inline SVG: knot value (y) against knot position t (x, 1..length), with +-1 SE bars where known."""
    points = [(t, v, (stderrs[i] if stderrs else None)) for i, (t, v) in enumerate(zip(knots, values))
              if v is not None]
    if not points:
        return ""
    lows = [v - (s or 0.0) for _, v, s in points]
    highs = [v + (s or 0.0) for _, v, s in points]
    y_min, y_max = min(lows + [0.0]), max(highs + [1.0])

    def x(t: float) -> float:
        return PAD + (t - 1) / max(1, length - 1) * (PLOT_W - 2 * PAD)

    def y(v: float) -> float:
        return PLOT_H - PAD - (v - y_min) / max(y_max - y_min, 1e-12) * (PLOT_H - 2 * PAD)

    parts = [f'<svg class="knot-plot" width="{PLOT_W}" height="{PLOT_H}" xmlns="http://www.w3.org/2000/svg">',
             f'<line x1="{PAD}" y1="{PLOT_H - PAD}" x2="{PLOT_W - PAD}" y2="{PLOT_H - PAD}" stroke="#999"/>',
             f'<text x="2" y="{y(y_max) + 4:.1f}" font-size="10">{y_max:.3g}</text>',
             f'<text x="2" y="{y(y_min) + 4:.1f}" font-size="10">{y_min:.3g}</text>']
    for t, v, s in points:
        if s is not None:
            parts.append(f'<line class="errorbar" data-t="{t}" x1="{x(t):.1f}" y1="{y(v - s):.1f}" x2="{x(t):.1f}" '
                         f'y2="{y(v + s):.1f}" stroke="#444"/>')
        label = f"t={t} V={v:.4g}" + (f" &#177; {s:.3g}" if s is not None else "")
        parts.append(f'<circle class="knot-value" data-t="{t}" cx="{x(t):.1f}" cy="{y(v):.1f}" r="3.5" fill="#222">'
                     f"<title>{label}</title></circle>")
        parts.append(f'<text x="{x(t) - 3:.1f}" y="{PLOT_H - PAD + 14}" font-size="10">{t}</text>')
    parts.append("</svg>")
    return "".join(parts)


def render_sample(index: int, row: dict) -> str:
    tokens, advantages, knots = row["tokens"], row["advantages"], row["knots"]
    plot = render_knot_plot(knots, row.get("knot_values") or [], row.get("knot_stderrs"), len(tokens))
    return "".join([
        f'<div class="sample" id="sample-{index}"><h3>sample {index}: reward {float(row.get("reward", 0.0)):.4g}</h3>',
        f'<p class="meta">prompt: {html.escape(str(row.get("prompt", "")))}</p>',
        f'<p class="meta">{len(tokens)} tokens, knots {list(knots)}; hover a token for t and its advantage</p>',
        f'<div class="tokens">{render_tokens(tokens, advantages, knots)}</div>',
        f'<p class="meta">knot values (mean reward of the knot\'s rollouts, &#177;1 standard error):</p>{plot}'
        if plot else '<p class="meta">no knot values saved for this sample</p>',
        "</div>",
    ])


def render_page(run_dir: Path, step: int, rows: Sequence[dict]) -> str:
    body = "".join(render_sample(i, row) for i, row in enumerate(rows))
    title = f"rlx inspect: {html.escape(str(run_dir))}, step {step}"
    return (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{title}</title><style>{STYLE}</style>"
            f"</head><body><h1>{title}</h1><p class=\"meta\">Token colour = per-token advantage (blue &gt; 0 &gt; red,"
            f" scaled per sample); boxed tokens are the knots t (branch points).</p>{body}</body></html>")


def write_pages(run_dir: Path, steps: Sequence[int] | None = None, out: Path | None = None) -> list[Path]:
    """One HTML page per step (all steps with samples when `steps` is None); returns the paths written."""
    run_dir = Path(run_dir)
    steps = available_steps(run_dir) if steps is None else list(steps)
    if not steps:
        raise FileNotFoundError(f"no sample dumps under {run_dir / SAMPLES_DIR} "
                                "(train with logger.log_samples_every=N to save them)")
    out = run_dir / "inspect" if out is None else Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for step in steps:
        path = out / f"step_{step:06d}.html"
        path.write_text(render_page(run_dir, step, load_step(run_dir, step)), encoding="utf-8")
        paths.append(path)
    return paths


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="rlx inspect", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a run directory (the one holding metrics.jsonl)")
    parser.add_argument("--step", type=int, action="append", default=None,
                        help="optimizer step to render (repeatable; default: every step with samples)")
    parser.add_argument("--out", type=Path, default=None, help="where to write the pages (default: run_dir/inspect)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if not args.run_dir.is_dir():
        parser.error(f"not a directory: {args.run_dir}")
    try:
        paths = write_pages(args.run_dir, args.step, args.out)
    except (FileNotFoundError, ValueError) as err:
        sys.exit(f"rlx inspect: {err}")
    for path in paths:
        print(f"[rlx] wrote {path}")


if __name__ == "__main__":
    main()
