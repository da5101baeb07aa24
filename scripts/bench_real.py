"""The real model's speed against its own ceilings (issue 23, item 6): SmolLM2-135M-Instruct, `model=smollm2`.

    .venv/bin/python scripts/bench_real.py [--sections update,generate] [--dtypes bfloat16,float32]
        [--repeats 3] [--out bench/real.json]

(a) update: rlx's update (`Trainer.learn`: rows, frozen batch, advantages, forward + backward, grad clip, AdamW
    step) on a GRPO rollout record of +experiment=smollm2_arith's shape (8 chat prompts x 8 samples, <= 16 new
    tokens, `sampler=hf`, one torch thread), against two plain-torch references over the same rows, cut into the
    same micro-batches (`Forwards.plan`: <= 2,048 padded tokens each, longest first): the Hugging Face model's
    forward under the same autocast, the response tokens' log-probs, backward, grad clip, `torch.optim.AdamW`.
    "plain, lean": the decoder over every token and the LM head only at the positions predicting a response
    token (the FLOPs rlx computes); "plain, full logits": `model(...).logits` at every position, the usual way.
    Also timed: rlx with `train.share_prefix=false` (`rlx_unshared`; with the default each shared prefix is
    computed once, so fewer tokens than the references). They alternate, each from the same weights and
    optimizer state (restored before every run). FLOPs:
    `loss_update_flops` (rlx/models/flops.py); share of a square matmul's FLOP/s timed in the same process, dtype
    and thread count.
(b) generate: vLLM as rlx builds it on CPU (`sampler=vllm`: in-process engine, one engine thread, prefix
    caching), in each dtype, on the job's requests (the 8 x 8 chat prompts, temperature 1, <= 16 new tokens,
    stop at end of turn) and on a decode-bound load (64 requests x 64 new tokens, end of turn ignored); new
    tokens/s against the compute bound: the measured matmul peak (same dtype, one thread) over 2 FLOPs per
    matmul parameter per generated token. Also timed: the model's matmuls alone at a decode step of 64 rows
    (every nn.Linear, [64, in] x [in, out]), the rate a decode step could reach with no attention, sampling or
    engine overhead.

Every (section, dtype) runs in a fresh process, one torch thread; figures are medians over `--repeats`, in wall
and in CPU seconds: the machine is shared, so read ratios measured side by side and rates per CPU second.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
RESULT_MARK = "BENCH_RESULT "  # vLLM logs to stdout too: the child's result line is tagged
JOB = ["model=smollm2", "data=arith_chat", "algo=grpo", "train.prompts_per_step=8", "algo.samples_per_prompt=8",
       "train.max_new_tokens=16", "train.lr=1e-5"]  # +experiment=smollm2_arith's step
DECODE_REQUESTS, DECODE_TOKENS = 64, 64


def torch_dtype(name: str):
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[name]


def one_thread_peak(dtype: str) -> float:
    """The matmul ceiling on one thread in `dtype`: FLOP/s of a 1024^3 product per CPU second (the best of 20;
    CPU seconds, as every rate below, so that waiting for a core on the shared machine does not lower it)."""
    import torch

    from rlx.models.flops import matmul_peak

    torch.set_num_threads(1)
    return matmul_peak("cpu", torch_dtype(dtype), repeats=20, clock=time.process_time)


# ------------------------------------------------------------------------------------------------ (a) update
def snapshot(trainer) -> tuple[dict, list[dict]]:
    return (copy.deepcopy(trainer.policy.state_dict()),
            [copy.deepcopy(o.state_dict()) for o in trainer.optimizers])


def restore(trainer, saved) -> None:
    trainer.policy.load_state_dict(saved[0])
    for optimizer, state in zip(trainer.optimizers, saved[1]):
        optimizer.load_state_dict(state)


def plain_update(model, optimizer, packed, plan, dtype: str, lean: bool) -> float:
    """Forward, log-probs of the response tokens, backward (gradients accumulated over `plan`'s micro-batches),
    grad clip and one AdamW step: the update with nothing of rlx's around it. Returns its seconds."""
    import torch

    from rlx.models.precision import autocast_context

    start = time.perf_counter()
    count = packed.response_mask.sum()
    for rows in plan:
        mask = packed.attention_mask[rows]  # [b, L]
        width = int(mask.sum(-1).max())  # padded to this micro-batch's longest row, as rlx pads it
        ids, mask = packed.input_ids[rows, :width], mask[:, :width]  # [b, W]
        targets, valid, where = (packed.response_ids[rows], packed.response_mask[rows],
                                 packed.predict_pos[rows])  # [b, T] each
        with autocast_context(dtype, "cpu"):
            if lean:  # the decoder everywhere, the head only where a response token is predicted
                hidden = model.model(input_ids=ids, attention_mask=mask).last_hidden_state  # [b, W, H]
                states = hidden.gather(1, where[..., None].expand(-1, -1, hidden.shape[-1]))  # [b, T, H]
                logits = model.lm_head(states)  # [b, T, V]
            else:  # every position's logits, then the response positions picked
                logits = model(input_ids=ids, attention_mask=mask).logits  # [b, W, V]
                logits = logits.gather(1, where[..., None].expand(-1, -1, logits.shape[-1]))  # [b, T, V]
        logp = logits.float().log_softmax(-1).gather(-1, targets[..., None]).squeeze(-1)  # [b, T]
        (-(logp * valid).sum() / count).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def update_child(dtype: str, repeats: int, variants: list[str]) -> dict:
    """rlx's update and the references (`variants`), alternating `repeats` times on one rollout record."""
    import torch
    from bench_trl import one_thread_trainer

    from rlx.models.flops import loss_update_flops
    from rlx.train.infra import distributed as dist
    from rlx.train.metrics import PhaseTimer

    peak = one_thread_peak(dtype)
    overrides = [*JOB, "sampler=hf", f"model.dtype={dtype}", "algo.kl.beta=0.0", "train.steps=100",
                 "train.progress_bar=false"]
    with tempfile.TemporaryDirectory() as tmp:
        trainer = one_thread_trainer(overrides, tmp)
        trainer.train_step(1)  # warm-up (allocations, the optimizer's state)
        record, _ = trainer.rollouts(dist.shard(trainer.step_problems(2)), 2, PhaseTimer())
        packed = trainer.batches.build(record).packed
        rows = packed.response_mask.shape[0]  # the trained rows (with train_on_branches every node)
        shared, trainer.forwards.share_prefix = trainer.forwards.share_prefix, False
        plan = trainer.forwards.plan(packed)  # the references: rows as rlx micro-batches them unshared
        trainer.forwards.share_prefix = shared
        computed = trainer.forwards.forward_tokens(packed)  # rlx's defaults: a shared prefix's tokens once
        flops = loss_update_flops(trainer.policy, packed.attention_mask.sum(-1).tolist(),
                                  int(packed.response_mask.sum()))
        reference_adamw = torch.optim.AdamW(trainer.policy.parameters(), lr=1e-5, weight_decay=0.0)
        saved = snapshot(trainer)
        plain_update(trainer.policy, reference_adamw, packed, plan, dtype, True)  # warm-up: its AdamW state
        seconds, cpu = ({name: [] for name in variants} for _ in range(2))
        for _ in range(repeats):  # alternated: the machine's drift touches each alike
            for name in variants:
                restore(trainer, saved)
                start, cpu_start = time.perf_counter(), time.process_time()
                if name.startswith("rlx"):  # rlx_unshared: train.share_prefix=false, the same rows unshared
                    trainer.forwards.share_prefix = shared and name == "rlx"
                    trainer.learn(record, 2)
                    trainer.forwards.share_prefix = shared
                else:
                    plain_update(trainer.policy, reference_adamw, packed, plan, dtype, name == "plain_lean")
                seconds[name].append(time.perf_counter() - start)
                cpu[name].append(time.process_time() - cpu_start)
        trainer.close()
    peak = max(peak, one_thread_peak(dtype))  # the better of two readings: load only ever slows it
    return {"dtype": dtype, "seconds": seconds, "cpu_seconds": cpu, "update_flops": flops,
            "matmul_peak_flops_per_s": peak, "rows": rows, "micro_batches": len(plan),
            "forward_tokens": int(packed.attention_mask.sum()), "response_tokens": int(packed.response_mask.sum()),
            "rlx_computed_tokens": computed, "share_prefix": bool(shared),
            "padded_tokens": sum(len(r) * int(packed.attention_mask[r].sum(-1).max()) for r in plan),
            "torch_threads": torch.get_num_threads()}


def update_summary(run: dict) -> dict:
    """Medians (wall and CPU seconds), rlx / each reference (of the medians, and the median of the rounds' paired
    ratios), and each variant's share of the matmul peak: on wall seconds, and on CPU seconds (one thread: the
    seconds it really ran, the reading a loaded machine leaves intact)."""
    out: dict = {}
    for clock in ("seconds", "cpu_seconds"):
        times = run[clock]
        med = {k: statistics.median(v) for k, v in times.items()}
        rate = {k: run["update_flops"] / s for k, s in med.items()}  # FLOP/s
        out[clock] = {"median": med, "best": {k: min(v) for k, v in times.items()},
                      "peak_share": {k: r / run["matmul_peak_flops_per_s"] for k, r in rate.items()}}
        for ref in (k for k in times if k != "rlx"):  # rlx_unshared / plain_lean: the unshared path's own ratio
            out[clock][f"rlx_over_{ref}"] = med["rlx"] / med[ref]
            out[clock][f"paired_rlx_over_{ref}"] = statistics.median(a / b for a, b in zip(times["rlx"], times[ref]))
        if "rlx_unshared" in times and "plain_lean" in times:  # the same computed tokens on both sides
            out[clock]["rlx_unshared_over_plain_lean"] = med["rlx_unshared"] / med["plain_lean"]
            out[clock]["paired_rlx_unshared_over_plain_lean"] = statistics.median(
                a / b for a, b in zip(times["rlx_unshared"], times["plain_lean"]))
    return out


# ------------------------------------------------------------------------------------------------ (b) generate
def generate_child(dtype: str, repeats: int) -> dict:
    """vLLM tokens/s on the job's requests and on a decode-bound load, against the compute bound."""
    import dataclasses

    import torch
    from bench_trl import compose_config

    from rlx.data.tasks import load_task
    from rlx.models.load import load_tokenizer
    from rlx.recipes import resolve_model_path
    from rlx.sampling.base import GenRequest, request_seed
    from rlx.sampling.vllm import VLLMSampler

    peak = one_thread_peak(dtype)
    cfg = compose_config([*JOB, "sampler=vllm", f"model.dtype={dtype}"], "/tmp/unused")
    path = resolve_model_path(cfg.model)
    tokenizer = load_tokenizer(path)
    task = load_task(cfg.data, 64, 0).with_tokenizer(tokenizer)
    prompts = [tuple(tokenizer.encode(task.prompt(p))) for p in task.train[:8]]
    job = [GenRequest(p, 1.0, 16, request_seed(0, 0, "policy", i)) for i, p in enumerate(p for p in prompts
                                                                                        for _ in range(8))]
    sampler = VLLMSampler(path, tokenizer.eos_token_id, dataclasses.replace(cfg.sampler, dtype=dtype, canary_every=0))
    sampler.generate(job[:8])  # warm-up
    job_run = timed_runs(lambda: sum(len(g.token_ids) for g in sampler.generate(job)), repeats)
    decode_run = timed_runs(lambda: decode_bound(sampler, prompts), repeats)
    sampler.close()
    matmuls = decode_matmul_rate(path, dtype, repeats)
    peak = max(peak, one_thread_peak(dtype))
    return {"dtype": dtype, "job": job_run, "decode": decode_run, "matmul_peak_flops_per_s": peak, **matmuls,
            "mean_prompt_tokens": statistics.mean(map(len, prompts)), "torch_threads": torch.get_num_threads()}


def timed_runs(fn, repeats: int) -> dict:
    """Wall and CPU seconds of each of `repeats` calls of `fn` (-> new tokens). The engine runs in this process
    on one thread, so CPU seconds are the time it really computed, whatever else shares the machine."""
    out: dict = {"seconds": [], "cpu_seconds": [], "new_tokens": 0}
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        out["new_tokens"] = fn()
        out["seconds"].append(time.perf_counter() - start)
        out["cpu_seconds"].append(time.process_time() - cpu_start)
    return out


def decode_bound(sampler, prompts) -> int:
    """DECODE_REQUESTS requests of DECODE_TOKENS new tokens each, end of turn ignored, through the sampler's engine
    on its own thread count: new tokens."""
    from vllm import SamplingParams

    requests = [{"prompt_token_ids": list(prompts[i % len(prompts)])} for i in range(DECODE_REQUESTS)]
    params = [SamplingParams(max_tokens=DECODE_TOKENS, min_tokens=DECODE_TOKENS, ignore_eos=True, temperature=1.0,
                             seed=i) for i in range(DECODE_REQUESTS)]
    with sampler._engine_threads():  # rlx's engine thread count, as `generate` runs it
        outputs = sampler.llm.generate(requests, params, use_tqdm=False)
    return sum(len(o.outputs[0].token_ids) for o in outputs)


def decode_matmul_rate(path: str, dtype: str, repeats: int) -> dict:
    """FLOP/s (per CPU second) of one decode step's matmuls alone: every nn.Linear at DECODE_REQUESTS rows."""
    import torch
    from transformers import AutoModelForCausalLM

    from rlx.models.flops import matmul_params

    torch.set_num_threads(1)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype(dtype))
    weights = [m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)]
    inputs = {w.shape[1]: torch.randn(DECODE_REQUESTS, w.shape[1], dtype=w.dtype) for w in weights}  # [B, in]
    best = float("inf")
    with torch.no_grad():
        for i in range(repeats + 3):
            start = time.process_time()  # CPU seconds: see one_thread_peak
            for w in weights:
                inputs[w.shape[1]] @ w.T
            if i:  # the first pass warms up
                best = min(best, time.process_time() - start)
    params = matmul_params(model)
    return {"matmul_params": params, "decode_matmul_flops_per_s": 2.0 * params * DECODE_REQUESTS / best}


