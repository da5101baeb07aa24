"""`rlx --help`: subcommands and the options of every config group, read from the packaged conf/."""

from __future__ import annotations

from importlib import resources

GROUPS = ("algo", "model", "reward_model", "sampler", "data", "logger")


def group_options(group: str) -> list[str]:
    folder = resources.files("rlx.conf") / group
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


def usage(commands: dict[str, tuple[str, str]]) -> str:
    lines = ["usage: rlx [-v] <command> [key=value ...] [-m] [--cfg job] [--help]", "", "commands:"]
    lines += [f"  {name:<11} {about}" for name, (_, about) in commands.items()]
    lines += ["", "config groups (pick one option each, e.g. algo=grpo):"]
    lines += [f"  {group:<13} {', '.join(group_options(group))}" for group in GROUPS]
    lines += [
        "",
        "examples:",
        "  rlx train                                  # TRePO on the built-in arith task, tiny model",
        "  rlx train algo=grpo train.steps=20",
        "  rlx train -m algo=trepo algo.gamma=0.95,1.0 algo.lam=0,0.95",
        "  rlx train --cfg job                        # print the composed config and exit",
        "  rlx -v train                               # also show library logs (vLLM, transformers) on the console",
        "  rlx eval model.path=runs/<date>/<time>/checkpoint",
        "  rlx train --help                           # Hydra's help for one command",
    ]
    return "\n".join(lines)
