"""`rlx build-tiny [--model tiny|tiny_long] [--force] [--cache-dir DIR]`: build a tiny model into its cache and
print where."""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path


def main() -> None:
    from rlx.recipes.tiny import TINY_MODELS, ensure_tiny_model, tiny_model_path

    parser = argparse.ArgumentParser(prog="rlx build-tiny", description=__doc__)
    parser.add_argument("--model", choices=sorted(TINY_MODELS), default="tiny", help="which tiny model (model=...)")
    parser.add_argument("--force", action="store_true", help="rebuild even if a cached copy exists")
    parser.add_argument("--cache-dir", type=Path, default=None, help="default: $RLX_CACHE or ~/.cache/rlx")
    args = parser.parse_args()
    from rlx.console import LibraryFilter, verbose

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not verbose():  # one line and the progress bar; `rlx -v build-tiny` shows every SFT evaluation
        for handler in logging.getLogger().handlers:
            handler.addFilter(LibraryFilter())
    spec = TINY_MODELS[args.model]
    if args.force:
        shutil.rmtree(tiny_model_path(spec, args.cache_dir), ignore_errors=True)
    path = ensure_tiny_model(spec, args.cache_dir)
    info = json.loads((path / "build_info.json").read_text())
    print(f"[rlx] {args.model} model: {path}")
    print(f"[rlx] {info['parameters']:,} parameters, {info['sft_steps']} SFT steps, "
          f"dev accuracy {info['dev_accuracy']:.3f}, test accuracy {info['test_accuracy']:.3f}, "
          f"built in {info['build_seconds']:.0f}s")
