"""Resumable checkpoints: policy (and critic), optimizers, every RNG state and the step.

Layout: `<run_dir>/checkpoints/step_<n>/` holding the policy in Hugging Face format plus `trainer_state.pt`.
Each checkpoint is written to a temporary directory and renamed into place, so a crash (even SIGKILL)
mid-write never leaves a directory that looks complete; only the newest `keep_last` are kept. The data
cursor and the per-request sampling seeds are pure functions of (seed, step), so restoring the step
restores them.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch

STATE_FILE = "trainer_state.pt"
_STEP_DIR = re.compile(r"^step_(\d+)$")


def checkpoint_root(run_dir: Path) -> Path:
    return run_dir / "checkpoints"


def save_checkpoint(run_dir: Path, step: int, policy, tokenizer, optimizers, critic, extra: dict,
                    keep_last: int, gathered: dict | None = None) -> Path:
    """`gathered`: the full states of FSDP2-sharded modules (`parallel.gather_train_state`), else None."""
    root = checkpoint_root(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step}"
    tmp = root / f".step_{step}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    policy.save_pretrained(str(tmp), state_dict=gathered["policy"] if gathered else None)
    tokenizer.save_pretrained(str(tmp))
    state = {
        "step": step,
        "optimizers": gathered["optimizers"] if gathered else [opt.state_dict() for opt in optimizers],
        "critic": gathered["critic"] if gathered else (critic.state_dict() if critic is not None else None),
        "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()},
        "extra": extra,
    }
    torch.save(state, tmp / STATE_FILE)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)  # atomic on one filesystem: a checkpoint directory is complete or absent
    _prune(root, keep_last)
    return final


def _prune(root: Path, keep_last: int) -> None:
    for old in complete_checkpoints(root)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)


def complete_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoint directories, oldest first."""
    if not root.exists():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir()
             if (m := _STEP_DIR.match(p.name)) and (p / STATE_FILE).exists()]
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: Path) -> Path | None:
    done = complete_checkpoints(checkpoint_root(run_dir))
    return done[-1] if done else None


def load_checkpoint(path: Path, policy, optimizers, critic) -> tuple[int, dict]:
    """Restore weights, optimizer states and RNG states in place; returns (step, extra)."""
    from safetensors.torch import load_file

    from rlx.models.lora import is_lora, load_adapter_weights
    from rlx.train import parallel

    state = torch.load(path / STATE_FILE, weights_only=False)
    if parallel.is_sharded(policy):  # FSDP2: every rank reads the full checkpoint and keeps its shards
        parallel.load_train_state(policy, load_file(str(path / "model.safetensors")), optimizers,
                                  state["optimizers"], critic, state["critic"])
    elif is_lora(policy):  # save_pretrained of a PeftModel wrote the adapter only; the base is the model file's
        load_adapter_weights(path, policy)
    else:
        weights = load_file(str(path / "model.safetensors"))
        policy.load_state_dict(weights, strict=False)  # tied lm_head is not stored separately
        policy.tie_weights()
    if not parallel.is_sharded(policy):
        for opt, opt_state in zip(optimizers, state["optimizers"], strict=True):
            opt.load_state_dict(opt_state)
        if critic is not None:
            critic.load_state_dict(state["critic"])
    torch.set_rng_state(state["rng"]["torch"])
    np.random.set_state(state["rng"]["numpy"])
    random.setstate(state["rng"]["python"])
    return state["step"], state["extra"]


def truncate_metrics(metrics_path: Path, step: int) -> None:
    """Drop metric rows written after `step` (by the run that died), so the resumed file matches an
    uninterrupted run's."""
    if not metrics_path.exists():
        return
    kept = []
    for line in metrics_path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line)
        except (json.JSONDecodeError, KeyError):  # a line cut short by the kill
            continue
    metrics_path.write_text("".join(line + "\n" for line in kept))
