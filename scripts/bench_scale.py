"""Scale rehearsal (issue 9, item 6): one full update of a real-width Qwen2 at real batch sizes.

    .venv/bin/python scripts/bench_scale.py [--sequences 32,64,128] [--response-tokens 256] [--layers 1]
        [--shape 0.5b] [--device cpu|cuda] [--dtype float32|bfloat16] [--micro-batch-size 2]
        [--unsplit 4,8] [--micro-batch-tokens N] [--share-prefix off|on|both] [--group-prompts 8]
        [--out bench/scale.json]

A random-initialised `Qwen2ForCausalLM` of Qwen2.5-0.5B's width, heads and vocabulary (151,936; reduced
depth, `--layers`) and the offline Qwen2 BPE tokenizer (rlx/models/qwen_tokenizer.py) build the batch: chat-
templated GSM8K-style prompts and BPE-tokenised multi-line responses cut to `--response-tokens`. One
update goes through the trainer's own parts, wired as `rlx.train.loop` wires them, with a RunConfig from
`rlx.config.parse_run_config`: `Forwards` (micro-batches of `train.micro_batch_size` sequences, autocast,
the lean chunked log-probs of rlx/models/logprobs.py), pi_old's log-probs (a frozen no-grad pass, or the
loss pass's own when the ratio is identically 1, as in the trainer with one epoch and one mini-batch), GRPO
advantages from seeded 0/1 rewards, and `Updater.run` (loss, backward with exact gradient accumulation,
clip, AdamW step). `--optimization-num 2` forces the separate frozen pass (and two optimizer steps).

`--micro-batch-tokens N` caps each forward pass at N computed tokens (`train.micro_batch_tokens`; with
`train.share_prefix` a shared prefix counts once) instead of `--micro-batch-size` sequences; `--share-prefix`
picks the setting(s) measured (`both`: each size unshared and shared), and `--group-prompts G` gives the G
samples of a group one prompt (their responses differ), as a GRPO group has, so there is a prefix to share.

Each configuration runs in a fresh subprocess, which reports its own peak resident memory
(`resource.getrusage(RUSAGE_SELF).ru_maxrss`), the update's own peak (`update_peak_rss_gb`: the kernel's
high-water mark VmHWM, reset through /proc/self/clear_refs just before the update; `update_rss_growth_gb`:
that peak less the resident memory before it: model, data and batch built) and, on CUDA,
`torch.cuda.max_memory_allocated`. The parent
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
    p.add_argument("--micro-batch-tokens", type=int, default=None, help="computed tokens per forward pass "
                   "(train.micro_batch_tokens; replaces --micro-batch-size)")
    p.add_argument("--share-prefix", default="off", choices=["off", "on", "both"], help="train.share_prefix")
    p.add_argument("--group-prompts", type=int, default=1, help="samples per prompt in the batch (1: every "
                   "sequence its own prompt)")
    p.add_argument("--unsplit", default="4,8", help="batch sizes also measured unsplit (the unsplit path needs ~0.8 GB "
                   "per sequence at this width on CPU; '' = none)")
    p.add_argument("--optimization-num", type=int, default=1, help="algo.optimization_num (epochs); 1 = the loss "
                   "pass's log-probs serve as pi_old's, >1 = a separate frozen pass")
    p.add_argument("--threads", type=int, default=1, help="torch threads in the child (0 = torch's default)")
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
def make_token_batch(num: int, response_tokens: int, seed: int = 0, group: int = 1,
                     ) -> tuple[list[list[int]], list[list[int]]]:
    """Chat-templated prompts and multi-line responses through the real Qwen2 BPE, responses cut to length;
    `group` consecutive sequences ask their first one's question (each answers with its own numbers)."""
    import random

    from rlx.models.qwen_tokenizer import build_qwen2_tokenizer

    tok = build_qwen2_tokenizer()
    rng = random.Random(seed)
    prompts, responses = [], []
    for _ in range(num):
        a, b = rng.randint(100, 999), rng.randint(100, 999)  # 3 digits: every prompt has the same length
        if len(prompts) % group:  # a later sample of a group: its first one's prompt
            prompts.append(prompts[-1])
        else:
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
def run_config(sequences: int, micro: int | None, dtype: str = "float32", optimization_num: int = 1,
               loss_agg: str | None = None, group: int = 8, grad_clip: float = 1.0,
               micro_batch_tokens: int | None = None, share_prefix: bool = False):
    """The RunConfig of one rehearsal update, through rlx's own parser (`parse_run_config`): GRPO with groups of
    `group` samples, `train.micro_batch_size=micro` sequences per forward pass (None: the whole batch in one
    pass) or `micro_batch_tokens` computed tokens, `train.share_prefix`, `model.dtype`, and the algorithm's
    defaults otherwise (`loss_agg=None`: GRPO's own)."""
    from rlx.config import parse_run_config

    algo = {"name": "grpo", "samples_per_prompt": group, "optimization_num": optimization_num}
    if loss_agg is not None:
        algo["loss_agg"] = loss_agg
    prompts = max(1, sequences // group)
    train = {"prompts_per_step": prompts, "micro_batch_tokens": micro_batch_tokens,
             "micro_batch_size": micro or sequences, "mini_batches": 1, "lr": 1e-6, "grad_clip": grad_clip,
             "steps": 1, "share_prefix": share_prefix}
    return parse_run_config({"seed": 0, "output_dir": "bench/scale-run", "algo": algo, "train": train,
                             "model": {"dtype": dtype}, "reward_model": {"name": "arith"},
                             "sampler": {"name": "hf"}, "data": {"name": "arith"}})


def run_update(model, packed, rewards, group_ids, cfg) -> dict:
    """One training step's update through the trainer's own parts, as `rlx.train.loop` wires them: `Forwards`
    (micro-batches, autocast, lean chunked log-probs), pi_old's log-probs from a frozen no-grad pass or, when
    the ratio is identically 1 (`update.freezes_old_logprobs` is False), the loss pass's own; GRPO's advantages; and
    `Updater.run` (per-micro-batch loss + backward with exact accumulation, clip, AdamW step). -> phase seconds."""

    from rlx import algos
    from rlx.algos.base import AdvantageInputs
    from rlx.algos.stats import terminal_rewards
    from rlx.models.logprobs import attention_pair_cost, model_device
    from rlx.train.learn.batch import FrozenBatch
    from rlx.train.learn.forwards import Forwards
    from rlx.train.learn.update import Updater, freezes_old_logprobs
    from rlx.train.setup import build_optimizers

    algo = algos.get(cfg.algo.name)
    device = model_device(model)
    forwards = Forwards(cfg.train.micro_batch_tokens, cfg.train.micro_batch_size, cfg.model.dtype, device,
                        cfg.model.logprob_chunk, share_prefix=cfg.train.shares_prefixes(device.type),
                        pair_cost=attention_pair_cost(model))
    updater = Updater(cfg, algo, model, None, build_optimizers(cfg, model, None), forwards)
    mask = packed.response_mask  # [B, T]
    times = {}
    start = time.perf_counter()
    old_logp = forwards.frozen_logprobs(model, packed) if freezes_old_logprobs(cfg) else None  # [B, T]
    times["old_logprobs_s"] = time.perf_counter() - start
    inputs = AdvantageInputs(token_rewards=terminal_rewards(rewards, mask), response_mask=mask, group_ids=group_ids)
    advantages = algo.advantages(inputs, cfg.algo).detach()  # [B, T]
    start = time.perf_counter()
    # outcome-supervised GRPO reads no step boundaries
    metrics = updater.run(FrozenBatch(packed, group_ids, [[] for _ in range(len(mask))], old_logp=old_logp,
                                      advantages=advantages), step=1)
    times["update_s"] = time.perf_counter() - start
    plan = forwards.plan(packed)
    times["micro_batches"] = len(plan)
    times["tokens_forward"] = forwards.forward_tokens(packed)
    times["max_computed_tokens"] = max(computed_tokens(forwards, packed, rows) for rows in plan)
    times["old_logprobs"] = "loss pass (reused)" if old_logp is None else "frozen pass"
    times["loss"], times["grad_norm"] = metrics["loss"], metrics["grad_norm"]
    return times


def computed_tokens(forwards, packed, rows) -> int:
    """Token slots one micro-batch's forward computes (padding included; a shared prefix once)."""
    return forwards.computed_tokens(forwards.select(packed, rows))


# ---------------------------------------------------------------------------------------------- child
def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def proc_status_gb(field: str) -> float:
    """A `VmRSS`/`VmHWM` line of /proc/self/status in GiB (Linux: kB)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 2**20
    raise KeyError(field)


def reset_peak_rss() -> float:
    """Resets the kernel's resident high-water mark (VmHWM; Linux >= 4.0) -> the resident GiB now."""
    import gc

    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")
    return proc_status_gb("VmRSS")


def child(spec: dict) -> dict:
    """One configuration in this (fresh) process: build, pack, one update; measure peak memory and time."""
    import torch

    from rlx.models.logprobs import pack
    from rlx.models.qwen_tokenizer import random_qwen2

    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    overrides = {k: v for k, v in spec["overrides"].items() if v is not None}
    # fp32 master weights; bf16 only inside autocast
    model = random_qwen2(spec["shape"], spec["layers"], seed=0, device=spec["device"], **overrides).train()
    tokens = json.loads(Path(spec["tokens"]).read_text())
    n, group = spec["sequences"], 8
    packed = pack(tokens["prompts"][:n], tokens["responses"][:n], pad_id=tokens["pad_id"])
    rewards = torch.Generator().manual_seed(0)
    rewards = torch.randint(0, 2, (n,), generator=rewards).float()  # [B] 0/1 outcome rewards
    group_ids = torch.arange(n) // group  # [B] groups of 8 samples
    cfg = run_config(n, spec["micro"], spec["dtype"], spec["optimization_num"], group=group,
                     micro_batch_tokens=spec.get("micro_batch_tokens"), share_prefix=spec.get("share", False))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    before = reset_peak_rss()
    start = time.perf_counter()
    phases = run_update(model, packed, rewards, group_ids, cfg)
    update_peak = proc_status_gb("VmHWM")
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    row = {"sequences": n, "micro_batched": spec["micro"] is not None, "micro_batch_size": spec["micro"],
           "micro_batch_tokens": spec.get("micro_batch_tokens"), "share_prefix": spec.get("share", False),
           "peak_rss_gb": round(peak_rss_gb(), 3), "update_peak_rss_gb": round(update_peak, 3),
           "update_rss_growth_gb": round(update_peak - before, 3), "seconds": round(seconds, 3),
           "tokens": int(packed.attention_mask.sum()), "response_tokens": int(packed.response_mask.sum()),
           "tokens_per_s": round(float(packed.attention_mask.sum()) / seconds, 1),
           **{k: round(v, 3) if isinstance(v, float) else v for k, v in phases.items()}}
    if device.type == "cuda":
        row["peak_cuda_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
    row.update(flop_rates(model, packed, phases, seconds, spec))
    return row


def flop_rates(model, packed, phases: dict, seconds: float, spec: dict) -> dict:
    """The update's achieved FLOP/s (rlx/models/flops.py: real tokens only) against a square matmul's measured
    FLOP/s on the same device, dtype (bf16 under autocast) and thread count."""
    import torch

    from rlx.models.flops import matmul_peak, update_flops

    lengths = packed.attention_mask.sum(1).tolist()  # [B] real tokens per sequence
    frozen = 0 if phases["old_logprobs"].startswith("loss pass") else 1
    achieved = update_flops(model, lengths, frozen) / seconds
    peak = matmul_peak(spec["device"], torch.bfloat16 if spec["dtype"] == "bfloat16" else torch.float32)
    return {"update_tflops": round(achieved / 1e12, 4), "matmul_peak_tflops": round(peak / 1e12, 4),
            "peak_share": round(achieved / peak, 4)}


# ---------------------------------------------------------------------------------------------- parent
def configurations(args) -> list[tuple[int, int | None, bool]]:
    """(sequences, sequences per micro-batch or None = unsplit, share_prefix) of every run, in order."""
    sizes = [int(s) for s in args.sequences.split(",")]
    shares = {"off": [False], "on": [True], "both": [False, True]}[args.share_prefix]
    runs = [(n, args.micro_batch_size, share) for n in sizes for share in shares]
    runs += [(int(n), None, False) for n in args.unsplit.split(",") if n.strip()]
    return runs


def run_child(args, tokens_file: str, n: int, micro: int | None, share: bool = False) -> dict:
    tokens_cap = args.micro_batch_tokens if micro is not None else None
    spec = {"sequences": n, "micro": micro, "tokens": tokens_file, "shape": args.shape, "layers": args.layers,
            "device": args.device, "dtype": args.dtype, "threads": args.threads,
            "optimization_num": args.optimization_num, "micro_batch_tokens": tokens_cap, "share": share,
            "overrides": {"hidden_size": args.hidden, "num_attention_heads": args.heads,
                          "num_key_value_heads": args.kv_heads, "intermediate_size": args.intermediate}}
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True)
    if proc.returncode != 0:  # e.g. the unsplit path out of memory: recorded, never silently dropped
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
        return {"sequences": n, "micro_batched": micro is not None, "micro_batch_size": micro,
                "micro_batch_tokens": tokens_cap, "share_prefix": share, "error": tail[0][:300],
                "returncode": proc.returncode}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def micro_label(r: dict) -> str:
    """The micro-batch cap of a row: `<N>tok` (computed tokens), `<N>` sequences, or '-' (unsplit)."""
    if not r["micro_batched"]:
        return "-"
    return f"{r['micro_batch_tokens']}tok" if r.get("micro_batch_tokens") else str(r["micro_batch_size"])


def table(rows: list[dict]) -> str:
    lines = [f"{'sequences':>9} {'micro':>8} {'shared':>6} {'peak RSS GB':>11} {'update peak':>11} "
             f"{'growth GB':>9} {'CUDA GB':>8} {'fwd tok':>8} {'max mb tok':>10} {'seconds':>8} {'tok/s':>8} "
             f"{'TFLOP/s':>8} {'% peak':>7}"]
    for r in rows:
        head = f"{r['sequences']:>9} {micro_label(r):>8} {'yes' if r.get('share_prefix') else 'no':>6}"
        if "error" in r:
            lines.append(f"{head}  failed: {r['error']}")
            continue
        cuda = f"{r['peak_cuda_gb']:.2f}" if "peak_cuda_gb" in r else "-"
        lines.append(f"{head} {r['peak_rss_gb']:>11.2f} {r['update_peak_rss_gb']:>11.2f} "
                     f"{r['update_rss_growth_gb']:>9.3f} {cuda:>8} {r['tokens_forward']:>8} "
                     f"{r['max_computed_tokens']:>10} {r['seconds']:>8.1f} {r['tokens_per_s']:>8.0f} "
                     f"{r['update_tflops']:>8.3f} {100 * r['peak_share']:>6.1f}%")
    return "\n".join(lines)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.child is not None:
        print(json.dumps(child(json.loads(args.child))))
        return {}
    largest = max(n for n, *_ in configurations(args))
    prompts, responses = make_token_batch(largest, args.response_tokens, group=args.group_prompts)
    from rlx.models.qwen_tokenizer import NUM_BPE_RANKS

    with tempfile.TemporaryDirectory() as tmp:
        tokens_file = os.path.join(tmp, "tokens.json")
        Path(tokens_file).write_text(json.dumps({"prompts": prompts, "responses": responses,
                                                 "pad_id": NUM_BPE_RANKS}))
        rows = []
        for n, micro, share in configurations(args):
            rows.append(run_child(args, tokens_file, n, micro, share))
            print(table(rows[-1:]).splitlines()[-1], flush=True)
    result = {"rows": rows, "shape": args.shape, "layers": args.layers, "device": args.device, "dtype": args.dtype,
              "response_tokens": args.response_tokens, "prompt_tokens": len(prompts[0]), "threads": args.threads,
              "optimization_num": args.optimization_num, "micro_batch_tokens": args.micro_batch_tokens,
              "group_prompts": args.group_prompts,
              "command": " ".join(["scripts/bench_scale.py", *(sys.argv[1:] if argv is None else argv)]),
              "update": "rlx.train.learn.forwards.Forwards + "
              "rlx.train.learn.update.Updater (the trainer's own)",
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
