"""What starting (or restarting) a run directory does before any model loads.

- One run per directory: `rlx.lock` holds the owner's PID, host and process start time; a second run on the
  directory fails at once naming the owner; a lock whose owner is gone (a killed run on this host) is taken
  over with a message. `rlx train` takes it before Hydra writes anything into the directory (rlx/train/app.py);
  `open_run` then keeps the lock this process holds.
- `resume=auto` verifies every checkpoint's manifest (sha256 of its files), newest first, and resumes from the
  newest valid one, saying which it skipped and why; when there are checkpoints but none is valid it stops,
  listing each with its reason (`resume=restart` starts again at step 1, the earlier attempt's files moved
  aside); `resume=<path>` must verify. A checkpoint of another
  algorithm, model or LoRA shape is refused naming the differing keys. Changed settings are listed in a
  warning and appended to `config_history.jsonl`; `config.yaml` keeps the run's first configuration.
- `resume=auto` on a finished run (summary.json for the configured steps) does nothing and says so.
- A start from step 1 replaces an earlier `metrics.jsonl` (no duplicate rows after a restart).
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlx.train.infra import checkpoint
from rlx.train.infra.checkpoint import CheckpointError

LOCK_FILE = "rlx.lock"
HISTORY_FILE = "config_history.jsonl"
# Keys that make a checkpoint another run's: its tensors would not fit, or mean something else.
IDENTITY_KEYS = ("algo.name", "model.name", "model.path", "model.hub_id", "model.lora.r",
                 "model.lora.target_modules")
NOT_SETTINGS = ("output_dir", "resume")  # where the run lives, not how it trains
RESTART = "restart"  # resume=restart: start again at step 1, the earlier attempt's files moved aside
# What a start from step 1 with resume=restart moves into replaced-<time>/: all a resume or a reader of the run
# would take for the new attempt's (summary.json would make resume=auto call the new attempt finished)
EARLIER_ATTEMPT = ("checkpoints", "checkpoint", "summary.json", "metrics.jsonl", "config.yaml", HISTORY_FILE, "samples")


class RunDirError(CheckpointError):
    """The run directory cannot be used (unwritable, or another run holds it)."""


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0  # torchrun's rank; the process group is not joined yet


# ------------------------------------------------------------------ writable
def check_writable(path: Path, key: str = "output_dir") -> None:
    """One-line error when `path` cannot be created or written (checked on its nearest existing ancestor)."""
    probe = Path(os.path.abspath(path))
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise RunDirError(f"{key}: cannot create the run directory {path}: {probe} is a file")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise RunDirError(f"{key}: cannot write the run directory {path}: no write permission on {probe}")


def make_run_dir(path: Path, key: str = "output_dir") -> None:
    """Create the run directory (writing into it is tried by taking its lock, which writes nothing else)."""
    check_writable(path, key)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunDirError(f"{key}: cannot write the run directory {path}: {err.strerror or err}") from None


# ---------------------------------------------------------------------- lock
def _process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc), to tell a live owner from a reused PID."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state is fields[0], starttime fields[19]
    return None if fields[0] in ("Z", "X") else fields[19]  # a zombie is dead


def _alive(owner: dict) -> bool:
    pid = int(owner.get("pid", -1))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, under another user
    if Path("/proc").is_dir():
        start, expected = _process_start(pid), owner.get("start")
        return start is not None and (expected is None or start == expected)
    return True


def _describe(owner: dict) -> str:
    return f"pid {owner.get('pid')} on {owner.get('host')}, since {owner.get('since', '?')}"


_HELD: dict[str, RunLock] = {}  # absolute lock path -> the lock this process holds (`rlx train` takes it early)


@dataclass
class RunLock:
    path: Path
    owner: dict

    @classmethod
    def held(cls, run_dir: Path) -> RunLock | None:
        """The lock of `run_dir` this process took (`rlx train` takes it before Hydra starts), if it still holds it."""
        lock = _HELD.get(os.path.abspath(run_dir / LOCK_FILE))
        return lock if lock is not None and read_owner(lock.path) == lock.owner else None

    @classmethod
    def acquire(cls, run_dir: Path, key: str = "output_dir") -> RunLock:
        """Take `run_dir`'s lock (a second acquire fails, in this process too); `key` names the setting of
        `run_dir` in the error of an unwritable directory."""
        path = run_dir / LOCK_FILE
        me = {"pid": os.getpid(), "host": socket.gethostname(), "start": _process_start(os.getpid()),
              "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        for _ in range(3):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                _take_over_if_stale(path)
                continue
            except OSError as err:
                raise RunDirError(f"{key}: cannot write the run directory {run_dir}: {err.strerror or err}") from None
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            lock = _HELD[os.path.abspath(path)] = cls(path, me)
            atexit.register(lock.release)  # also on errors and Ctrl-C; SIGKILL leaves a stale lock
            return lock
        raise RunDirError(f"{run_dir}: could not take {LOCK_FILE} (another run keeps taking it)")

    def release(self) -> None:
        if _HELD.get(os.path.abspath(self.path)) is self:
            del _HELD[os.path.abspath(self.path)]
        if read_owner(self.path) == self.owner:  # still ours: nobody took it over
            self.path.unlink(missing_ok=True)


def settled_owner(path: Path, seconds: float = 2.0) -> dict | None:
    """`read_owner`, waiting up to `seconds` while the lock file exists but is still empty: a racing start takes
    the file (O_EXCL) before it writes its pid into it, and the error should name that run."""
    deadline = time.monotonic() + seconds
    owner = read_owner(path)
    while owner is None and path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
        owner = read_owner(path)
    return owner


def read_owner(path: Path) -> dict | None:
    try:
        owner = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return owner if isinstance(owner, dict) else None


def check_unlocked(run_dir: Path) -> None:
    """Fail at once when a live run holds `run_dir` (a stale lock is left for `RunLock.acquire` to take)."""
    path = run_dir / LOCK_FILE
    if path.exists():
        owner = settled_owner(path)
        if owner is None or owner.get("host") != socket.gethostname() or _alive(owner):
            raise _held(run_dir, owner)


def _held(run_dir: Path, owner: dict | None) -> RunDirError:
    who = _describe(owner) if owner else "a run that is starting"
    return RunDirError(f"{run_dir} is in use by another rlx run ({who}); wait for it, pick another directory, "
                       f"or delete {run_dir / LOCK_FILE} if that run is gone")


def _take_over_if_stale(path: Path) -> None:
    owner = settled_owner(path)
    if owner is None and path.exists() and time.time() - path.stat().st_mtime < 10:
        raise _held(path.parent, None)  # being written right now
    if owner is not None and (owner.get("host") != socket.gethostname() or _alive(owner)):
        raise _held(path.parent, owner)  # another host's run cannot be checked: assume it is alive
    who = _describe(owner) if owner else "unreadable lock file"
    print(f"[rlx] taking over the stale lock of {path.parent} ({who}: no longer running)")
    path.unlink(missing_ok=True)


# -------------------------------------------------------------------- resume
def flat_settings(cfg: Any) -> dict[str, Any]:
    """The run config as {dotted key: JSON value}, e.g. {"algo.gamma": 1.0, "model.lora.r": 0}."""
    flat: dict[str, Any] = {}

    def walk(value: Any, prefix: str) -> None:
        if isinstance(value, dict) and (value or not prefix):
            for key, item in value.items():
                walk(item, f"{prefix}.{key}" if prefix else str(key))
        else:
            flat[prefix] = json.loads(json.dumps(value, default=str))  # tuples -> lists, as the manifest has them

    walk(dataclasses.asdict(cfg), "")
    return flat


def checkpoint_meta(cfg: Any) -> dict:
    """What a checkpoint's manifest records about its run, for the checks of a later resume."""
    settings = {k: v for k, v in flat_settings(cfg).items() if k not in NOT_SETTINGS}
    return {"identity": {k: settings.get(k) for k in IDENTITY_KEYS}, "settings": settings}


