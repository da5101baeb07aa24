"""`rlx <command> [hydra overrides]`: dispatch to a Hydra app. The work lives in the package."""

from __future__ import annotations

import os
import sys

COMMANDS = {
    "train": ("rlx.train.app", "run RL fine-tuning (conf/train.yaml)"),
    "eval": ("rlx.eval.app", "pass@k / maj@n / accuracy of a model on a benchmark (conf/eval.yaml)"),
    "build-tiny": ("rlx.recipes.app", "build (or rebuild) the tiny model into its cache"),
    "report": ("rlx.report", "table + plots comparing the runs of a sweep dir (rlx report multirun/<date>/<time>)"),
    "inspect": ("rlx.inspect", "per-token advantages and knots of a run as HTML (rlx inspect <run dir> --step N)"),
}


def main() -> None:
    args = sys.argv[1:]
    if "-v" in args or "--verbose" in args:  # library logs and loading bars on the console too (rlx.console)
        os.environ["RLX_VERBOSE"] = "1"
        args = [a for a in args if a not in ("-v", "--verbose")]
    if not args or args[0] in ("-h", "--help", "help"):
        from rlx.helptext import usage

        print(usage(COMMANDS))
        return
    command = args[0]
    if command not in COMMANDS:
        sys.exit(f"rlx: unknown command {command!r}; valid: {', '.join(COMMANDS)} (see `rlx --help`)")
    if command == "train":
        train(args)
        return
    from rlx.console import before_imports

    before_imports()
    sys.argv = [f"rlx {command}", *args[1:]]  # Hydra parses sys.argv itself (-m, --cfg, overrides)
    __import__(COMMANDS[command][0], fromlist=["main"]).main()


def train(args: list[str]) -> None:
    """`rlx train`: the preemption handler first, before Hydra or torch is imported (a SIGTERM half a second
    after the start used to kill the process with 143); a signal before the run's first phase ends it at once
    with the preemption exit code (rlx/train/infra/preemption.py, `launch`)."""
    from rlx.train.infra import preemption

    preemption.launch()
    preemption.pause_point("start-up")  # test hook (RLX_PAUSE_AT=start-up): wait here for a signal
    from rlx.console import before_imports

    before_imports()
    sys.argv = [f"rlx {args[0]}", *args[1:]]  # Hydra parses sys.argv itself (-m, --cfg, overrides)
    __import__(COMMANDS[args[0]][0], fromlist=["main"]).main()


if __name__ == "__main__":
    main()
