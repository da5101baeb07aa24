"""rlx's GRPO step vs TRL's GRPOTrainer step, side by side (issue 9, item 10; the real model: issue 23, item 6).

    .venv/bin/python scripts/bench_trl.py [--model tiny|smollm2] [--data arith_chat] [--dtype bfloat16]
        [--shapes 8x4,32x8] [--tokens 48] [--repeats 3] [--steps 3] [--venv .cache/trl-venv] [--out bench/trl.json]

Same model (`--model tiny`, the default: the project's tiny Qwen2, ~0.8M parameters, built/cached by rlx, arith's
plain prompts, fp32, 8x4 and 32x8, 48 tokens; `--model smollm2`: SmolLM2-135M-Instruct converted by rlx from its
package, data=arith_chat's few-shot chat prompts rendered through the chat template, bf16 autocast over fp32
weights on both sides, 8x8, 16 tokens), same prompts, same reward (rlx's exact-answer arith reward), same
precision (`--dtype`: rlx's `model.dtype`, TRL's `bf16` flag, both autocast over fp32 weights; TRL's own
defaults, bf16 and gradient checkpointing, are overridden, rlx checkpoints no activations either; a forward hook
records the dtype the MLP's matmuls really ran in on each side), same GRPO settings (group-normalised outcome
advantages, clip 0.2, no KL, per-sequence token-mean loss, lr 5e-5, grad clip 1, one epoch, one optimizer step
per batch), CPU, HF generation (TRL: `generate`; rlx: its HF sampler's decode loop), one torch thread in each
process; rlx with its defaults, which pack each update's sequences into micro-batches of <= 2,048 padded
tokens (`train.micro_batch_tokens`; exact gradient accumulation, so the same update with less padding computed;
`--rlx-overrides` adds overrides). One step = sample, score, advantages,
update (rlx: `Trainer.train_step` with `sampler=hf`, which also syncs weights into the sampler; TRL: the time
between consecutive `on_step_end` callbacks). Each run makes `--steps` + 1 steps and drops the first (warm-up);
the step time of a run is its median. rlx and TRL runs alternate, `--repeats` times per shape, each in a fresh
process; the reported ratio is median(rlx) / median(TRL), of wall seconds per step and (a second, load-robust
reading on a shared machine, where wall time mostly measures the scheduler) of the process's CPU seconds per step.

TRL is not a project dependency: it lives in its own virtual environment (`--venv`, created on first use with
`pip install trl==1.16.0`), which reuses the project's torch/transformers through a .pth file, so nothing
large is downloaded twice.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TRL_VERSION = "1.16.0"
LR, CLIP, GRAD_CLIP = 5e-5, 0.2, 1.0
# rlx as a user runs it: its defaults (which pack each update's sequences longest first into micro-batches of
# <= 2,048 padded tokens, exact gradient accumulation); TRL pads the whole batch to its longest sequence
RLX_OVERRIDES = ""
# --model -> (data, dtype, shapes, new tokens, TRL rows per forward) unless given: the tiny model as issue 9
# measured it (TRL's whole batch in one forward); the real model as +experiment=smollm2_arith trains it, with TRL's
# batch cut into micro-batches of 8 rows (~1,400 tokens; rlx's default packs ~12 rows, <= 2,048 tokens): TRL's
# whole 64-row batch peaked at 17 GB, 16 rows at 9.9 GB, both killed for memory on this shared 23 GB machine
MODELS = {"tiny": ("arith", "float32", "8x4,32x8", 48, 0), "smollm2": ("arith_chat", "bfloat16", "8x8", 16, 8)}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=sorted(MODELS), default="tiny", help="rlx's model option (model=...)")
    p.add_argument("--data", default=None, help="rlx's data option (default: tiny arith, smollm2 arith_chat)")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default=None,
                   help="compute dtype of both trainers (default: tiny float32, smollm2 bfloat16)")
    p.add_argument("--shapes", default=None, help="PROMPTSxSAMPLES, comma-separated (default: tiny 8x4,32x8, "
                                                  "smollm2 8x8)")
    p.add_argument("--tokens", type=int, default=None, help="max new tokens per completion (tiny 48, smollm2 16)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=3, help="measured steps per run (after one warm-up step)")
    p.add_argument("--venv", default=str(ROOT / ".cache" / "trl-venv"))
    p.add_argument("--out", default=None, help="default: bench/trl.json (tiny), bench/trl-MODEL.json")
    p.add_argument("--rlx-overrides", default=RLX_OVERRIDES,
                   help="extra Hydra overrides of the rlx run, space-separated ('' = rlx's defaults)")
    p.add_argument("--trl-micro-batch", type=int, default=None,
                   help="TRL's rows per forward + backward (per_device_train_batch_size; gradient accumulation "
                        "over the step's batch, one generation per step); 0 = the whole batch (tiny: 0, smollm2: 8)")
    p.add_argument("--trl-own-defaults", action="store_true",
                   help="leave TRL's bf16 and gradient_checkpointing at its defaults (True, True), as this script "
                        "ran before issue 23: not the same job as rlx's")
    p.add_argument("--child", choices=["rlx", "trl"], default=None, help=argparse.SUPPRESS)
    p.add_argument("--prompts", type=int, default=8, help=argparse.SUPPRESS)
    p.add_argument("--samples", type=int, default=4, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    data, dtype, shapes, tokens, micro = MODELS[args.model]
    args.trl_micro_batch = micro if args.trl_micro_batch is None else args.trl_micro_batch
    args.data, args.dtype = args.data or data, args.dtype or dtype
    args.shapes, args.tokens = args.shapes or shapes, args.tokens or tokens
    args.out = args.out or ("bench/trl.json" if args.model == "tiny" else f"bench/trl-{args.model}.json")
    return args


def job_overrides(args) -> list[str]:
    """The Hydra overrides naming the model, data and precision both trainers are built from."""
    return [f"model={args.model}", f"data={args.data}", f"model.dtype={args.dtype}"]


def compose_config(overrides: list[str], output_dir: str):
    """The RunConfig of `rlx train <overrides>` (real Hydra composition, rlx's own parser)."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    from rlx.config import parse_run_config

    with initialize_config_module(config_module="rlx.conf", version_base="1.3"):
        raw = compose("train", overrides=[f"output_dir={output_dir}", *overrides])
    return parse_run_config(OmegaConf.to_container(raw, resolve=True))


def record_compute_dtypes(model, seen: set[str]):
    """A forward hook on the first decoder layer's down projection: the dtype its matmul ran in (autocast on or
    off), so the JSON shows that both trainers computed in the precision asked for."""
    layer = next(m for name, m in model.named_modules() if name.endswith("layers.0.mlp.down_proj"))
    return layer.register_forward_hook(lambda _m, _i, out: seen.add(str(out.dtype).removeprefix("torch.")))


def one_thread() -> None:
    import torch

    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)