def check_compatible(path: Path, manifest: dict, cfg: Any) -> None:
    """Refuse another run's checkpoint: a different algorithm, model or LoRA shape, naming the keys."""
    now = checkpoint_meta(cfg)["identity"]
    saved = manifest.get("identity", {})
    differ = [f"{k}={saved.get(k)!r} in the checkpoint, {now[k]!r} now"
              for k in IDENTITY_KEYS if saved.get(k) != now[k]]
    if differ:
        raise CheckpointError(f"resume: {path} belongs to another kind of run: {'; '.join(differ)} "
                              "(use a new run directory, or resume with the checkpoint's settings)")


def changed_settings(manifest: dict, cfg: Any) -> dict[str, list]:
    """{key: [value in the checkpoint, value now]} for every setting that differs."""
    saved = manifest.get("settings", {})
    now = checkpoint_meta(cfg)["settings"]
    return {k: [saved.get(k), now.get(k)] for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k)}


def resolve_resume(cfg: Any, run_dir: Path, say=print) -> tuple[Path | None, dict | None]:
    """(checkpoint to resume from, its manifest): verified and compatible, or (None, None) to start at step 1."""
    if cfg.resume in (None, RESTART):
        return None, None
    if cfg.resume != "auto":
        path = Path(cfg.resume)
        try:
            manifest = checkpoint.read_manifest(path)
        except CheckpointError as err:
            hint = (f" ({path} is a run directory: resume=auto hydra.run.dir={path} resumes its newest checkpoint)"
                    if checkpoint.checkpoint_root(path).is_dir() else "")
            raise CheckpointError(f"resume: {err}{hint}") from None
    else:
        path, manifest = _newest_valid(run_dir, say)
        if path is None:
            return None, None
    check_compatible(path, manifest, cfg)
    return path, manifest


