"""Named errors and fast refusals (docs/configuration.md, "Bad input fails early, naming the key";
docs/experiments.md, "Checkpoints and resume"): a full disk while checkpointing, broken model and data files,
refusals before the heavy imports; a quiet first tiny-model build (docs/experiments.md, "The console")."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

FULL_DISK_SCRIPT = textwrap.dedent("""
    import sys
    from pathlib import Path

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlx.train.infra.checkpoint import CheckpointWriteError, read_manifest, save_checkpoint

    run_dir, model_dir = Path(sys.argv[1]), sys.argv[2]
    policy = AutoModelForCausalLM.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    optimizer = torch.optim.SGD(policy.parameters(), lr=0.1)
    save_checkpoint(run_dir, 1, policy, tokenizer, [optimizer], None, {}, keep_last=1)
    try:
        save_checkpoint(run_dir, 2, policy, tokenizer, [optimizer], None, {}, keep_last=1)
    except CheckpointWriteError as err:
        print("ERROR", err)
    print("LEFT", sorted(p.name for p in (run_dir / "checkpoints").iterdir()))
    print("STEP1", read_manifest(run_dir / "checkpoints" / "step_1")["step"])
""")


def test_a_full_disk_while_checkpointing_is_named_and_cleaned_up(tiny_model_dir, tmp_path):
    """A real 5 MiB tmpfs (mounted in a user namespace): the first checkpoint (3.2 MB of weights) fits, the
    second does not. torch/safetensors fail without saying why; the error names the full disk, the partial
    `.step_2.tmp` is gone and step_1 is intact."""
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1) to mount a small tmpfs")
    mount = tmp_path / "small"
    mount.mkdir()
    script = tmp_path / "full_disk.py"
    script.write_text(FULL_DISK_SCRIPT)
    shell = (f"mount -t tmpfs -o size=5m tmpfs {mount} && exec {sys.executable} {script} {mount / 'run'} "
             f"{tiny_model_dir}")
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", shell], capture_output=True, text=True, timeout=300,
                          cwd=REPO)
    if proc.returncode != 0 and "mount" in proc.stderr and "ERROR" not in proc.stdout:
        pytest.skip(f"no user-namespace mount here: {proc.stderr.strip()[:200]}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in proc.stdout.splitlines() if " " in line)
    assert lines["ERROR"].startswith(f"checkpoint step_2 could not be written to {mount / 'run' / 'checkpoints'}: "
                                     "no space left on device (")
    assert lines["ERROR"].endswith(f"MiB free there); its partial copy .step_2.tmp was removed; the previous "
                                   f"checkpoint {mount / 'run' / 'checkpoints' / 'step_1'} is kept")
    assert lines["LEFT"] == "['step_1']" and lines["STEP1"] == "1"


BROKEN_CONFIG = '{"model_type": "qwen2",\n  "hidden_size": 64,\n'  # cut short: line 3 is empty


def refusal(command: list[str], cwd: Path, env: dict | None = None) -> tuple[int, str, list[str]]:
    """(exit code, the last line of stderr that is not -X importtime's, the modules imported) of `rlx ...`."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "rlx.cli", *command], cwd=cwd, text=True,
                          capture_output=True, timeout=300, env=env)
    lines = proc.stderr.splitlines()
    modules = [line.rsplit("|", 1)[1].strip() for line in lines if line.startswith("import time:")]
    message = [line for line in lines if not line.startswith("import time:") and line.strip()]
    return proc.returncode, message[-1] if message else "", modules


@pytest.mark.parametrize(("command", "expected"), [
    (["train", "hydra/launcher=nonexistent"],
     "rlx train: bad config: hydra.launcher=nonexistent: no such option. Available options in 'hydra/launcher': "
     "basic, joblib, slurm, submitit_local, submitit_slurm"),
    (["train", "train.rollout_workers=1"],
     "rlx train: bad config: train.rollout_workers=1 needs torchrun --nproc_per_node=2 (one trainer rank + 1 "
     "generation ranks); got WORLD_SIZE=1 (in the job train.rollout_workers=1)"),
    (["train", "data=jsonl", "data.path=/nonexistent"],
     "rlx train: bad config: data.path: no such file: /nonexistent (in the job data=jsonl data.path=/nonexistent)"),
    (["train", "data.path=/nonexistent"],
     "rlx train: bad config: data.path: unknown key (in the job data.path=/nonexistent)"),
    (["train", "model.path=BROKEN"],
     "rlx train: bad config: model.path: BROKEN/config.json is not valid JSON (Expecting property name enclosed in "
     "double quotes at line 3, column 1) (in the job model.path=BROKEN)"),
    (["eval", "model.path=BROKEN"],
     "rlx eval: bad config: model.path: BROKEN/config.json is not valid JSON (Expecting property name enclosed in "
     "double quotes at line 3, column 1) (in the job model.path=BROKEN)"),
])
def test_refusals_come_before_the_heavy_imports(command, expected, tmp_path):
    """Each was refused only after torch (and for a broken config.json, the model load: 232 s, four chained
    tracebacks) was imported, which takes tens of seconds on a loaded machine: now one line, torch never
    imported."""
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text(BROKEN_CONFIG)
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK")}
    command = [arg.replace("BROKEN", str(broken)) for arg in command]
    code, message, modules = refusal(command, tmp_path, env)
    assert (code, message) == (1, expected.replace("BROKEN", str(broken)))
    assert not {"torch", "transformers", "vllm"} & set(modules)
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "runs").exists()  # no run directory either