# ------------------------------------------------------------------------------------------------ venv
def ensure_trl_venv(venv: Path) -> Path:
    """A venv with TRL that sees this interpreter's packages (torch, transformers, rlx's deps) via a .pth."""
    python = venv / "bin" / "python"
    if python.exists() and _has_trl(python):
        return python
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    Path(purelib, "rlx_project.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", f"trl=={TRL_VERSION}"], check=True)
    if not _has_trl(python):
        raise RuntimeError(f"{venv}: trl=={TRL_VERSION} did not install")
    return python


def _has_trl(python: Path) -> bool:
    probe = f"import trl; assert trl.__version__ == '{TRL_VERSION}'"
    return subprocess.run([str(python), "-c", probe], capture_output=True).returncode == 0


# ------------------------------------------------------------------------------------------------ rlx
def one_thread_trainer(overrides: list[str], output_dir: str):
    """The `Trainer` of `rlx train <overrides>` (real Hydra composition, rlx's own parser) on one torch thread,
    logging nowhere. Also used by scripts/bench_packing.py and scripts/bench_real.py."""
    from rlx.train.infra import distributed as dist
    from rlx.train.loop import Trainer

    trainer = Trainer(compose_config(overrides, output_dir))
    one_thread()  # after the Trainer: nothing in its construction may raise the thread count again
    trainer.logger = dist.NullLogger()
    return trainer


