"""The update with and without shared prefixes (`train.share_prefix`, rlx/models/prefix.py), side by side.

    .venv/bin/python scripts/bench_prefix.py [--shapes "grpo 32x8,default job (trepo 32x4)"] [--records 2]
        [--repeats 2] [--out bench/prefix.json]

Each shape runs in a fresh process on one torch thread (`sampler=hf`, real Hydra composition): one warm-up
training step, then `--records` rollout records are sampled, and on each the learning phase (`Trainer.learn`:
rows, frozen pi_old / pi_ref / critic passes, advantages, forward + backward, optimizer step) runs `--repeats`
times per setting, the settings alternating (the machine's drift touches both alike), from the same weights and
optimizer state (restored before every run), so both see identical inputs. Reported: the median update seconds,
the forward tokens one pass over the batch computes (`tokens_forward`: every row's prompt + response unshared,
each trie token once shared; the cost-based packing may leave some sharing out), the unique tokens (the
floor: every distinct prefix once), and the largest |loss difference| between the settings (equal up to
float rounding: the update is the same). The real-model row (SmolLM2-135M, `model=smollm2`, its few-shot chat
prompt) runs only where `conf/model/smollm2.yaml` exists.

A second table times one AdamW step over each model's parameters (random gradients, one thread, the best of 5)
with torch's CPU default (a for-loop per tensor), `foreach=True` and `fused=True` (what rlx uses on CPU,
rlx/train/setup.py).
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
LONG = ["data=arith_long", "model=tiny_long", "train.max_new_tokens=176", "train.prompts_per_step=8"]
SHAPES = {  # name -> overrides (as +sweep=compare_long sets the long task)
    "grpo 32x8": ["algo=grpo", "train.prompts_per_step=32", "algo.samples_per_prompt=8"],
    "default job (trepo 32x4)": ["algo=trepo"],
    "tree preset": ["algo=tree"],
    "ppo (critic)": ["algo=ppo"],
    "long-task tree": ["algo=tree", *LONG],
    "smollm2 grpo 16x8": ["model=smollm2", "data=arith_chat", "algo=grpo", "train.prompts_per_step=16",
                          "algo.samples_per_prompt=8"],
    "smollm2 tree 4x4": ["model=smollm2", "data=arith_chat", "algo=tree", "train.prompts_per_step=4",
                         "algo.samples_per_prompt=4", "train.max_new_tokens=16"],
}
REAL = {name: ROOT / "conf" / "model" / "smollm2.yaml" for name in SHAPES if name.startswith("smollm2")}


def timed_learn(trainer, record, step: int, share: bool, saved) -> tuple[float, int, float, int]:
    """(update seconds, forward tokens, loss, unique tokens) of the learning phase on `record`, from the `saved`
    state; unique tokens: the batch's distinct prefixes, each once (one trie over every row: the floor)."""
    from rlx.models.prefix import trie

    restore(trainer, saved)
    trainer.forwards.share_prefix = share
    start = time.perf_counter()
    batch, metrics = trainer.learn(record, step)
    seconds = time.perf_counter() - start
    packed = batch.packed
    real = [ids[:n] for ids, n in zip(packed.input_ids.tolist(), packed.attention_mask.sum(-1).tolist())]
    return seconds, trainer.forwards.forward_tokens(packed), metrics["loss"], len(trie(real)[0])


def snapshot(trainer):
    modules = [m for m in (trainer.policy, trainer.critic) if m is not None]
    optimizers = [copy.deepcopy(o.state_dict()) for o in trainer.optimizers]
    return [copy.deepcopy(m.state_dict()) for m in modules], optimizers


def restore(trainer, saved) -> None:
    modules = [m for m in (trainer.policy, trainer.critic) if m is not None]
    for module, state in zip(modules, saved[0]):
        module.load_state_dict(state)
    for optimizer, state in zip(trainer.optimizers, saved[1]):
        optimizer.load_state_dict(state)


def child(shape: str, records: int, repeats: int) -> dict:
    from bench_trl import one_thread_trainer  # scripts/ is on the import path

    from rlx.train.infra import distributed as dist
    from rlx.train.metrics import PhaseTimer

    overrides = [*SHAPES[shape], "sampler=hf", "train.steps=1000", "train.progress_bar=false"]
    out = {"update_s": {"off": [], "on": []}, "tokens_forward": {"off": [], "on": []}, "loss_diff": 0.0,
           "tokens_unique": []}
    with tempfile.TemporaryDirectory() as tmp:
        trainer = one_thread_trainer(overrides, tmp)
        trainer.train_step(1)  # warm-up
        for step in range(2, records + 2):
            record, _ = trainer.rollouts(dist.shard(trainer.step_problems(step)), step, PhaseTimer())
            saved = snapshot(trainer)
            for _ in range(repeats):
                losses = {}
                for setting, share in (("off", False), ("on", True)):
                    seconds, tokens, losses[setting], unique = timed_learn(trainer, record, step, share, saved)
                    out["update_s"][setting].append(seconds)
                    out["tokens_forward"][setting].append(tokens)
                out["tokens_unique"].append(unique)
                out["loss_diff"] = max(out["loss_diff"], abs(losses["on"] - losses["off"]))
        trainer.close()
    return out


