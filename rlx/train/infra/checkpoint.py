"""Resumable checkpoints: policy (and critic), optimizers, every RNG state and the step.

Layout: `<run_dir>/checkpoints/step_<n>/` holding the policy in Hugging Face format, `trainer_state.pt` and
`manifest.json` (the sha256 of every other file, the run's identity and settings). Each checkpoint is written
to a temporary directory and renamed into place, so a crash (even SIGKILL) mid-write never leaves a directory
that looks complete; only the newest `keep_last` are kept. The data cursor and the per-request sampling seeds
are pure functions of (seed, step), so restoring the step restores them.

Loading is safe: weights are safetensors and `trainer_state.pt` holds only tensors and plain Python
containers (RNG states included), read with `torch.load(weights_only=True)`, so a checkpoint from elsewhere
cannot run code.
"""

from __future__ import annotations

import errno
import hashlib
import json
import pickle
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch

from rlx.data.configs import ConfigError

STATE_FILE = "trainer_state.pt"
MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = 1
_STEP_DIR = re.compile(r"^step_(\d+)$")


class CheckpointError(ConfigError):
    """A checkpoint that cannot be used: the message names the checkpoint and what is wrong with it."""


def checkpoint_root(run_dir: Path) -> Path:
    return run_dir / "checkpoints"


def save_checkpoint(run_dir: Path, step: int, policy, tokenizer, optimizers, critic, extra: dict,
                    keep_last: int, meta: dict | None = None, gathered: dict | None = None) -> Path:
    """`meta`: the run's identity and settings (rundir.checkpoint_meta), kept in the manifest for resume checks.
    `gathered`: the full states of FSDP2-sharded modules (`parallel.gather_train_state`), else None."""
    root = checkpoint_root(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step}"
    tmp = root / f".step_{step}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)

    def write() -> None:
        policy.save_pretrained(str(tmp), state_dict=gathered["policy"] if gathered else None)
        tokenizer.save_pretrained(str(tmp))
        state = {
            "step": step,
            "optimizers": gathered["optimizers"] if gathered else [opt.state_dict() for opt in optimizers],
            "critic": gathered["critic"] if gathered else (critic.state_dict() if critic is not None else None),
            "rng": rng_state(),
            "extra": extra,
        }
        torch.save(state, tmp / STATE_FILE)
        write_manifest(tmp, step, meta or {})

    write_or_clean(tmp, write, f"checkpoint step_{step}", complete_checkpoints(root))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)  # atomic on one filesystem: a checkpoint directory is complete or absent
    _prune(root, keep_last)
    return final


class CheckpointWriteError(CheckpointError):
    """A checkpoint that could not be written (a full disk, an unwritable directory); the message names the
    cause, and the partial copy is already removed."""


def write_or_clean(tmp: Path, write, what: str, kept: list[Path]) -> None:
    """Run `write` (which fills the directory `tmp`); on any failure remove `tmp`, and for an error of the
    write itself raise CheckpointWriteError naming the cause. A full disk surfaces as torch's "unexpected
    pos" or a safetensors error that do not say so, hence the free-space check while `tmp` still holds it."""
    try:
        write()
    except BaseException as err:  # a preemption mid-write also leaves no partial copy behind
        full = _disk_full(tmp, err)
        shutil.rmtree(tmp, ignore_errors=True)
        if not isinstance(err, Exception):  # Preempted, KeyboardInterrupt, SystemExit: not a write error
            raise
        previous = f"; the previous checkpoint {kept[-1]} is kept" if kept else ""
        cause = f"no space left on device ({_free_text(tmp.parent)} free there)" if full else \
            f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
        raise CheckpointWriteError(f"{what} could not be written to {tmp.parent}: {cause}; its partial copy "
                                   f"{tmp.name} was removed{previous}") from err


def _disk_full(folder: Path, err: BaseException) -> bool:
    """Whether `err` (or what caused it) is ENOSPC, or the filesystem of `folder` has under 1 MiB left."""
    while err is not None:
        if isinstance(err, OSError) and err.errno == errno.ENOSPC or "No space left" in str(err):
            return True
        err = err.__cause__ or err.__context__
    try:
        return shutil.disk_usage(folder if folder.exists() else folder.parent).free < 1 << 20
    except OSError:
        return False


def _free_text(folder: Path) -> str:
    try:
        return f"{shutil.disk_usage(folder).free / 2**20:.1f} MiB"
    except OSError:
        return "unknown"