def generate_summary(run: dict) -> dict:
    """New tokens per wall second and per CPU second (medians) of each load, as shares of the compute bound and of
    the decode step's matmuls alone."""
    bound = run["matmul_peak_flops_per_s"] / (2.0 * run["matmul_params"])  # tokens/s at the matmul peak
    matmul_bound = run["decode_matmul_flops_per_s"] / (2.0 * run["matmul_params"])
    out: dict = {"compute_bound_tok_per_s": bound, "decode_step_matmuls_tok_per_s": matmul_bound}
    for load in ("job", "decode"):
        for clock in ("seconds", "cpu_seconds"):
            rate = run[load]["new_tokens"] / statistics.median(run[load][clock])
            out[f"{load}_tok_per_{clock}"] = rate
            out[f"{load}_share_of_bound_{clock}"] = rate / bound
    out["decode_share_of_step_matmuls_cpu_seconds"] = out["decode_tok_per_cpu_seconds"] / matmul_bound
    return out


# ------------------------------------------------------------------------------------------------ parent
def spawn(section: str, dtype: str, args) -> dict:
    cmd = [sys.executable, __file__, "--child", section, "--dtypes", dtype, "--repeats", str(args.repeats),
           "--references", args.references]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    lines = [x for x in proc.stdout.splitlines() if x.startswith(RESULT_MARK)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{section} {dtype} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1].removeprefix(RESULT_MARK))


