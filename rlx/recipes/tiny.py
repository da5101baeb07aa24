"""`model=tiny`: a small `Qwen2ForCausalLM` with a character-level tokenizer, built by the project.

It is warm-started by supervised fine-tuning on the built-in task's reference solutions until its greedy
accuracy on a dev slice of the *train* stream reaches `target_accuracy` (so RL starts with signal: the
issue asks for 20-60% test accuracy), then saved in Hugging Face format. The build is deterministic for a
given spec (seeded init, seeded data, a fixed number of threads) and cached under a directory named by the
spec's hash, written atomically (temporary directory, then rename).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

from rlx.console import FILE_ONLY, verbose
from rlx.data import arith
from rlx.grading.arith import integer_answer_correct
from rlx.models.charlevel import ALPHABET, build_char_tokenizer
from rlx.sampling.base import GenRequest
from rlx.sampling.hf import HFSampler, right_pad

log = logging.getLogger(__name__)
BUILD_VERSION = 2  # bump when the build recipe changes in a way the spec does not show


@dataclass(frozen=True)
class TinyModelSpec:
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 384
    max_position: int = 256
    tie_word_embeddings: bool = True  # like Qwen2.5-0.5B: exercises vLLM's tied-embedding sync trap
    seed: int = 0
    sft_batch_size: int = 64
    sft_lr: float = 2e-3
    sft_warmup_steps: int = 30
    sft_max_steps: int = 3000
    sft_eval_every: int = 50
    sft_eval_from: int = 400  # no dev evaluation before this step (the model cannot be accurate yet)
    target_accuracy: float = 0.3  # stop SFT once greedy dev accuracy reaches this
    dev_size: int = 256
    max_new_tokens: int = 56
    task: arith.ArithSpec = arith.ArithSpec()  # the task the warm start learns (train stream) and is tested on
    # Curriculum: start SFT from this (already built, cached) model's weights instead of a seeded random init.
    init_from: TinyModelSpec | None = None

    def architecture(self) -> dict:
        """Every field but the task: the spec as the cache digest and build_info.json have always written it.
        A warm start's source appears as its digest; without one the key is left out (old digests stay)."""
        own = [f.name for f in dataclasses.fields(self) if f.name not in ("task", "init_from")]
        fields = {name: getattr(self, name) for name in own}
        if self.init_from is not None:
            fields["init_from"] = self.init_from.digest()
        return fields

    def digest(self) -> str:
        """Names the cache directory: any change to the spec, the task or the recipe is a new model. The task
        sits under its own key (where it was before it became a field), so the default model keeps its digest."""
        recipe = {"spec": self.architecture(), "task": self.task.fields_for_digest(),
                  "alphabet": ALPHABET, "version": BUILD_VERSION}
        text = json.dumps(recipe, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:10]


# `model=tiny_long`: a curriculum. SFT from scratch on the long chains learns the per-step arithmetic too slowly
# (~0.04 greedy accuracy after 500 steps), so it continues from the default model's weights (which already
# does one step right most of the time) on `data=arith_long` (arith.LONG_SPEC), with a 512-position context and
# the dev evaluation's generation budget grown with the ~5x longer responses. SFT stops once greedy dev accuracy
# reaches the target (leaving RL room to learn) or at sft_max_steps, which bounds the build (~0.85 CPU-s a step).
TINY_LONG = TinyModelSpec(max_position=512, max_new_tokens=176, task=arith.LONG_SPEC, init_from=TinyModelSpec(),
                          sft_eval_from=300, sft_eval_every=25, target_accuracy=0.25, sft_max_steps=500)

TINY_MODELS: dict[str, TinyModelSpec] = {"tiny": TinyModelSpec(), "tiny_long": TINY_LONG}  # by `model.name`


def default_cache_dir() -> Path:
    """$RLX_CACHE, or ~/.cache/rlx when it is unset or empty (`RLX_CACHE=` must not mean the current directory)."""
    return Path(os.environ.get("RLX_CACHE") or Path.home() / ".cache" / "rlx")


def tiny_model_path(spec: TinyModelSpec, cache_dir: Path | None = None) -> Path:
    return (cache_dir or default_cache_dir()) / f"tiny-qwen2-{spec.digest()}"