def test_an_empty_rlx_cache_is_unset(monkeypatch, tiny_model_dir, tmp_path):
    """`RLX_CACHE=` (set but blank) used to build the tiny model into the current directory."""
    from rlx.recipes.tiny import default_cache_dir

    monkeypatch.setenv("RLX_CACHE", "")
    assert default_cache_dir() == Path.home() / ".cache" / "rlx"
    if tiny_model_dir.parent != default_cache_dir():
        return  # the suite's model lives elsewhere: `rlx build-tiny` below would build a second one
    proc = subprocess.run([sys.executable, "-m", "rlx.cli", "build-tiny"], cwd=tmp_path, text=True,
                          capture_output=True, timeout=300, env={**os.environ, "RLX_CACHE": ""})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines()[0] == f"[rlx] tiny model: {tiny_model_dir}"
    assert list(tmp_path.iterdir()) == []  # nothing built into the current directory


def test_a_truncated_jsonl_row_names_its_last_column(tmp_path):
    """The cut row used to report "column 22" (where a string opened) or, for a row cut between values,
    "column 1" of a second line that does not exist."""
    from rlx.data.jsonl import load_jsonl

    data = tmp_path / "cut.jsonl"
    data.write_text('{"question": "1+1?", "answer": "2"}\n{"question": "2+2?", "answer": 4\n'
                    '{"question": "3+3?", "ans')
    rows = load_jsonl(data, on_error="skip")
    assert len(rows) == 1 and rows.skipped_rows == [
        f"{data}:2: bad JSON (the row ends at column 32 before its JSON does, cut short? Expecting ',' delimiter "
        "at column 33)",
        f"{data}:3: bad JSON (the row ends at column 25 before its JSON does, cut short? Unterminated string at "
        "column 22)"]
    with pytest.raises(ValueError, match=r"cut\.jsonl:2: malformed row: bad JSON \(the row ends at column 32"):
        load_jsonl(data)


QUIET_BUILD_SCRIPT = textwrap.dedent("""
    import logging
    import sys
    from pathlib import Path

    from rlx.console import quiet_libraries
    from rlx.data.arith import ArithSpec
    from rlx.recipes.tiny import TinyModelSpec, ensure_tiny_model

    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")  # the console, as under Hydra
    logging.getLogger().addHandler(logging.FileHandler(sys.argv[2]))  # the run's log file
    quiet_libraries()
    spec = TinyModelSpec(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64,
                         sft_batch_size=8, sft_max_steps=6, sft_warmup_steps=1, sft_eval_every=2, sft_eval_from=2,
                         target_accuracy=1.1, dev_size=4, task=ArithSpec(test_size=8))
    print(ensure_tiny_model(spec, Path(sys.argv[1])))
""")


def test_the_first_tiny_model_build_is_one_line_and_a_bar(tmp_path):
    """A (shrunk) tiny-model build under rlx's console: one line and a progress bar; the per-evaluation lines
    (14+ on a newcomer's first `rlx train`) go to the log file only."""
    script, log_file = tmp_path / "build.py", tmp_path / "run.log"
    script.write_text(QUIET_BUILD_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "RLX_VERBOSE"}
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "cache"), str(log_file)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    model_dir = Path(proc.stdout.strip())
    pieces = [p.strip() for p in proc.stderr.replace("\r", "\n").splitlines() if p.strip()]
    bar = [p for p in pieces if p.startswith("rlx: tiny model SFT (until dev accuracy 1.10)")]
    assert bar and bar[-1].split(":", 2)[2].lstrip().startswith("100%")  # 6 of 6 steps
    assert [p for p in pieces if p not in bar] == [
        f"rlx.recipes.tiny: building the tiny model into {model_dir} (one-time, a few minutes)"]
    logged = log_file.read_text().splitlines()
    assert [line.split(" loss")[0] for line in logged if line.startswith("sft step")] == [
        "sft step 2", "sft step 4", "sft step 6"]