def print_tables(report: dict) -> None:
    for dtype, entry in report.get("update", {}).items():
        for clock, s in entry["summary"].items():
            ratios = ", ".join(f"{k} {v:.2f}" for k, v in s.items() if "_over_" in k and not k.startswith("paired"))
            print(f"update, {dtype}, {clock}: " + ", ".join(
                f"{k} {v:.2f} s ({100 * s['peak_share'][k]:.1f}% of peak)" for k, v in s["median"].items())
                + f"; {ratios}")
    for dtype, entry in report.get("generate", {}).items():
        s = entry["summary"]
        print(f"generate, {dtype}: bound {s['compute_bound_tok_per_s']:.0f} tok/s; per wall s / CPU s: job "
              f"{s['job_tok_per_seconds']:.0f} / {s['job_tok_per_cpu_seconds']:.0f} "
              f"({100 * s['job_share_of_bound_cpu_seconds']:.1f}% of the bound per CPU s), decode "
              f"{s['decode_tok_per_seconds']:.0f} / {s['decode_tok_per_cpu_seconds']:.0f} "
              f"({100 * s['decode_share_of_bound_cpu_seconds']:.1f}%); a decode step's matmuls alone "
              f"{s['decode_step_matmuls_tok_per_s']:.0f} tok/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", default="update,generate")
    parser.add_argument("--dtypes", default="bfloat16,float32")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--references", default="rlx_unshared,plain_lean,plain_full_logits",
                        help="update: what is timed beside rlx's update with its defaults (rlx_unshared: "
                             "train.share_prefix=false; plain_*: the plain-torch references)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "real.json"))
    parser.add_argument("--child", choices=["update", "generate"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if args.child == "update":
            run = update_child(args.dtypes, args.repeats, ["rlx", *args.references.split(",")])
        else:
            run = generate_child(args.dtypes, args.repeats)
        print(RESULT_MARK + json.dumps(run), flush=True)
        return
    out = Path(args.out)
    report = json.loads(out.read_text()) if out.exists() else {}  # one section rerun keeps the others
    summaries = {"update": update_summary, "generate": generate_summary}
    for section in args.sections.split(","):
        for dtype in args.dtypes.split(","):
            run = spawn(section, dtype, args)
            load = [round(x, 2) for x in os.getloadavg()]
            report.setdefault(section, {})[dtype] = {"summary": summaries[section](run), "run": run, "load": load}
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(report, indent=1) + "\n")  # after each: an interrupted run keeps the rest
            print(f"[{section} {dtype}] done, load {load}", file=sys.stderr, flush=True)
    print_tables(report)
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