def optimizer_child(model: str) -> dict:
    """Seconds of one AdamW step over `model`'s parameters per implementation (the best of 5, after one)."""
    import torch
    from bench_trl import one_thread
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    from rlx.config import to_dataclass
    from rlx.models.config import ModelConfig
    from rlx.models.load import load_causal_lm
    from rlx.recipes import resolve_model_path

    with initialize_config_module(config_module="rlx.conf", version_base="1.3"):
        raw = OmegaConf.to_container(compose("train", overrides=[f"model={model}"]).model, resolve=True)
    params = list(load_causal_lm(resolve_model_path(to_dataclass(ModelConfig, raw, "model")), "float32").parameters())
    one_thread()
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    out = {"params": sum(p.numel() for p in params)}
    for name, options in (("default", {}), ("foreach", {"foreach": True}), ("fused", {"fused": True})):
        optimizer = torch.optim.AdamW(params, lr=1e-5, **options)
        optimizer.step()
        times = []
        for _ in range(5):
            start = time.perf_counter()
            optimizer.step()
            times.append(time.perf_counter() - start)
        out[name] = min(times)
    return out


def run_child(shape: str, records: int, repeats: int) -> dict:
    return run_python(["--child", shape, "--records", str(records), "--repeats", str(repeats)], shape)


def run_python(args: list[str], what: str) -> dict:
    """This script in a fresh one-thread process -> the JSON of its last line."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def summary(shape: str, run: dict) -> dict:
    off, on = (statistics.median(run["update_s"][k]) for k in ("off", "on"))
    tok_off, tok_on = (statistics.mean(run["tokens_forward"][k]) for k in ("off", "on"))
    return {"shape": shape, "update_s_off": off, "update_s_on": on, "speedup": off / on, "tokens_forward_off": tok_off,
            "tokens_forward_on": tok_on, "token_ratio": tok_off / tok_on, "loss_diff": run["loss_diff"],
            "tokens_unique": statistics.mean(run["tokens_unique"]), "run": run}


def table(rows: list[dict]) -> str:
    lines = ["| shape | update s, unshared | update s, shared | speed-up | forward tokens, unshared | "
             "forward tokens, shared | fewer tokens | unique tokens | max abs loss diff |", "|---" * 9 + "|"]
    for r in rows:
        lines.append(f"| {r['shape']} | {r['update_s_off']:.3f} | {r['update_s_on']:.3f} | {r['speedup']:.2f}x | "
                     f"{r['tokens_forward_off']:.0f} | {r['tokens_forward_on']:.0f} | {r['token_ratio']:.2f}x | "
                     f"{r['tokens_unique']:.0f} | {r['loss_diff']:.1e} |")
    return "\n".join(lines)


def adam_table(adam: dict) -> str:
    lines = ["| model | parameters | AdamW step, default | foreach | fused | fused speed-up |",
             "|---|---|---|---|---|---|"]
    for model, r in adam.items():
        ms = {k: f"{r[k] * 1e3:.1f} ms" for k in ("default", "foreach", "fused")}
        lines.append(f"| {model} | {r['params'] / 1e6:.1f}M | {ms['default']} | {ms['foreach']} | {ms['fused']} | "
                     f"{r['default'] / r['fused']:.1f}x |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default=",".join(SHAPES), help="comma-separated names of SHAPES")
    parser.add_argument("--records", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "bench" / "prefix.json"))
    parser.add_argument("--optimizer-models", default="tiny,smollm2", help="models of the AdamW table ('' = none)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--optimizer-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.records, args.repeats)))
        return
    if args.optimizer_child:
        print(json.dumps(optimizer_child(args.optimizer_child)))
        return
    shapes = [s for s in args.shapes.split(",") if s and (s not in REAL or REAL[s].exists())]
    rows = []
    for shape in shapes:
        rows.append(summary(shape, run_child(shape, args.records, args.repeats)))
        print(table(rows[-1:]).splitlines()[-1], flush=True)
    models = [m for m in args.optimizer_models.split(",") if m and (ROOT / "conf" / "model" / f"{m}.yaml").exists()]
    adam = {m: run_python(["--optimizer-child", m], m) for m in models}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"rows": rows, "adamw": adam, "records": args.records,
                                          "repeats": args.repeats, "load_average": os.getloadavg()}, indent=1) + "\n")
    print(table(rows))
    print(adam_table(adam))


if __name__ == "__main__":
    main()
