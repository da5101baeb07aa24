"""The one training loop: sample -> branch -> score -> advantages -> clipped-loss update(s) -> log.

It serves every registered algorithm and never branches on an algorithm's name: the algorithm says which
branch rollouts it wants (`plan_branches`), turns the frozen batch into advantages (`advantages`) and
defines the loss (`policy_loss`).
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import numpy as np
import torch

from rlx import algos
from rlx.algos.base import AdvantageInputs, LossInputs
from rlx.config import RunConfig
from rlx.data.tasks import Task, build_task
from rlx.logger import build_logger
from rlx.models.load import load_causal_lm, load_tokenizer, resolve_model_path
from rlx.rewards.registry import build_reward
from rlx.sampling.base import GenRequest
from rlx.sampling.factory import build_sampler
from rlx.train import rollout
from rlx.train.logprobs import pack, response_logprobs


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Trainer:
    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        self.algo = algos.get(cfg.algo.name)
        self.run_dir = Path(cfg.output_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        seed_everything(cfg.seed)
        self.task: Task = build_task(cfg.data, cfg.train.train_size, cfg.seed)
        self.reward_fn = build_reward(cfg.reward_model.name, cfg.reward_model.options)
        self.model_path = resolve_model_path(cfg.model)
        self.tokenizer = load_tokenizer(self.model_path)
        self.policy = load_causal_lm(self.model_path, cfg.model.dtype)
        self.policy.train()
        self.optimizer = torch.optim.AdamW(self.policy.parameters(), lr=cfg.train.lr,
                                           weight_decay=cfg.train.weight_decay)
        self.sampler = build_sampler(cfg.sampler, self.policy, self.tokenizer, self.model_path, cfg.model.dtype)
        self.newline_ids = frozenset(i for t, i in self.tokenizer.get_vocab().items()
                                     if "\n" in self.tokenizer.decode([i]))
        self.data_order = np.random.RandomState(cfg.seed % 2**32).permutation(len(self.task.train))
        self.logger = build_logger(cfg.logger, self.run_dir)

    # ---------------------------------------------------------------- phases
    def step_problems(self, step: int):
        per_step = self.cfg.train.prompts_per_step
        start = (step - 1) * per_step
        return [self.task.train[self.data_order[(start + i) % len(self.data_order)]] for i in range(per_step)]

    def sample_policy(self, step: int, problems) -> list[rollout.Trajectory]:
        t = self.cfg.train
        prompts = [self.tokenizer.encode(self.task.prompt(p)) for p in problems]
        requests = rollout.policy_requests(prompts, t.samples_per_prompt, t.temperature, t.max_new_tokens,
                                           self.cfg.seed, step)
        generations = self.sampler.generate(requests)
        return [
            rollout.Trajectory(problem=problems[i // t.samples_per_prompt], group=i // t.samples_per_prompt,
                               prompt_ids=list(req.prompt_ids), response_ids=gen.token_ids, finished=gen.finished)
            for i, (req, gen) in enumerate(zip(requests, generations))
        ]

    def sample_branches(self, step: int, trajs: list[rollout.Trajectory]) -> list[rollout.Branches]:
        rng = rollout.knot_generator(self.cfg.seed, step)
        plans = [self.algo.plan_branches(tr.response_ids, rollout.step_starts(tr.response_ids, self.newline_ids),
                                         self.cfg.algo, rng) for tr in trajs]
        requests, index_map = rollout.schedule_branch_requests(trajs, plans, self.cfg.train.max_new_tokens,
                                                               self.cfg.seed, step)
        generations = self.sampler.generate(requests) if requests else []
        return rollout.gather_branches(plans, index_map, generations)

    def score(self, trajs: list[rollout.Trajectory], branches: list[rollout.Branches]) -> None:
        decode = self.tokenizer.decode
        problems, texts = [], []
        for tr in trajs:
            tr.text = decode(tr.response_ids, skip_special_tokens=True)
            problems.append(tr.problem)
            texts.append(tr.text)
        for tr, br in zip(trajs, branches):
            for knot, gens in zip(br.knots, br.rollouts):
                for gen in gens:
                    problems.append(tr.problem)
                    texts.append(decode(tr.response_ids[: knot.t - 1] + gen.token_ids, skip_special_tokens=True))
        rewards = self.reward_fn(problems, texts)
        for tr, r in zip(trajs, rewards):
            tr.reward = float(r)
            tr.correct = self.task.is_correct(tr.problem, tr.text)
        cursor = len(trajs)
        for br in branches:
            br.rewards = []
            for gens in br.rollouts:
                br.rewards.append([float(r) for r in rewards[cursor : cursor + len(gens)]])
                cursor += len(gens)

    def advantage_inputs(self, trajs, branches, mask: torch.Tensor) -> AdvantageInputs:
        token_rewards = torch.zeros_like(mask)  # [B, T] zero-reward assumption: RM on the last token
        lengths = mask.sum(-1).long()
        for b, tr in enumerate(trajs):
            token_rewards[b, lengths[b] - 1] = tr.reward
        branch_rewards = [[[terminal_reward(len(g.token_ids), r) for g, r in zip(gens, rs)]
                           for gens, rs in zip(br.rollouts, br.rewards)] for br in branches]
        return AdvantageInputs(
            token_rewards=token_rewards,
            response_mask=mask,
            group_ids=torch.tensor([tr.group for tr in trajs]),
            knots=[[k.t for k in br.knots] for br in branches],
            branch_rewards=branch_rewards,
        )

    def optimize(self, trajs, advantages: torch.Tensor, packed) -> dict[str, float]:
        with torch.no_grad():
            old_logp, _ = response_logprobs(self.policy, packed)  # [B, T] pi_old, frozen for all epochs
        metrics: dict[str, float] = {}
        for _ in range(getattr(self.cfg.algo, "optimization_num", 1)):
            logp, entropy = response_logprobs(self.policy, packed, with_entropy=True)
            inputs = LossInputs(logp=logp, old_logp=old_logp, advantages=advantages,
                                response_mask=packed.response_mask, group_ids=torch.tensor([t.group for t in trajs]),
                                entropy=entropy)
            loss, loss_metrics = self.algo.policy_loss(inputs, self.cfg.algo)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.cfg.train.grad_clip)
            self.optimizer.step()
            metrics = {"policy_loss": loss.item(), "grad_norm": float(grad_norm), **loss_metrics,
                       "entropy": masked_mean(entropy.detach(), packed.response_mask)}
        self.sampler.sync_weights(self.policy)
        return metrics

    # ---------------------------------------------------------------- driver
    def train_step(self, step: int) -> dict[str, float]:
        timer = PhaseTimer()
        problems = self.step_problems(step)
        with timer("generate"):
            trajs = self.sample_policy(step, problems)
        with timer("branch"):
            branches = self.sample_branches(step, trajs)
        with timer("score"):
            self.score(trajs, branches)
        with timer("train"):
            packed = pack([t.prompt_ids for t in trajs], [t.response_ids for t in trajs], self.tokenizer.pad_token_id)
            inputs = self.advantage_inputs(trajs, branches, packed.response_mask)
            advantages = self.algo.advantages(inputs, self.cfg.algo).detach()  # [B, T], frozen
            metrics = self.optimize(trajs, advantages, packed)
        return {**step_metrics(trajs, branches, advantages, packed.response_mask), **metrics, **timer.seconds}

    def evaluate(self) -> float:
        problems = self.task.test[: self.cfg.train.eval_size]
        return greedy_accuracy(self.sampler, self.tokenizer, self.task, problems, self.cfg.train.max_new_tokens)

    def save(self) -> Path:
        ckpt = self.run_dir / "checkpoint"
        self.policy.save_pretrained(str(ckpt))
        self.tokenizer.save_pretrained(str(ckpt))
        return ckpt


def train(cfg: RunConfig, resolved_config: str = "") -> dict:
    started = time.time()
    trainer = Trainer(cfg)
    (trainer.run_dir / "config.yaml").write_text(resolved_config)
    accuracy_before = trainer.evaluate()
    trainer.logger.log(0, {"test_accuracy": accuracy_before})
    print(f"[rlx] test accuracy before training: {accuracy_before:.3f} on {cfg.train.eval_size} problems")
    progress = _progress(cfg)
    for step in range(1, cfg.train.steps + 1):
        metrics = trainer.train_step(step)
        if cfg.train.eval_every and step % cfg.train.eval_every == 0 and step != cfg.train.steps:
            metrics["test_accuracy"] = trainer.evaluate()
        metrics["wall_seconds"] = time.time() - started
        trainer.logger.log(step, metrics)
        progress.update(1)
        progress.set_postfix(reward=f"{metrics['reward_mean']:.3f}", acc=f"{metrics['train_accuracy']:.3f}")
    progress.close()
    accuracy_after = trainer.evaluate()
    trainer.logger.log(cfg.train.steps, {"test_accuracy": accuracy_after, "final": True})
    ckpt = trainer.save()
    (ckpt / "rlx_config.yaml").write_text(resolved_config)
    summary = {"accuracy_before": accuracy_before, "accuracy_after": accuracy_after,
               "wall_seconds": time.time() - started, "eval_size": min(cfg.train.eval_size, len(trainer.task.test)),
               "algo": cfg.algo.name, "steps": cfg.train.steps, "checkpoint": str(ckpt)}
    (trainer.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    trainer.sampler.close()
    trainer.logger.close()
    print(f"[rlx] test accuracy: {accuracy_before:.3f} -> {accuracy_after:.3f} "
          f"({summary['wall_seconds']:.0f}s); run directory {trainer.run_dir}")
    return summary


# -------------------------------------------------------------------- helpers
def terminal_reward(length: int, reward: float) -> torch.Tensor:
    rewards = torch.zeros(length)  # [L] zero-reward assumption: the whole RM on the last token
    rewards[-1] = reward
    return rewards


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> float:
    return float((x * mask).sum() / mask.sum().clamp(min=1))


def greedy_accuracy(sampler, tokenizer, task: Task, problems, max_new_tokens: int) -> float:
    requests = [GenRequest(tuple(tokenizer.encode(task.prompt(p))), 0.0, max_new_tokens, 0) for p in problems]
    generations = sampler.generate(requests)
    correct = [task.is_correct(p, tokenizer.decode(g.token_ids, skip_special_tokens=True))
               for p, g in zip(problems, generations)]
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
    }


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


def _progress(cfg: RunConfig):
    from tqdm.auto import tqdm

    return tqdm(total=cfg.train.steps, desc=f"rlx {cfg.algo.name}", disable=not cfg.train.progress_bar)