def ensure_tiny_model(spec: TinyModelSpec, cache_dir: Path | None = None) -> Path:
    """Return the cached model directory, building it first if it is missing."""
    path = tiny_model_path(spec, cache_dir)
    if (path / "build_info.json").exists():
        return path
    log.info("building the tiny model into %s (one-time, a few minutes)", path)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    build_tiny_model(spec, tmp, cache_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp.rename(path)
    except OSError:  # another process finished first: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def build_tiny_model(spec: TinyModelSpec, out_dir: Path, cache_dir: Path | None = None) -> dict:
    # One thread: the model's matmuls are too small to gain from a second one, OpenMP spin-waits make two
    # threads several times slower whenever anything else runs on the machine, and a fixed thread count
    # keeps the build bitwise deterministic for a seed.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _build(spec, out_dir, cache_dir)
    finally:
        torch.set_num_threads(threads)


def _build(spec: TinyModelSpec, out_dir: Path, cache_dir: Path | None) -> dict:
    started = time.time()
    torch.manual_seed(spec.seed)
    tokenizer = build_char_tokenizer()
    model = _initial_model(spec, tokenizer, cache_dir)
    dev = arith.train_problems(spec.dev_size, seed=-1, spec=spec.task)  # a dev slice, disjoint from the test split
    steps, dev_acc = _supervised_warm_start(model, tokenizer, spec, dev)
    test_acc = greedy_accuracy(model, tokenizer, arith.test_problems(spec.task), spec.max_new_tokens)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    info = {"spec": spec.architecture(), "task": dataclasses.asdict(spec.task), "sft_steps": steps,
            "dev_accuracy": dev_acc, "test_accuracy": test_acc,
            "parameters": sum(p.numel() for p in model.parameters()), "build_seconds": time.time() - started}
    (out_dir / "build_info.json").write_text(json.dumps(info, indent=2))
    _check_tokenizer_round_trip(out_dir)
    return info


def _initial_model(spec: TinyModelSpec, tokenizer, cache_dir: Path | None) -> Qwen2ForCausalLM:
    """A seeded random init, or the weights of `spec.init_from` (built first if missing) under this spec's config:
    RoPE has no position weights, so a longer context needs no new parameters; any shape mismatch raises."""
    config = _qwen2_config(spec, tokenizer)
    if spec.init_from is None:
        return Qwen2ForCausalLM(config)
    source = ensure_tiny_model(spec.init_from, cache_dir)
    log.info("warm-starting from %s", source, extra=FILE_ONLY)
    return Qwen2ForCausalLM.from_pretrained(str(source), config=config, use_safetensors=True)


def _qwen2_config(spec: TinyModelSpec, tokenizer) -> Qwen2Config:
    return Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads,
        max_position_embeddings=spec.max_position,
        tie_word_embeddings=spec.tie_word_embeddings,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
    )


def _supervised_warm_start(model, tokenizer, spec: TinyModelSpec, dev) -> tuple[int, float]:
    """SFT until the greedy dev accuracy reaches the target; the console shows a progress bar (one line), the
    per-evaluation lines go to the log file (`rlx -v` shows them)."""
    from tqdm.auto import tqdm

    with tqdm(total=spec.sft_max_steps, desc="rlx: tiny model SFT (until dev accuracy "
              f"{spec.target_accuracy:.2f})", leave=False, disable=verbose()) as bar:
        return _sft_steps(model, tokenizer, spec, dev, bar)


def _sft_steps(model, tokenizer, spec: TinyModelSpec, dev, bar) -> tuple[int, float]:
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.sft_lr, weight_decay=0.0)
    data = arith.train_problems(spec.sft_batch_size * spec.sft_max_steps // 4, seed=spec.seed, spec=spec.task)
    accuracy = 0.0
    for step in range(1, spec.sft_max_steps + 1):
        bar.update(1)
        start = (step - 1) * spec.sft_batch_size % len(data)
        batch = data[start : start + spec.sft_batch_size]
        for group in optimizer.param_groups:
            group["lr"] = spec.sft_lr * min(1.0, step / spec.sft_warmup_steps)
        loss = _sft_loss(model, tokenizer, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step >= spec.sft_eval_from and step % spec.sft_eval_every == 0:
            accuracy = greedy_accuracy(model, tokenizer, dev, spec.max_new_tokens)
            log.info("sft step %d loss %.3f dev accuracy %.3f", step, loss.item(), accuracy, extra=FILE_ONLY)
            bar.set_postfix(loss=f"{loss.item():.3f}", dev_acc=f"{accuracy:.3f}")
            if accuracy >= spec.target_accuracy:
                return step, accuracy
    return spec.sft_max_steps, accuracy


def _sft_loss(model, tokenizer, batch) -> torch.Tensor:
    prompts = [tokenizer.encode(arith.format_prompt(p)) for p in batch]
    targets = [tokenizer.encode(p.solution) + [tokenizer.eos_token_id] for p in batch]
    ids, mask = right_pad([p + t for p, t in zip(prompts, targets)], tokenizer.pad_token_id)  # [B, L]
    labels = ids.clone()
    labels[mask == 0] = -100
    for i, prompt in enumerate(prompts):
        labels[i, : len(prompt)] = -100  # learn the solution, not the question
    return model(input_ids=ids, attention_mask=mask, labels=labels).loss


def greedy_accuracy(model, tokenizer, problems, max_new_tokens: int) -> float:
    sampler = HFSampler(model, tokenizer.eos_token_id, tokenizer.pad_token_id)
    requests = [GenRequest(tuple(tokenizer.encode(arith.format_prompt(p))), 0.0, max_new_tokens, 0) for p in problems]
    generations = sampler.generate(requests)
    correct = [integer_answer_correct(p.answer, tokenizer.decode(g.token_ids, skip_special_tokens=True))
               for p, g in zip(problems, generations)]
    return sum(correct) / max(1, len(correct))


def _check_tokenizer_round_trip(model_dir: Path) -> None:
    """Guard against the transformers trap that drops spaces/newlines (the byte-level pre-tokenizer of
    `Qwen2Tokenizer`, see rlx/models/charlevel.py): the saved tokenizer must decode what it encodes."""
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    text = "12 + 3\n=15\n#### 15"
    decoded = tokenizer.decode(tokenizer.encode(text), skip_special_tokens=True)
    if decoded != text:
        raise RuntimeError(f"tokenizer in {model_dir} does not round-trip: {text!r} -> {decoded!r}")


if __name__ == "__main__":  # pragma: no cover - manual experiments
    logging.basicConfig(level=logging.INFO)
    info = build_tiny_model(TinyModelSpec(), Path("/tmp/tiny-exp"))
    print(json.dumps(info, indent=2), math.nan)
