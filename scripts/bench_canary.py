"""Cost of the vLLM weight-sync canary per sync, and its gap, in fp32 and in bf16 (fp32 master weights).

    .venv/bin/python scripts/bench_canary.py [--dtypes float32,bfloat16] [--repeats 5]

For each dtype, in its own process (one engine per process): the project's tiny model as the trainer's fp32
module, a `VLLMSampler` in that dtype with `canary_every=1`; each repeat perturbs the weights, syncs, and
records the sync's and the canary's seconds and the canary's gap. Prints the best (min) seconds and the
largest gap; a step of the default tiny job is the yardstick (time_* in its metrics.jsonl).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MARK = "RESULT "


def worker(dtype: str, repeats: int) -> dict:
    from rlx.models.load import load_causal_lm, load_tokenizer
    from rlx.recipes.tiny import TinyModelSpec, ensure_tiny_model
    from rlx.sampling.config import VLLMSamplerConfig
    from rlx.sampling.vllm import VLLMSampler

    path = str(ensure_tiny_model(TinyModelSpec()))
    model = load_causal_lm(path, "float32")
    sampler = VLLMSampler(path, load_tokenizer(path).eos_token_id, VLLMSamplerConfig(dtype=dtype, canary_every=1))
    torch.set_num_threads(1)
    rows = []
    for _ in range(repeats):
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(1.001)  # a real change, so each sync moves new weights
        sampler.sync_weights(model)
        rows.append((sampler.last_sync_seconds, sampler.last_canary_seconds, sampler.last_canary_gap))
    sampler.close()
    return {"dtype": dtype, "sync_s": min(r[0] for r in rows), "canary_s": min(r[1] for r in rows),
            "max_gap": max(r[2] for r in rows), "tolerance": sampler.canary.tolerance}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--worker")
    args = parser.parse_args()
    if args.worker:
        print(MARK + json.dumps(worker(args.worker, args.repeats)))
        return
    print("| dtype | sync ms | canary ms | max gap (nats) | tolerance |\n|---|---|---|---|---|")
    for dtype in args.dtypes.split(","):
        done = subprocess.run([sys.executable, __file__, "--worker", dtype, "--repeats", str(args.repeats)],
                              capture_output=True, text=True)
        lines = [x for x in done.stdout.splitlines() if x.startswith(MARK)]
        if done.returncode != 0 or not lines:
            print(f"| {dtype} | failed: {done.stderr[-500:]} |")
            continue
        r = json.loads(lines[-1].removeprefix(MARK))
        print(f"| {dtype} | {r['sync_s'] * 1e3:.1f} | {r['canary_s'] * 1e3:.1f} | {r['max_gap']:.2e} | "
              f"{r['tolerance']:g} |")


if __name__ == "__main__":
    main()
