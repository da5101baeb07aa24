"""Scale rehearsal (issue 9, item 6): one full update of a real-width Qwen2 at real batch sizes.

    .venv/bin/python scripts/bench_scale.py [--sequences 32,64,128] [--response-tokens 256] [--layers 1]
        [--shape 0.5b] [--device cpu|cuda] [--dtype float32|bfloat16] [--micro-batch-size 2]
        [--unsplit 4,8] [--out bench/scale.json]

A random-initialised `Qwen2ForCausalLM` of Qwen2.5-0.5B's width, heads and vocabulary (151,936; reduced
depth, `--layers`) and the offline Qwen2 BPE tokenizer (rlx/models/qwen_tokenizer.py) build the batch: chat-
templated GSM8K-style prompts and BPE-tokenised multi-line responses cut to `--response-tokens`. One
update = old log-probs (no grad), GRPO advantages from seeded 0/1 rewards, the clipped loss, backward,
clip and an AdamW step - through rlx's own `response_logprobs`, `pack`, and the registered GRPO algorithm.

Each configuration runs in a fresh subprocess, which reports its own peak resident memory
(`resource.getrusage(RUSAGE_SELF).ru_maxrss`) and, on CUDA, `torch.cuda.max_memory_allocated`. The parent
prints a table and writes `{"rows": [{"sequences", "micro_batched", "peak_rss_gb", "seconds", ...}]}`.
`--cpu-smoke` runs a tiny shape (a 64-wide model with the real vocabulary, 2 x 2 sequences of 8 tokens),
for tests and scripts/gpu_check.sh's dry run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SMOKE = dict(sequences="2,4", response_tokens=8, layers=1, hidden=64, heads=2, kv_heads=1, intermediate=128,
             micro_batch_size=2, unsplit="2,4")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sequences", default="32,64,128", help="comma-separated batch sizes (sequences per update)")
    p.add_argument("--response-tokens", type=int, default=256)
    p.add_argument("--shape", default="0.5b", help="Qwen2.5 shape: 0.5b | 1.5b")
    p.add_argument("--layers", type=int, default=1, help="decoder layers (reduced depth; the real widths)")
    p.add_argument("--hidden", type=int, default=None, help="override hidden_size (with --heads, ...)")
    p.add_argument("--heads", type=int, default=None)
    p.add_argument("--kv-heads", type=int, default=None)
    p.add_argument("--intermediate", type=int, default=None)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                   help="bfloat16 = autocast over fp32 master weights (the loss stays fp32)")
    p.add_argument("--micro-batch-size", type=int, default=2, help="sequences per forward pass when micro-batched")
    p.add_argument("--unsplit", default="4,8", help="batch sizes also measured unsplit (the unsplit path needs ~0.8 GB "
                   "per sequence at this width on CPU; '' = none)")
    p.add_argument("--threads", type=int, default=0, help="torch threads in the child (0 = torch's default)")
    p.add_argument("--out", default="bench/scale.json")
    p.add_argument("--cpu-smoke", action="store_true", help="tiny shape on CPU: checks the harness end to end")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)  # JSON spec of one configuration
    args = p.parse_args(argv)
    if args.cpu_smoke:
        for key, value in SMOKE.items():
            setattr(args, key, value)
        args.device, args.dtype = "cpu", "float32"
    return args


# ---------------------------------------------------------------------------------------------- batch
def make_token_batch(num: int, response_tokens: int, seed: int = 0) -> tuple[list[list[int]], list[list[int]]]:
    """Chat-templated prompts and multi-line responses through the real Qwen2 BPE, responses cut to length."""
    import random

    from rlx.models.qwen_tokenizer import build_qwen2_tokenizer

    tok = build_qwen2_tokenizer()
    rng = random.Random(seed)
    prompts, responses = [], []
    for _ in range(num):
        a, b = rng.randint(100, 999), rng.randint(100, 999)  # 3 digits: every prompt has the same length
        question = f"Natalia sold {a} clips in April and {b} in May. How many clips did she sell altogether?"
        messages = [{"role": "user", "content": question + " Let's think step by step."}]
        prompts.append(tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=True,
                                               return_dict=False))
        lines = [f"Step {k}: {a} + {k * b} = {a + k * b}, so the running total is {a + k * b} clips." for k in
                 range(1, response_tokens // 8 + 2)]
        ids = tok.encode("\n".join(lines))[:response_tokens]
        responses.append(ids + [tok.eos_token_id] * (response_tokens - len(ids)))
    return prompts, responses


# ---------------------------------------------------------------------------------------------- update
def rows_of(packed, idx):
    """The PackedBatch of rows `idx` (a slice of sequences)."""
    from rlx.train.logprobs import PackedBatch

    return PackedBatch(packed.input_ids[idx], packed.attention_mask[idx], packed.response_ids[idx],
                       packed.response_mask[idx], packed.predict_pos[idx])


def micro_slices(batch_size: int, micro: int | None) -> list[slice]:
    step = micro or batch_size
    return [slice(i, min(i + step, batch_size)) for i in range(0, batch_size, step)]


def logprobs(model, packed, autocast_dtype, with_entropy=False):
    # INTEGRATION: switch to the kernels helper's lean `rlx.models.logprobs.response_logprobs` (logits only at
    # response positions, chunked log-softmax) once merged; today's rlx.train.logprobs one is unsplit in T x V.
    from rlx.train.logprobs import model_device, response_logprobs

    with torch_autocast(model_device(model), autocast_dtype):
        return response_logprobs(model, packed, with_entropy=with_entropy)


def torch_autocast(device, dtype):
    import torch

    return torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype is not None)


def run_update(model, optimizer, packed, rewards, group_ids, micro: int | None, autocast_dtype) -> dict:
    """One GRPO update through rlx's algorithm. INTEGRATION: replace this body by the core helper's micro-
    batched update (the loop's `optimize` with `train.micro_batch_size=micro` / `micro_batch_tokens`) once
    merged; this local version accumulates token_mean gradients exactly (each micro-batch's loss weighted by
    its share of the step's valid tokens)."""
    import torch

    from rlx import algos
    from rlx.algos.base import AdvantageInputs, LossInputs
    from rlx.algos.common import terminal_rewards
    from rlx.algos.grpo import GRPOConfig

    algo, cfg = algos.get("grpo"), GRPOConfig(loss_agg="token_mean")
    mask = packed.response_mask  # [B, T]
    times = {}
    start = time.perf_counter()
    with torch.no_grad():
        old_logp = torch.cat([logprobs(model, rows_of(packed, s), autocast_dtype)[0]
                              for s in micro_slices(len(mask), micro)])  # [B, T]
    times["old_logprobs_s"] = time.perf_counter() - start
    inputs = AdvantageInputs(token_rewards=terminal_rewards(rewards, mask), response_mask=mask, group_ids=group_ids)
    advantages = algo.advantages(inputs, cfg).detach()  # [B, T]
    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    total = mask.sum()
    for s in micro_slices(len(mask), micro):
        logp, entropy = logprobs(model, rows_of(packed, s), autocast_dtype, with_entropy=True)
        loss_in = LossInputs(logp=logp, old_logp=old_logp[s], advantages=advantages[s], response_mask=mask[s],
                             group_ids=group_ids[s], entropy=entropy)
        loss, _ = algo.policy_loss(loss_in, cfg)
        (loss * (mask[s].sum() / total)).backward()  # token_mean over the whole step's tokens
    times["loss_backward_s"] = time.perf_counter() - start
    start = time.perf_counter()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    times["optimizer_s"] = time.perf_counter() - start
    return times


# ---------------------------------------------------------------------------------------------- child
def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def child(spec: dict) -> dict:
    """One configuration in this (fresh) process: build, pack, one update; measure peak memory and time."""
    import torch

    from rlx.models.qwen_tokenizer import random_qwen2
    from rlx.train.logprobs import pack

    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    overrides = {k: v for k, v in spec["overrides"].items() if v is not None}
    # fp32 master weights; bf16 only inside autocast
    model = random_qwen2(spec["shape"], spec["layers"], seed=0, device=spec["device"], **overrides).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)
    tokens = json.loads(Path(spec["tokens"]).read_text())
    n, group = spec["sequences"], 8
    packed = pack(tokens["prompts"][:n], tokens["responses"][:n], pad_id=tokens["pad_id"])
    rewards = torch.Generator().manual_seed(0)
    rewards = torch.randint(0, 2, (n,), generator=rewards).float()  # [B] 0/1 outcome rewards
    group_ids = torch.arange(n) // group  # [B] groups of 8 samples
    autocast = torch.bfloat16 if spec["dtype"] == "bfloat16" else None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    phases = run_update(model, optimizer, packed, rewards, group_ids, spec["micro"], autocast)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    row = {"sequences": n, "micro_batched": spec["micro"] is not None, "micro_batch_size": spec["micro"],
           "peak_rss_gb": round(peak_rss_gb(), 3), "seconds": round(seconds, 3),
           "tokens": int(packed.attention_mask.sum()), "response_tokens": int(packed.response_mask.sum()),
           "tokens_per_s": round(float(packed.attention_mask.sum()) / seconds, 1),
           **{k: round(v, 3) for k, v in phases.items()}}
    if device.type == "cuda":
        row["peak_cuda_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
    return row


# ---------------------------------------------------------------------------------------------- parent
def configurations(args) -> list[tuple[int, int | None]]:
    sizes = [int(s) for s in args.sequences.split(",")]
    runs = [(n, args.micro_batch_size) for n in sizes]
    runs += [(int(n), None) for n in args.unsplit.split(",") if n.strip()]
    return runs


def run_child(args, tokens_file: str, n: int, micro: int | None) -> dict:
    spec = {"sequences": n, "micro": micro, "tokens": tokens_file, "shape": args.shape, "layers": args.layers,
            "device": args.device, "dtype": args.dtype, "threads": args.threads,
            "overrides": {"hidden_size": args.hidden, "num_attention_heads": args.heads,
                          "num_key_value_heads": args.kv_heads, "intermediate_size": args.intermediate}}
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True)
    if proc.returncode != 0:  # e.g. the unsplit path out of memory: recorded, never silently dropped
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
        return {"sequences": n, "micro_batched": micro is not None, "micro_batch_size": micro,
                "error": tail[0][:300], "returncode": proc.returncode}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(rows: list[dict]) -> str:
    lines = [f"{'sequences':>9} {'micro':>6} {'peak RSS GB':>11} {'CUDA GB':>8} {'seconds':>8} {'tok/s':>8}"]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['sequences']:>9} {str(r['micro_batch_size'] or '-'):>6}  failed: {r['error']}")
            continue
        cuda = f"{r['peak_cuda_gb']:.2f}" if "peak_cuda_gb" in r else "-"
        lines.append(f"{r['sequences']:>9} {str(r['micro_batch_size'] or '-'):>6} {r['peak_rss_gb']:>11.2f} "
                     f"{cuda:>8} {r['seconds']:>8.1f} {r['tokens_per_s']:>8.0f}")
    return "\n".join(lines)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.child is not None:
        print(json.dumps(child(json.loads(args.child))))
        return {}
    largest = max(n for n, _ in configurations(args))
    prompts, responses = make_token_batch(largest, args.response_tokens)
    from rlx.models.qwen_tokenizer import NUM_BPE_RANKS

    with tempfile.TemporaryDirectory() as tmp:
        tokens_file = os.path.join(tmp, "tokens.json")
        Path(tokens_file).write_text(json.dumps({"prompts": prompts, "responses": responses,
                                                 "pad_id": NUM_BPE_RANKS}))
        rows = []
        for n, micro in configurations(args):
            rows.append(run_child(args, tokens_file, n, micro))
            print(table(rows[-1:]).splitlines()[-1], flush=True)
    result = {"rows": rows, "shape": args.shape, "layers": args.layers, "device": args.device, "dtype": args.dtype,
              "response_tokens": args.response_tokens, "prompt_tokens": len(prompts[0]),
              "overrides": {"hidden": args.hidden, "heads": args.heads, "kv_heads": args.kv_heads,
                            "intermediate": args.intermediate},
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version()}}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(table(rows))
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