def rlx_steps(prompts: int, samples: int, tokens: int, steps: int, extra: list[str], job: list[str]) -> dict:
    import torch

    from rlx.models.flops import matmul_peak

    overrides = ["algo=grpo", "sampler=hf", f"algo.samples_per_prompt={samples}", f"train.prompts_per_step={prompts}",
                 f"train.max_new_tokens={tokens}", f"train.steps={steps + 1}", f"train.lr={LR}",
                 f"algo.clip_eps={CLIP}", f"train.grad_clip={GRAD_CLIP}", "algo.kl.beta=0.0",
                 "algo.loss_agg=seq_mean_token_mean", "train.progress_bar=false", *job, *extra]
    with tempfile.TemporaryDirectory() as tmp:
        trainer = one_thread_trainer(overrides, tmp)
        update_flops, dtypes = count_update_flops(trainer), set()
        hook = record_compute_dtypes(trainer.policy, dtypes)
        times, cpu_times, completion_tokens, update_rates, update_seconds = [], [], [], [], []
        for step in range(1, steps + 2):
            start, cpu_start = time.perf_counter(), time.process_time()
            metrics = trainer.train_step(step)
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)
            completion_tokens.append(metrics["tokens_policy"])
            update_seconds.append(metrics["time_train"])
            update_rates.append(update_flops.pop() / metrics["time_train"])
        hook.remove()
        trainer.close()
    peak = matmul_peak("cpu", torch.bfloat16 if trainer.cfg.model.dtype == "bfloat16" else torch.float32)
    return {"step_seconds": times[1:], "cpu_seconds": cpu_times[1:], "completion_tokens": completion_tokens[1:],
            "torch_threads": torch.get_num_threads(), "update_flops_per_s": update_rates[1:],
            "matmul_peak_flops_per_s": peak, "compute_dtypes": sorted(dtypes), "update_seconds": update_seconds[1:]}


def count_update_flops(trainer) -> list[float]:
    """The FLOPs of each update `trainer.learn` runs, appended as it returns (rlx/models/flops.py's
    `loss_update_flops`: every layer over every real token, causal attention, the LM head at response positions
    only; real tokens, not padding), taken over the update phase's seconds (`time_train`) for the MFU."""
    from rlx.models.flops import loss_update_flops

    counts, learn = [], trainer.learn

    def counted(record, step):
        rows, batch, advantages, metrics = learn(record, step)
        lengths = batch.packed.attention_mask.sum(-1).tolist()
        counts.append(loss_update_flops(trainer.policy, lengths, int(batch.packed.response_mask.sum())))
        return rows, batch, advantages, metrics

    trainer.learn = counted  # train_step calls self.learn: this instance's wrapper
    return counts