def _newest_valid(run_dir: Path, say) -> tuple[Path | None, dict | None]:
    """The newest checkpoint that verifies, saying which newer ones it skipped and why; (None, None) when the
    run directory has none. Checkpoints that all fail verification stop the run (a CheckpointError listing
    them): starting again at step 1 would silently throw the run's progress away."""
    skipped = []
    for path in reversed(checkpoint.step_directories(checkpoint.checkpoint_root(run_dir))):
        try:
            manifest = checkpoint.read_manifest(path)
        except CheckpointError as err:
            skipped.append(str(err))
            continue
        for reason in skipped:
            say(f"[rlx] resume=auto: skipping {reason}")
        return path, manifest
    if skipped:
        listed = "".join(f"\n  skipped {reason}" for reason in skipped)
        raise CheckpointError(
            f"resume=auto: none of the {len(skipped)} checkpoints in {checkpoint.checkpoint_root(run_dir)} can be "
            f"resumed, and it will not restart from step 1 on its own:{listed}\n"
            f"To train again from step 1 in this run directory use resume={RESTART} (the earlier attempt's files "
            "are moved aside, not deleted); to resume a checkpoint of your choice, resume=<its path>.")
    return None, None


def finished_summary(run_dir: Path, cfg: Any) -> dict | None:
    """summary.json of a run that already trained its `train.steps`, else None."""
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(summary, dict) or summary.get("steps") != cfg.train.steps:
        return None
    return summary


# ---------------------------------------------------------------------- start
@dataclass
class RunStart:
    """The outcome of `open_run`; a context manager that releases the lock."""

    run_dir: Path
    lock: RunLock | None = None
    resume_from: Path | None = None  # a verified, compatible checkpoint; None = start at step 1
    finished: dict | None = None  # summary.json of a finished run: nothing to do

    def __enter__(self) -> RunStart:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.lock is not None:
            self.lock.release()


def open_run(cfg: Any, resolved_config: str) -> RunStart:
    """Lock the run directory, resolve and verify the checkpoint to resume from and record the configuration;
    every failure is a CheckpointError (one line), before any model loads."""
    run_dir = Path(cfg.output_dir)
    main = _is_main_process()
    if main:
        make_run_dir(run_dir)
    start = RunStart(run_dir, lock=(RunLock.held(run_dir) or RunLock.acquire(run_dir)) if main else None)
    try:
        if cfg.resume == RESTART and main:
            set_aside_earlier_attempt(run_dir)
        start.finished = finished_summary(run_dir, cfg) if cfg.resume == "auto" else None
        if start.finished is not None:
            if main:
                print(f"[rlx] {run_dir} holds a finished run ({cfg.train.steps} steps, summary.json): nothing to "
                      "resume. To train again, use another run directory (or delete summary.json).")
            return start
        start.resume_from, manifest = resolve_resume(cfg, run_dir, say=print if main else lambda _: None)
        if main:
            record_start(run_dir, cfg, resolved_config, start.resume_from, manifest)
    except BaseException:
        start.__exit__()
        raise
    return start


def set_aside_earlier_attempt(run_dir: Path) -> Path | None:
    """resume=restart: move the files of an earlier attempt (EARLIER_ATTEMPT) into `replaced-<time>/` of the
    run directory, where no resume looks; returns that folder, or None when there was nothing to move."""
    found = [run_dir / name for name in EARLIER_ATTEMPT if (run_dir / name).exists()]
    if not found:
        return None
    folder = run_dir / time.strftime("replaced-%Y-%m-%d_%H-%M-%S")
    folder = folder if not folder.exists() else folder.with_name(f"{folder.name}_{os.getpid()}")
    folder.mkdir()
    for path in found:
        path.rename(folder / path.name)
    print(f"[rlx] resume={RESTART}: starting again at step 1; the earlier attempt's "
          f"{', '.join(p.name for p in found)} moved to {folder}")
    return folder


def record_start(run_dir: Path, cfg: Any, resolved_config: str, resume_from: Path | None,
                 manifest: dict | None) -> None:
    """config.yaml on a fresh start; on a resume, keep it and append the changed settings to the history."""
    config_file = run_dir / "config.yaml"
    if resume_from is None or not config_file.exists():
        config_file.write_text(resolved_config)
    if resume_from is None:
        _reset_metrics(run_dir)
        return
    changes = changed_settings(manifest or {}, cfg)
    if changes:
        listed = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changes.items())
        print(f"[rlx] warning: resuming with changed settings (recorded in {HISTORY_FILE}): {listed}")
    entry = {"time": time.strftime("%Y-%m-%d %H:%M:%S"), "resumed_from": str(resume_from),
             "step": (manifest or {}).get("step"), "changed": {k: {"checkpoint": old, "now": new}
                                                              for k, (old, new) in changes.items()}}
    with (run_dir / HISTORY_FILE).open("a") as f:
        f.write(json.dumps(entry) + "\n")


def _reset_metrics(run_dir: Path) -> None:
    """A start from step 1 rewrites metrics.jsonl: rows of an earlier attempt would be duplicated otherwise."""
    metrics = run_dir / "metrics.jsonl"
    if metrics.exists() and metrics.stat().st_size > 0:
        rows = len(metrics.read_text().splitlines())
        print(f"[rlx] starting at step 1: replacing the {rows} rows of an earlier attempt in {metrics}")
        metrics.unlink()
