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
from rlx.train.infra import distributed as dist
from rlx.train.learn.batch import knot_children


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def sample_rows(tokenizer, record, advantages: torch.Tensor) -> list[dict]:
    """Responses with their per-token advantages, knots and knot values, for the logger and `rlx inspect`
    (the responses are the first rows of the step's batch, in record order)."""
    decode = tokenizer.decode
    rows = []
    for b, (tree, i) in enumerate(record.responses()):
        node = tree.nodes[i]
        knots = knot_children(tree, i)
        rows.append({"prompt": decode(list(tree.prompt_ids)), "completion": node.text, "reward": node.reward,
                     "advantages": advantages[b, : len(node.token_ids)].tolist(),  # token j sits at column j
                     "tokens": [decode([tok]) for tok in node.token_ids], "knots": [fork + 1 for fork, _ in knots],
                     **knot_stats([[tree.nodes[c].reward for c in children] for _, children in knots])})
    return rows


def greedy_accuracy(sampler, tokenizer, task: Task, problems, max_new_tokens: int) -> float:
    requests = [GenRequest(tuple(tokenizer.encode(task.prompt(p))), 0.0, max_new_tokens, 0) for p in problems]
    generations = sampler.generate(requests)
    correct = task.grade(problems, [tokenizer.decode(g.token_ids, skip_special_tokens=True) for g in generations])
    return sum(correct) / max(1, len(correct))


def step_metrics(record, rows, advantages: torch.Tensor, packed) -> dict[str, float]:
    """The step's row of metrics from its rollout record, trained rows and their packed batch. Every generated
    token counts once (`tokens_policy` + `tokens_branch`: a shared greedy generation once, a tree never
    regenerates a prefix); `tokens_trained` are the response tokens of the trained rows, `tokens_forward` every
    real (not padding) token the update's forward passes read, prompts included: what its FLOPs scale with."""
    mask = packed.response_mask  # [B, T]
    responses = record.response_nodes()
    branch_nodes = [n for tree in record.trees for n in tree.nodes if n.parent >= 0]
    knots = [[[tree.nodes[c].reward for c in children] for _, children in knot_children(tree, i)]
             for tree, i in record.responses()]
    response_tokens = sum(len(n.token_ids) for n in responses)
    valid = advantages[mask.bool()]
    stderr = [float(np.std(r, ddof=1) / np.sqrt(len(r))) for per in knots for r in per if len(r) > 1]
    nodes = [tree.nodes[i] for tree, i in rows]
    return {
        "reward_mean": float(np.mean([n.reward for n in responses])),
        "train_accuracy": float(np.mean([n.correct for n in responses])),
        "adv_mean": float(valid.mean()) if valid.numel() else 0.0,
        "adv_std": float(valid.std()) if valid.numel() > 1 else 0.0,
        "tokens_policy": response_tokens,
        "tokens_branch": sum(len(n.token_ids) for n in branch_nodes if not n.duplicate),
        "tokens_trained": int(mask.sum()),
        "tokens_forward": int(packed.attention_mask.sum()),
        "response_length": float(torch.tensor([float(len(n.token_ids)) for n in responses]).mean()),
        "num_knots": sum(len(per) for per in knots),
        "num_branch_rollouts": len(branch_nodes),
        "leaves_per_prompt": sum(len(tree.nodes) for tree in record.trees) / max(1, len(record.trees)),
        "tree_depth": float(max((n.depth for tree in record.trees for n in tree.nodes), default=0)),
        "knot_value_stderr": float(np.mean(stderr)) if stderr else 0.0,
        "exact_token_share": sum(len(per) for per in knots) / max(1.0, float(response_tokens)),
        "adv_sign_agreement": sign_agreement(advantages, mask, [n.correct for n in nodes]),
    }


def prefix_cache_rate(before: tuple[int, int] | None, after: tuple[int, int] | None) -> dict[str, float]:
    """`prefix_cache_hit_rate`: the share of the step's queried prompt tokens that vLLM's prefix cache served
    (branch rollouts re-read their response's prefix); {} where the sampler has no such counters."""
    if before is None or after is None or after[0] <= before[0]:
        return {}
    return {"prefix_cache_hit_rate": (after[1] - before[1]) / (after[0] - before[0])}


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