# ------------------------------------------------------------------------------------------------ TRL
def trl_steps(prompts: int, samples: int, tokens: int, steps: int, job: list[str], own_defaults: bool,
              micro_batch: int) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from rlx.data.tasks import load_task
    from rlx.models.load import load_tokenizer
    from rlx.recipes import resolve_model_path
    from rlx.rewards.registry import build_reward

    one_thread()
    cfg = compose_config(["algo=grpo", "sampler=hf", *job], "/tmp/unused")
    path = resolve_model_path(cfg.model)  # the directory rlx trains: the tiny model, or the converted GGUF
    tokenizer = load_tokenizer(path)
    task = load_task(cfg.data, 20000, 0).with_tokenizer(tokenizer)  # chat data: the chat template's text
    problems = task.train[: prompts * (steps + 1)]
    reward_fn = build_reward(cfg.reward_model.name, cfg.reward_model.options)
    texts = [task.prompt(p) for p in problems]
    dataset = Dataset.from_list([{"prompt": text, "idx": i} for i, text in enumerate(texts)])

    def reward(prompts, completions, idx, **_):  # TRL passes the dataset's extra columns as keywords
        return [float(r) for r in reward_fn([problems[i] for i in idx], completions)]

    times, cpu_times, lengths, threads, dtypes = [], [], [], [], set()
    # TRL defaults both to True; rlx checkpoints no activations and autocasts only under model.dtype=bfloat16
    precision = {} if own_defaults else {"bf16": cfg.model.dtype == "bfloat16", "gradient_checkpointing": False}

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            times.append(time.perf_counter())
            cpu_times.append(time.process_time())
            threads.append(torch.get_num_threads())  # nothing in TRL/accelerate may raise it

    with tempfile.TemporaryDirectory() as tmp:
        rows = micro_batch or prompts * samples  # TRL generates rows x steps_per_generation (= accumulation) at once
        args = GRPOConfig(output_dir=tmp, per_device_train_batch_size=rows, num_generations=samples,
                          gradient_accumulation_steps=prompts * samples // rows,
                          max_completion_length=tokens, learning_rate=LR, max_grad_norm=GRAD_CLIP, beta=0.0,
                          epsilon=CLIP, loss_type="grpo", scale_rewards="group", num_iterations=1,
                          temperature=1.0, max_steps=steps + 1, use_cpu=True, report_to="none",
                          save_strategy="no", logging_steps=1, disable_tqdm=True, seed=0, shuffle_dataset=False,
                          dataloader_num_workers=0, lr_scheduler_type="constant", warmup_steps=0,
                          **precision)
        model = AutoModelForCausalLM.from_pretrained(path)  # fp32 weights, as rlx's master copy
        hook = record_compute_dtypes(model, dtypes)
        trainer = GRPOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=dataset,
                              processing_class=tokenizer, callbacks=[Clock()])
        start, cpu_start = time.perf_counter(), time.process_time()
        trainer.train()
        hook.remove()
        lengths = [h["completions/mean_length"] for h in trainer.state.log_history if "completions/mean_length" in h]
    step_seconds = [b - a for a, b in zip([start, *times], times)]
    cpu_seconds = [b - a for a, b in zip([cpu_start, *cpu_times], cpu_times)]
    return {"step_seconds": step_seconds[1:], "cpu_seconds": cpu_seconds[1:],
            "completion_tokens": [m * prompts * samples for m in lengths[1:]], "torch_threads": max(threads),
            "compute_dtypes": sorted(dtypes), "prompt_tokens": prompt_token_counts(tokenizer, texts)}


def prompt_token_counts(tokenizer, texts: list[str]) -> dict:
    """Mean prompt tokens as TRL encodes a text prompt (no special tokens added) and as rlx does (`encode`): equal
    when both trainers see the same token ids."""
    trl_ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    rlx_ids = [tokenizer.encode(t) for t in texts]
    return {"trl": statistics.mean(map(len, trl_ids)), "rlx": statistics.mean(map(len, rlx_ids)),
            "identical": trl_ids == rlx_ids}


