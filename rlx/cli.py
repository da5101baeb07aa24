"""`rlx <command> [hydra overrides]`: dispatch to a Hydra app. The work lives in the package."""

from __future__ import annotations

import sys

COMMANDS = {
    "train": ("rlx.train.app", "run RL fine-tuning (conf/train.yaml)"),
    "eval": ("rlx.eval.app", "pass@k / maj@n / accuracy of a model on a benchmark (conf/eval.yaml)"),
    "build-tiny": ("rlx.recipes.app", "build (or rebuild) the tiny model into its cache"),
    "report": ("rlx.report", "table + plots comparing the runs of a sweep dir (rlx report multirun/<date>/<time>)"),
    "inspect": ("rlx.inspect", "per-token advantages and knots of a run as HTML (rlx inspect <run dir> --step N)"),
}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help", "help"):
        from rlx.helptext import usage

        print(usage(COMMANDS))
        return
    command = sys.argv[1]
    if command not in COMMANDS:
        sys.exit(f"rlx: unknown command {command!r}; valid: {', '.join(COMMANDS)} (see `rlx --help`)")
    module_name = COMMANDS[command][0]
    sys.argv = [f"rlx {command}", *sys.argv[2:]]  # Hydra parses sys.argv itself (-m, --cfg, overrides)
    __import__(module_name, fromlist=["main"]).main()


if __name__ == "__main__":
    main()
