"""Benchmark the generation backends side by side: `sampler=hf` (transformers) vs `sampler=vllm`.

    .venv/bin/python scripts/bench_sampler.py [--models tiny,20m] [--out bench/sampler.json]

Measures, per model (random init, the tiny model's architecture; `20m` = same architecture, bigger dims):
  (a) throughput: new tokens/s at batch 16, 64, 256 (temperature 1, 64 new tokens, stop at EOS);
  (b) one TRePO step's branch rollouts: 64 responses of <= 40 tokens, 4 knots each, 4 rollouts per knot
      (1024 requests whose prompts are prompt + response prefix), with vLLM prefix caching on (default
      block size, and a small block size) and off, against the same requests started from the bare prompt;
  (c) weight sync and canary time, as a share of one step (sampling + branches + trainer forward/backward).

Every vLLM configuration runs in its own process (one engine per process); the parent prints a table and
writes JSON. Timings take the best of `--repeats` runs: the machine is shared, and interference only ever
adds time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rlx.data import arith  # noqa: E402
from rlx.sampling.base import GenRequest, request_seed  # noqa: E402

MODELS = {  # TinyModelSpec overrides
    "tiny": {},
    "20m": {"hidden_size": 384, "num_layers": 12, "num_heads": 6, "num_kv_heads": 2, "intermediate_size": 1152},
}
BATCHES = (16, 64, 256)
THROUGHPUT_NEW_TOKENS = 64
RESPONSES, RESPONSE_TOKENS, KNOTS, ROLLOUTS = 64, 40, 4, 4
RESULT_MARK = "BENCH_RESULT "  # vLLM logs to stdout too: the worker's result line is tagged


# ---------------------------------------------------------------- workload
def build_model(name: str, cache: Path) -> Path:
    from transformers import Qwen2ForCausalLM

    from rlx.models.charlevel import build_char_tokenizer
    from rlx.recipes.tiny import TinyModelSpec, _qwen2_config

    out = cache / f"bench-{name}"
    if (out / "config.json").exists():
        return out
    torch.manual_seed(0)
    tokenizer = build_char_tokenizer()
    Qwen2ForCausalLM(_qwen2_config(TinyModelSpec(**MODELS[name]), tokenizer)).save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out


def prompts(tokenizer, n: int) -> list[tuple[int, ...]]:
    return [tuple(tokenizer.encode(arith.format_prompt(p))) for p in arith.train_problems(n, seed=0)]


def sample_requests(prompt_ids, max_new_tokens: int, phase: str) -> list[GenRequest]:
    return [GenRequest(p, 1.0, max_new_tokens, request_seed(0, 0, phase, i)) for i, p in enumerate(prompt_ids)]


def branch_requests(prompt_ids, responses) -> list[GenRequest]:
    """TRePO's branch rollouts: at KNOTS evenly spaced cut points of each response, ROLLOUTS continuations
    of prompt + response[:cut], each with the rest of the response budget."""
    requests = []
    for prompt, response in zip(prompt_ids, responses):
        tokens = response.token_ids
        for k in range(1, KNOTS + 1):
            cut = k * len(tokens) // (KNOTS + 1)
            for _ in range(ROLLOUTS):
                seed = request_seed(0, 0, "branch", len(requests))
                requests.append(GenRequest(prompt + tuple(tokens[:cut]), 1.0, RESPONSE_TOKENS - cut, seed))
    return requests


def from_prompt_alone(requests: list[GenRequest], prompt_of: list[tuple[int, ...]]) -> list[GenRequest]:
    """The same new-token budgets, started from the bare prompt (no response prefix to prefill)."""
    return [GenRequest(p, r.temperature, r.max_new_tokens, r.seed) for r, p in zip(requests, prompt_of)]


def timed(fn, repeats: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - started)
    return best, result


def new_tokens(generations) -> int:
    return sum(len(g.token_ids) for g in generations)


# ---------------------------------------------------------------- one backend, in this process
def make_sampler(backend: str, model_dir: Path, options: dict):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    if backend == "hf":
        from rlx.sampling.hf import HFSampler

        if options.get("threads"):
            torch.set_num_threads(options["threads"])
        return HFSampler(model, tokenizer.eos_token_id, tokenizer.pad_token_id, max_batch_size=1024), model, tokenizer
    from rlx.sampling.config import VLLMSamplerConfig
    from rlx.sampling.vllm import VLLMSampler

    sampler = VLLMSampler(str(model_dir), tokenizer.eos_token_id, VLLMSamplerConfig(dtype="float32", **options))
    return sampler, model, tokenizer


def run_worker(backend: str, model_dir: Path, options: dict, repeats: int, sections: set[str]) -> dict:
    started = time.perf_counter()
    sampler, model, tokenizer = make_sampler(backend, model_dir, options)
    result: dict = {"start_s": time.perf_counter() - started, "torch_threads": torch.get_num_threads()}
    prompt_ids = prompts(tokenizer, max(max(BATCHES), RESPONSES))
    sampler.generate(sample_requests(prompt_ids[:8], 8, "warmup"))
    if "throughput" in sections:
        result["throughput"] = throughput(sampler, prompt_ids, repeats)
    if "branch" in sections:
        result["branch"] = branch_step(sampler, model, prompt_ids[:RESPONSES], repeats)
    sampler.close()
    return result


def throughput(sampler, prompt_ids, repeats: int) -> dict:
    out = {}
    for batch in BATCHES:
        seconds, gens = timed(lambda b=batch: sampler.generate(
            sample_requests(prompt_ids[:b], THROUGHPUT_NEW_TOKENS, "throughput")), repeats)
        out[str(batch)] = {"seconds": seconds, "new_tokens": new_tokens(gens), "tok_per_s": new_tokens(gens) / seconds}
    return out


def branch_step(sampler, model, prompt_ids, repeats: int) -> dict:
    sample_s, responses = timed(lambda: sampler.generate(sample_requests(prompt_ids, RESPONSE_TOKENS, "policy")), 1)
    branches = branch_requests(prompt_ids, responses)
    alone = from_prompt_alone(branches, [p for p in prompt_ids for _ in range(KNOTS * ROLLOUTS)])
    branch_s, branch_gens = timed(lambda: sampler.generate(branches), repeats)
    alone_s, alone_gens = timed(lambda: sampler.generate(alone), repeats)
    out = {"requests": len(branches), "sample_s": sample_s, "branch_s": branch_s,
           "branch_new_tokens": new_tokens(branch_gens), "prefix_tokens": sum(len(r.prompt_ids) for r in branches),
           "alone_s": alone_s, "alone_new_tokens": new_tokens(alone_gens)}
    out["train_fwd_bwd_s"] = trainer_step_seconds(model, prompt_ids, responses)
    if hasattr(sampler, "llm"):
        out.update(sync_cost(sampler, model, repeats))
    return out


def trainer_step_seconds(model, prompt_ids, responses) -> float:
    """One forward + backward of the policy loss's shape over the step's responses (stand-in for training)."""
    from rlx.sampling.hf import right_pad

    ids, mask = right_pad([list(p) + r.token_ids for p, r in zip(prompt_ids, responses)], 0)
    model.train()
    started = time.perf_counter()
    logp = model(input_ids=ids, attention_mask=mask).logits.log_softmax(-1)
    (logp[:, :-1].gather(-1, ids[:, 1:, None]).squeeze(-1) * mask[:, 1:]).sum().backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - started


def sync_cost(sampler, model, repeats: int) -> dict:
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.001)  # a real change, so the canary compares new weights
    sync_s, _ = timed(lambda: sampler.sync_weights(model), repeats)
    return {"sync_s": sampler.last_sync_seconds, "canary_s": sampler.last_canary_seconds,
            "sync_plus_canary_s": sync_s, "canary_gap": sampler.last_canary_gap}


# ---------------------------------------------------------------- parent: run everything, report
def vllm_configs(block_size_small: int) -> dict[str, dict]:
    return {
        "vllm": {"enable_prefix_caching": True},
        f"vllm-block{block_size_small}": {"enable_prefix_caching": True, "block_size": block_size_small},
        "vllm-noprefix": {"enable_prefix_caching": False},
    }


def spawn(backend: str, model_dir: Path, options: dict, repeats: int, sections: set[str]) -> dict:
    args = [sys.executable, __file__, "--worker", backend, "--model-dir", str(model_dir), "--options",
            json.dumps(options), "--repeats", str(repeats), "--sections", ",".join(sorted(sections))]
    done = subprocess.run(args, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if done.returncode != 0:
        return {"error": done.stderr[-2000:]}
    line = next(x for x in reversed(done.stdout.splitlines()) if x.startswith(RESULT_MARK))
    return json.loads(line.removeprefix(RESULT_MARK))


def run_all(models: list[str], cache: Path, repeats: int, block_size_small: int, out: Path) -> dict:
    report: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                "torch": torch.__version__, "load_avg_at_start": os.getloadavg()},
                    "workload": {"batches": BATCHES, "throughput_new_tokens": THROUGHPUT_NEW_TOKENS,
                                 "responses": RESPONSES, "response_tokens": RESPONSE_TOKENS, "knots": KNOTS,
                                 "rollouts": ROLLOUTS, "repeats": repeats}, "models": {}}
    for name in models:
        model_dir = build_model(name, cache)
        runs = {"hf": spawn("hf", model_dir, {}, repeats, {"throughput", "branch"}),
                "hf-1thread": spawn("hf", model_dir, {"threads": 1}, repeats, {"throughput", "branch"})}
        for label, options in vllm_configs(block_size_small).items():
            sections = {"throughput", "branch"} if label == "vllm" else {"branch"}
            runs[label] = spawn("vllm", model_dir, options, repeats, sections)
            print(f"[{name}] {label} done", file=sys.stderr)
        report["models"][name] = {"parameters": count_parameters(model_dir), "runs": runs}
        write_json(report, out)  # after each model: a long run interrupted later keeps what it measured
    return report


def write_json(report: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))


def count_parameters(model_dir: Path) -> int:
    from safetensors import safe_open

    with safe_open(str(model_dir / "model.safetensors"), "pt") as f:
        return sum(f.get_tensor(k).numel() for k in f.keys())  # noqa: SIM118 (safe_open is not iterable)


def print_tables(report: dict) -> None:
    for name, entry in report["models"].items():
        runs = entry["runs"]
        print(f"\n## {name} ({entry['parameters'] / 1e6:.1f}M parameters)")
        for label, run in runs.items():
            if "error" in run:
                print(f"{label}: FAILED\n{run['error']}")
        print("\n(a) throughput, new tokens/s (temperature 1, <= 64 new tokens)")
        print("| backend | " + " | ".join(f"batch {b}" for b in BATCHES) + " |")
        print("|---|" + "---|" * len(BATCHES))
        for label in ("hf", "hf-1thread", "vllm"):
            tp = runs.get(label, {}).get("throughput", {})
            print(f"| {label} | " + " | ".join(f"{tp[str(b)]['tok_per_s']:.0f}" if str(b) in tp else "-"
                                              for b in BATCHES) + " |")
        print(f"\n(b) one TRePO step's branch rollouts ({RESPONSES} responses x {KNOTS} knots x {ROLLOUTS} rollouts)")
        print("| backend | requests | branch s | new tok | branch tok/s | same budgets from prompt alone s | tok/s |")
        print("|---|---|---|---|---|---|---|")
        for label, run in runs.items():
            b = run.get("branch")
            if b:
                print(f"| {label} | {b['requests']} | {b['branch_s']:.2f} | {b['branch_new_tokens']} | "
                      f"{b['branch_new_tokens'] / b['branch_s']:.0f} | {b['alone_s']:.2f} | "
                      f"{b['alone_new_tokens'] / b['alone_s']:.0f} |")
        print("\n(c) weight sync + canary as a share of one step (sample + branches + trainer fwd/bwd)")
        for label, run in runs.items():
            b = run.get("branch", {})
            if "sync_s" in b:
                step = b["sample_s"] + b["branch_s"] + b["train_fwd_bwd_s"] + b["sync_plus_canary_s"]
                print(f"- {label}: sync {b['sync_s'] * 1e3:.1f} ms, canary {b['canary_s'] * 1e3:.1f} ms, "
                      f"step {step:.2f} s (sample {b['sample_s']:.2f}, branches {b['branch_s']:.2f}, train "
                      f"{b['train_fwd_bwd_s']:.2f}) -> {100 * b['sync_plus_canary_s'] / step:.2f}% of the step; "
                      f"engine start {run['start_s']:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny,20m")
    parser.add_argument("--out", default=str(ROOT / "bench" / "sampler.json"))
    parser.add_argument("--cache", default="/tmp/rlx-bench-models")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--block-size", type=int, default=32, help="the small vLLM block size to compare")
    parser.add_argument("--print-only", action="store_true", help="print the tables of an existing --out file")
    parser.add_argument("--worker", choices=["hf", "vllm"], help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--options", default="{}", help=argparse.SUPPRESS)
    parser.add_argument("--sections", default="throughput,branch", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        result = run_worker(args.worker, Path(args.model_dir), json.loads(args.options), args.repeats,
                            set(args.sections.split(",")))
        print(RESULT_MARK + json.dumps(result), flush=True)
        return
    if args.print_only:
        print_tables(json.loads(Path(args.out).read_text()))
        return
    report = run_all(args.models.split(","), Path(args.cache), args.repeats, args.block_size, Path(args.out))
    print_tables(report)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