# ------------------------------------------------------------------------------------------------ parent
def run_child(python: Path, which: str, prompts: int, samples: int, args) -> dict:
    cmd = [str(python), __file__, "--child", which, "--prompts", str(prompts), "--samples", str(samples),
           "--tokens", str(args.tokens), "--steps", str(args.steps), f"--rlx-overrides={args.rlx_overrides}",
           "--model", args.model, "--data", args.data, "--dtype", args.dtype,
           "--trl-micro-batch", str(args.trl_micro_batch), *(["--trl-own-defaults"] if args.trl_own_defaults else [])]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{which} child failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def summarise(runs: list[dict]) -> dict:
    medians = [statistics.median(r["step_seconds"]) for r in runs]
    cpu_medians = [statistics.median(r["cpu_seconds"]) for r in runs]
    tokens = [statistics.mean(r["completion_tokens"]) for r in runs if r["completion_tokens"]]
    rates = [statistics.median(r["update_flops_per_s"]) for r in runs if "update_flops_per_s" in r]
    shares = [statistics.median(r["update_flops_per_s"]) / r["matmul_peak_flops_per_s"] for r in runs
              if "update_flops_per_s" in r]
    flops = {"update_gflops_per_s": statistics.median(rates) / 1e9, "peak_share": statistics.median(shares)} \
        if rates else {}
    extra = {"compute_dtypes": sorted({d for r in runs for d in r.get("compute_dtypes", [])})}
    if "update_seconds" in runs[0]:  # rlx: the update phase alone
        extra["update_seconds"] = statistics.median(statistics.median(r["update_seconds"]) for r in runs)
    if "prompt_tokens" in runs[0]:
        extra["prompt_tokens"] = runs[0]["prompt_tokens"]
    return {**flops, **extra, "step_seconds": statistics.median(medians), "run_medians": medians,
            "cpu_seconds": statistics.median(cpu_medians), "run_cpu_medians": cpu_medians,
            "completion_tokens": statistics.mean(tokens) if tokens else None}


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.child is not None:
        if args.child == "rlx":
            result = rlx_steps(args.prompts, args.samples, args.tokens, args.steps, args.rlx_overrides.split(),
                               job_overrides(args))
        else:
            result = trl_steps(args.prompts, args.samples, args.tokens, args.steps, job_overrides(args),
                               args.trl_own_defaults, args.trl_micro_batch)
        print(json.dumps(result))
        return {}
    runs = measure(args, ensure_trl_venv(Path(args.venv)))
    rows = []
    for (p, g), both in runs.items():
        rlx, trl = summarise(both["rlx"]), summarise(both["trl"])
        rows.append({"prompts": p, "samples": g, "max_new_tokens": args.tokens, "rlx": rlx, "trl": trl,
                     "ratio": rlx["step_seconds"] / trl["step_seconds"],
                     "repeat_ratios": [a / b for a, b in zip(rlx["run_medians"], trl["run_medians"])],
                     "cpu_ratio": rlx["cpu_seconds"] / trl["cpu_seconds"],
                     "load_after_runs": [r["load_after"] for k in ("rlx", "trl") for r in both[k]]})
    result = {"rows": rows, "trl_version": TRL_VERSION, "repeats": args.repeats, "steps": args.steps,
              "threads": 1, "cpus": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()],
              "rlx_overrides": args.rlx_overrides, "model": args.model, "data": args.data, "dtype": args.dtype,
              "trl_own_defaults": args.trl_own_defaults, "trl_micro_batch": args.trl_micro_batch}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print_rows(rows)
    print(f"load average at the end: {result['load_average']}; wrote {out}")
    return result


def measure(args, trl_python: Path) -> dict:
    """Every (shape, trainer) run, rlx and TRL alternating `--repeats` times, each a fresh process."""
    shapes = [tuple(int(x) for x in s.split("x")) for s in args.shapes.split(",")]
    runs = {(p, g): {"rlx": [], "trl": []} for p, g in shapes}
    for rep in range(args.repeats):  # interleaved: machine load drifts, so alternate the two trainers
        for p, g in shapes:
            for which, python in (("rlx", Path(sys.executable)), ("trl", trl_python)):
                run = run_child(python, which, p, g, args)
                run["load_after"] = round(os.getloadavg()[0], 2)  # 1-minute load average as the run ended
                runs[(p, g)][which].append(run)
                wall, cpu = ([round(x, 3) for x in run[k]] for k in ("step_seconds", "cpu_seconds"))
                print(f"repeat {rep + 1} {p}x{g} {which}: s/step {wall}, CPU s/step {cpu}, "
                      f"load {run['load_after']:.1f}", flush=True)
    return runs


def print_rows(rows: list[dict]) -> None:
    print(f"{'shape':>8} {'rlx s/step':>10} {'TRL s/step':>10} {'rlx/TRL':>8} {'per repeat':>18} {'CPU-s ratio':>11} "
          f"{'rlx update GFLOP/s':>18} {'% matmul peak':>13}")
    for r in rows:
        rlx_s, trl_s = r["rlx"]["step_seconds"], r["trl"]["step_seconds"]
        per_repeat = ", ".join(f"{x:.2f}" for x in r["repeat_ratios"])
        print(f"{r['prompts']:>4}x{r['samples']:<3} {rlx_s:>10.3f} {trl_s:>10.3f} "
              f"{r['ratio']:>8.2f} {per_repeat:>18} {r['cpu_ratio']:>11.2f} "
              f"{r['rlx']['update_gflops_per_s']:>18.1f} {100 * r['rlx']['peak_share']:>12.1f}%")
    print("compute dtypes (rlx / TRL): " + "; ".join(
        f"{r['prompts']}x{r['samples']}: {r['rlx']['compute_dtypes']} / {r['trl']['compute_dtypes']}" for r in rows))


if __name__ == "__main__":
    main()
