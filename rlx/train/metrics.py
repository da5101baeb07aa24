"""What a step reports: its metrics row, phase timings, sample tables, and the greedy test accuracy.

Also the run-wide seeding and progress bar, so the step driver (`loop`) holds only the driving."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import numpy as np
import torch

from rlx.data.tasks import Task
from rlx.logger import knot_stats
from rlx.sampling.base import GenRequest
from rlx.train import distributed as dist


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def sample_rows(tokenizer, trajs, branches, advantages: torch.Tensor) -> list[dict]:
    """Completions with their per-token advantages, knots and knot values, for the logger and `rlx inspect`."""
    decode = tokenizer.decode
    return [{"prompt": decode(tr.prompt_ids), "completion": tr.text, "reward": tr.reward,
             "advantages": advantages[i, : len(tr.response_ids)].tolist(),  # response token j sits at column j
             "tokens": [decode([tok]) for tok in tr.response_ids], "knots": [k.t for k in br.knots],
             **knot_stats(br.rewards)}
            for i, (tr, br) in enumerate(zip(trajs, branches))]


def greedy_accuracy(sampler, tokenizer, task: Task, problems, max_new_tokens: int) -> float:
    requests = [GenRequest(tuple(tokenizer.encode(task.prompt(p))), 0.0, max_new_tokens, 0) for p in problems]
    generations = sampler.generate(requests)
    correct = task.grade(problems, [tokenizer.decode(g.token_ids, skip_special_tokens=True) for g in generations])
    return sum(correct) / max(1, len(correct))


def step_metrics(trajs, branches, advantages: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    valid = advantages[mask.bool()]
    knots = sum(len(b.knots) for b in branches)
    stderr = [float(np.std(r, ddof=1) / np.sqrt(len(r))) for b in branches for r in b.rewards if len(r) > 1]
    return {
        "reward_mean": float(np.mean([t.reward for t in trajs])),
        "train_accuracy": float(np.mean([t.correct for t in trajs])),
        "adv_mean": float(valid.mean()) if valid.numel() else 0.0,
        "adv_std": float(valid.std()) if valid.numel() > 1 else 0.0,
        "tokens_policy": int(mask.sum()),
        "tokens_branch": sum(len(g.token_ids) for b in branches for gens in b.rollouts for g in gens),
        "response_length": float(mask.sum(-1).mean()),
        "num_knots": knots,
        "num_branch_rollouts": sum(b.num_rollouts() for b in branches),
        "knot_value_stderr": float(np.mean(stderr)) if stderr else 0.0,
        "exact_token_share": knots / max(1.0, float(mask.sum())),
        "adv_sign_agreement": sign_agreement(advantages, mask, [t.correct for t in trajs]),
    }


def sign_agreement(advantages: torch.Tensor, mask: torch.Tensor, correct: list[bool]) -> float:
    """Share of response tokens with a nonzero advantage whose sign is the outcome's: + in a correct response,
    - in an incorrect one. 1.0 for outcome-only group baselines without whitening; prefix-value estimators
    (TRePO, VinePPO, PPO) credit individual steps, so the gap to 1.0 is how often they disagree with the
    final answer (a diagnostic of docs/frontier.md, "The compute-matched comparison"). nan-free: 0.0 with no
    such token."""
    signs = [1.0 if c else -1.0 for c in correct]
    outcome = torch.tensor(signs, dtype=advantages.dtype, device=advantages.device)[:, None]  # [B, 1]
    counted = mask.bool() & (advantages != 0)  # [B, T]
    if not counted.any():
        return 0.0
    agrees = (torch.sign(advantages) == outcome) & counted  # [B, T]
    return float(agrees.sum()) / float(counted.sum())


class PhaseTimer:
    def __init__(self):
        self.seconds: dict[str, float] = {}

    def __call__(self, phase: str):
        timer = self

        class _Phase:
            def __enter__(self):
                self.start = time.perf_counter()

            def __exit__(self, *exc):
                timer.seconds[f"time_{phase}"] = time.perf_counter() - self.start

        return _Phase()


def write_summary(cfg, run_dir: Path, task: Task, ckpt: Path, accuracy: tuple[float, float], started: float,
                  last_step: int, counters: dict) -> dict:
    """summary.json: test accuracy before -> after, wall time, the last step run (a budget may stop early), the
    checkpoint, the generated-token and training-time counters, the skipped data rows."""
    summary = {"accuracy_before": accuracy[0], "accuracy_after": accuracy[1], "wall_seconds": time.time() - started,
               "eval_size": min(cfg.train.eval_size, len(task.test)), "algo": cfg.algo.name, "steps": last_step,
               "checkpoint": str(ckpt), **counters,
               "skipped_rows": task.skipped_total}  # malformed data rows skipped (data.on_error=skip)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def progress_bar(cfg, done: int):
    from tqdm.auto import tqdm

    return tqdm(total=cfg.train.steps, initial=done, desc=f"rlx {cfg.algo.name}",
                disable=not cfg.train.progress_bar or not dist.is_main())