def rng_state() -> dict:
    """Every RNG state as tensors and plain Python values (what `torch.load(weights_only=True)` accepts)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # keys: uint32 [624]
    return {"torch": torch.get_rng_state(), "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
            "python": random.getstate()}  # (version, tuple of 625 ints, gauss_next)


def set_rng_state(rng: dict) -> None:
    torch.set_rng_state(rng["torch"])
    kind, keys, pos, has_gauss, cached = rng["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss_next = rng["python"]
    random.setstate((version, tuple(internal), gauss_next))


def write_manifest(folder: Path, step: int, meta: dict) -> None:
    files = {str(p.relative_to(folder)): file_sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()}
    manifest = {"format": MANIFEST_FORMAT, "step": step, "files": files, **meta}
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(path: Path) -> dict:
    """The manifest of checkpoint `path` after checking every file it lists; CheckpointError says what is wrong."""
    try:
        manifest = json.loads((path / MANIFEST_FILE).read_text())
        files = manifest["files"]
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no {MANIFEST_FILE} (incomplete, or written by an older rlx)") from None
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path}: unreadable {MANIFEST_FILE} ({err})") from None
    if STATE_FILE not in files:
        raise CheckpointError(f"{path}: {MANIFEST_FILE} does not list {STATE_FILE}")
    for name, expected in sorted(files.items()):
        file = path / name
        if not file.is_file():
            raise CheckpointError(f"{path}: {name} is missing")
        if file_sha256(file) != expected:
            raise CheckpointError(f"{path}: {name} does not match its sha256 in {MANIFEST_FILE} (corrupt or modified)")
    return manifest


def _prune(root: Path, keep_last: int) -> None:
    for old in complete_checkpoints(root)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)


def complete_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoint directories, oldest first."""
    return [p for p in step_directories(root) if (p / STATE_FILE).exists()]


def step_directories(root: Path) -> list[Path]:
    """Every `step_<n>` directory, oldest first, complete or not."""
    if not root.exists():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def save_resumable(run_dir: Path, step: int, policy, tokenizer, optimizers, critic, extra: dict, keep_last: int,
                   meta: dict) -> Path:
    """`save_checkpoint` as a run does it: call it on every rank (FSDP2 gathers, a collective), rank 0 writes,
    and every rank waits until it is complete (any rank can then resume from it)."""
    from rlx.train.infra import distributed as dist
    from rlx.train.infra import parallel

    gathered = parallel.gather_train_state(policy, optimizers, critic)
    if dist.is_main():
        save_checkpoint(run_dir, step, policy, tokenizer, optimizers, critic, extra, keep_last, meta=meta,
                        gathered=gathered)
    dist.barrier()
    return checkpoint_root(run_dir) / f"step_{step}"


def save_final(run_dir: Path, policy, tokenizer) -> Path:
    """The final HF checkpoint `run_dir/checkpoint`, written by rank 0. Call it on every rank: FSDP2 gathers
    the weights (a collective). LoRA: the adapter (ckpt/adapter) and the merged model."""
    from rlx.models.lora import save_policy
    from rlx.train.infra import distributed as dist
    from rlx.train.infra import parallel

    ckpt = run_dir / "checkpoint"
    gathered = parallel.gather_train_state(policy, [], None)
    if not dist.is_main():
        return ckpt

    def write() -> None:
        if gathered:
            policy.save_pretrained(str(ckpt), state_dict=gathered["policy"])
        else:
            save_policy(policy, ckpt)
        tokenizer.save_pretrained(str(ckpt))

    write_or_clean(ckpt, write, "the final checkpoint", complete_checkpoints(checkpoint_root(run_dir)))
    return ckpt


def load_checkpoint(path: Path, policy, optimizers, critic) -> tuple[int, dict]:
    """Restore weights, optimizer states and RNG states in place; returns (step, extra)."""
    from safetensors.torch import load_file

    from rlx.models.lora import is_lora, load_adapter_weights
    from rlx.train.infra import parallel

    state = load_trainer_state(path)
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
    set_rng_state(state["rng"])
    return state["step"], state["extra"]


def load_trainer_state(path: Path) -> dict:
    """`trainer_state.pt` through the weights-only unpickler: tensors and plain containers, never code."""
    try:
        return torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first_line = str(err).strip().splitlines()[0]
        raise CheckpointError(f"{path / STATE_FILE}: refused, it holds more than tensors and plain Python "
                              f"values (torch.load weights_only=True said: {first_line})") from None


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
    tmp = metrics_path.with_name(metrics_path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    tmp.replace(metrics_path)  # atomic: a preemption signal during the model load never leaves the file half-written
