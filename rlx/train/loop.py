"""The one training loop: sample -> branch -> score -> advantages -> clipped-loss update(s) -> log.

It serves every registered algorithm and never branches on an algorithm's name: the algorithm says which
branch rollouts it wants (`plan_branches`), turns the frozen batch into advantages (`advantages`) and
defines the loss (`policy_loss`).
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rlx import algos
from rlx.algos.base import AdvantageInputs, LossInputs
from rlx.algos.common import kl_token_rewards, masked_mean, terminal_rewards
from rlx.config import RunConfig
from rlx.data.tasks import Task, load_task
from rlx.logger import build_logger, knot_stats
from rlx.models.critic import ValueModel
from rlx.models.load import DTYPES, load_causal_lm, load_tokenizer, resolve_model_path
from rlx.models.lora import maybe_wrap_lora, save_policy, trainable_parameters
from rlx.rewards.registry import build_reward
from rlx.sampling.base import GenRequest
from rlx.sampling.factory import build_sampler
from rlx.train import checkpoint, parallel, preemption, rollout, rundir
from rlx.train import distributed as dist
from rlx.train.logprobs import PackedBatch, pack, response_logprobs


@dataclass
class FrozenBatch:
    packed: PackedBatch
    old_logp: torch.Tensor  # [B, T] log pi_old
    ref_logp: torch.Tensor | None  # [B, T] log pi_ref, when a reference model is loaded
    old_values: torch.Tensor | None  # [B, T] critic values under the old critic (PPO)
    inputs: AdvantageInputs


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Trainer:
    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        dist.init()  # joins torchrun's process group when WORLD_SIZE > 1
        parallel.check_strategy(cfg.train.strategy, cfg.sampler.name, cfg.model.lora.r)  # before any model loads
        self.algo = algos.get(cfg.algo.name)
        self.run_dir = Path(cfg.output_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        seed_everything(cfg.seed)
        task = load_task(cfg.data, cfg.train.train_size, cfg.seed)  # data errors surface before any model
        self.reward_fn = build_reward(cfg.reward_model.name, cfg.reward_model.options)
        self.model_path = resolve_model_path(cfg.model)
        self.tokenizer = load_tokenizer(self.model_path)
        self.task: Task = task.with_tokenizer(self.tokenizer)  # chat templates need the tokenizer
        self.policy = load_causal_lm(self.model_path, cfg.model.dtype)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.policy = maybe_wrap_lora(self.policy.to(self.device), cfg.model.lora)  # r = 0: unchanged
        self.policy.train()
        kl = getattr(cfg.algo, "kl", None)
        self.reference = self._load_reference() if kl is not None and kl.beta > 0 else None  # never updated
        self.kl_in_rewards = self.reference is not None and kl.mode in ("reward_token", "reward_response")
        self.critic = None
        if self.algo.needs_critic:
            self.critic = ValueModel(self.model_path, DTYPES[cfg.model.dtype]).to(self.device).train()
        dist.broadcast_parameters([self.policy, self.critic])  # identical replicas on every rank
        self._wrap_for_strategy()
        self.sampler = build_sampler(cfg.sampler, self.policy, self.tokenizer, self.model_path, cfg.model.dtype,
                                     seed=cfg.seed)
        self.newline_ids = frozenset(i for t, i in self.tokenizer.get_vocab().items()
                                     if "\n" in self.tokenizer.decode([i]))
        self.data_order = np.random.RandomState(cfg.seed % 2**32).permutation(len(self.task.train))
        self.logger = None  # opened by train(), after a resume has truncated metrics.jsonl

    def _wrap_for_strategy(self) -> None:
        """Under torchrun, `train.strategy`: DDP (backward averages the gradients over ranks) or FSDP2 (the
        policy, critic and reference sharded in place). One process: the modules themselves. The optimizers are
        built afterwards, on the parameters the strategy left (FSDP2's DTensor shards)."""
        t = self.cfg.train
        self.train_policy = parallel.wrap(self.policy, t.strategy, t.cpu_offload)
        self.train_critic = parallel.wrap(self.critic, t.strategy, t.cpu_offload) if self.critic is not None else None
        if self.reference is not None:
            self.reference = parallel.wrap(self.reference, t.strategy, t.cpu_offload)  # ddp: frozen, unchanged
        self.optimizers = [torch.optim.AdamW(trainable_parameters(self.policy), lr=t.lr, weight_decay=t.weight_decay)]
        if self.critic is not None:
            self.optimizers.append(torch.optim.AdamW(self.critic.parameters(), lr=self.cfg.algo.critic_lr))

    def _load_reference(self):
        reference = load_causal_lm(self.model_path, self.cfg.model.dtype).to(self.device).eval()
        reference.requires_grad_(False)
        return reference

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
        requests = dist.with_global_seeds(requests, t.samples_per_prompt, self.cfg.seed, step)
        generations = self.sampler.generate(requests)
        return [
            rollout.Trajectory(problem=problems[i // t.samples_per_prompt], group=i // t.samples_per_prompt,
                               prompt_ids=list(req.prompt_ids), response_ids=gen.token_ids, finished=gen.finished,
                               sampler_logprobs=gen.logprobs)
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
        verdicts = self.task.grade(problems[: len(trajs)], texts[: len(trajs)])  # one batched grading call
        for tr, r, correct in zip(trajs, rewards, verdicts):
            tr.reward = float(r)
            tr.correct = correct
        cursor = len(trajs)
        for br in branches:
            br.rewards = []
            for gens in br.rollouts:
                br.rewards.append([float(r) for r in rewards[cursor : cursor + len(gens)]])
                cursor += len(gens)

    def frozen_batch(self, trajs, branches) -> FrozenBatch:
        """Everything the update needs, computed once under pi_old and frozen for all epochs."""
        packed = pack([t.prompt_ids for t in trajs], [t.response_ids for t in trajs], self.tokenizer.pad_token_id)
        mask = packed.response_mask  # [B, T]
        with torch.no_grad():
            old_logp, _ = response_logprobs(self.policy, packed)  # [B, T]
            ref_logp = response_logprobs(self.reference, packed)[0] if self.reference is not None else None
            old_values = self.critic(packed) if self.critic is not None else None  # [B, T]
        token_rewards = terminal_rewards(torch.tensor([t.reward for t in trajs]), mask)  # [B, T]
        if self.kl_in_rewards:
            token_rewards = token_rewards + kl_token_rewards(old_logp, ref_logp, mask, self.cfg.algo.kl)
        group_ids = torch.tensor([t.group for t in trajs])
        step_ends = [rollout.step_ends(t.response_ids, self.newline_ids) for t in trajs]
        inputs = AdvantageInputs(
            token_rewards=token_rewards,
            response_mask=mask,
            group_ids=group_ids,
            values=old_values,
            knots=[[k.t for k in br.knots] for br in branches],
            branch_rewards=self.branch_token_rewards(trajs, branches),
            step_ends=step_ends,
            step_rewards=self.step_rewards(trajs, step_ends),
        )
        return FrozenBatch(packed, old_logp, ref_logp, old_values, inputs)

    def step_rewards(self, trajs, step_ends: list[list[int]]) -> list[list[float]] | None:
        """Per-step rewards when the reward model scores steps (a process reward), else None."""
        score_steps = getattr(self.reward_fn, "step_rewards", None)
        if score_steps is None:
            return None
        rewards = score_steps([t.problem for t in trajs], [t.text for t in trajs])
        # one reward per step end: a tokenizer may pack two lines into one token, so align by count
        return [(row + [0.0] * len(ends))[: len(ends)] for row, ends in zip(rewards, step_ends)]

    def branch_token_rewards(self, trajs, branches) -> list[list[list[torch.Tensor]]]:
        """Per-token rewards of every branch rollout's continuation: its RM on the last token, plus the KL
        reward of its own tokens when the KL is a reward (spec §1.13 Step 2: rollouts pay KL too)."""
        rewards = [[[terminal_reward(len(g.token_ids), r) for g, r in zip(gens, rs)]
                    for gens, rs in zip(br.rollouts, br.rewards)] for br in branches]
        if not self.kl_in_rewards:
            return rewards
        where, prefixes, continuations = [], [], []
        for b, (tr, br) in enumerate(zip(trajs, branches)):
            for i, (knot, gens) in enumerate(zip(br.knots, br.rollouts)):
                for m, gen in enumerate(gens):
                    where.append((b, i, m))
                    prefixes.append(tr.prompt_ids + tr.response_ids[: knot.t - 1])
                    continuations.append(gen.token_ids)
        if not where:
            if parallel.is_sharded(self.reference):  # FSDP2: every rank must join each sharded forward
                with torch.no_grad():
                    response_logprobs(self.reference, pack([[0]], [[0]], self.tokenizer.pad_token_id))
            return rewards
        packed = pack(prefixes, continuations, self.tokenizer.pad_token_id)
        old_logp = torch.zeros_like(packed.response_mask)  # [N, L] the sampler's log-probs are pi_old's
        for row, (b, i, m) in enumerate(where):
            logprobs = branches[b].rollouts[i][m].logprobs
            old_logp[row, : len(logprobs)] = torch.tensor(logprobs)
        with torch.no_grad():
            ref_logp, _ = response_logprobs(self.reference, packed)  # [N, L]
        kl = kl_token_rewards(old_logp, ref_logp, packed.response_mask, self.cfg.algo.kl)  # [N, L]
        for row, (b, i, m) in enumerate(where):
            rewards[b][i][m] = rewards[b][i][m] + kl[row, : len(continuations[row])]
        return rewards

    def optimize(self, batch: FrozenBatch, advantages: torch.Tensor) -> dict[str, float]:
        mask = batch.packed.response_mask
        returns = self.algo.value_targets(batch.inputs, self.cfg.algo) if self.critic is not None else None
        metrics: dict[str, float] = {}
        for _ in range(getattr(self.cfg.algo, "optimization_num", 1)):
            logp, entropy = response_logprobs(self.train_policy, batch.packed, with_entropy=True)
            loss_inputs = LossInputs(logp=logp, old_logp=batch.old_logp, advantages=advantages, response_mask=mask,
                                     group_ids=batch.inputs.group_ids, ref_logp=batch.ref_logp, entropy=entropy,
                                     step_ends=batch.inputs.step_ends)
            loss, loss_metrics = self.algo.policy_loss(loss_inputs, self.cfg.algo)
            loss_metrics = {"policy_loss": loss.item(), **loss_metrics}
            if self.critic is not None:
                values = self.train_critic(batch.packed)  # [B, T]
                critic_loss, critic_metrics = self.algo.value_loss(values, batch.old_values, returns, mask,
                                                                   self.cfg.algo)
                loss_metrics = {**loss_metrics, **critic_metrics}
                loss = loss + critic_loss
            for optimizer in self.optimizers:
                optimizer.zero_grad(set_to_none=True)
            loss.backward()  # DDP: the gradients are now the mean over ranks, before clipping
            grad_norm = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.cfg.train.grad_clip)
            if self.critic is not None:
                torch.nn.utils.clip_grad_norm_(self.critic.parameters(), self.cfg.train.grad_clip)
            for optimizer in self.optimizers:
                optimizer.step()
            metrics = {"loss": loss.item(), "grad_norm": float(grad_norm), **loss_metrics,
                       "entropy": masked_mean(entropy.detach(), mask).item()}
        return metrics

    # ---------------------------------------------------------------- driver
    def train_step(self, step: int) -> dict[str, float]:
        timer = PhaseTimer()
        problems = dist.shard(self.step_problems(step))  # this rank's prompts: r, r + W, ...
        with timer("generate"):
            trajs = self.sample_policy(step, problems)
        with timer("branch"):
            branches = self.sample_branches(step, trajs)
        with timer("score"):
            self.score(trajs, branches)
        with timer("train"):
            batch = self.frozen_batch(trajs, branches)
            advantages = dist.global_advantages(self.algo.advantages, batch.inputs, self.cfg.algo).detach()  # [B, T]
            metrics = self.optimize(batch, advantages)
        if self.logger.wants_samples(step):
            self.logger.log_samples(step, self.sample_rows(trajs, branches, batch, advantages))
        with timer("sync"):
            self.sampler.sync_weights(self.policy)  # the next step samples from the updated policy
        return dist.mean_metrics({**step_metrics(trajs, branches, advantages, batch.packed.response_mask), **metrics,
                                  **timer.seconds})

    def sample_rows(self, trajs, branches, batch: FrozenBatch, advantages: torch.Tensor) -> list[dict]:
        """Completions with their per-token advantages, knots and knot values, for the logger and `rlx inspect`."""
        decode = self.tokenizer.decode
        return [{"prompt": decode(tr.prompt_ids), "completion": tr.text, "reward": tr.reward,
                 "advantages": advantages[i, : len(tr.response_ids)].tolist(),  # response token j sits at column j
                 "tokens": [decode([tok]) for tok in tr.response_ids], "knots": batch.inputs.knots[i],
                 **knot_stats(branches[i].rewards)}
                for i, tr in enumerate(trajs)]

    def evaluate(self) -> float:
        problems = self.task.test[: self.cfg.train.eval_size]
        accuracy = greedy_accuracy(self.sampler, self.tokenizer, self.task, problems,
                                   self.cfg.train.max_new_tokens) if dist.is_main() else 0.0
        return dist.broadcast_from_main(accuracy)  # rank 0 evaluates, the others wait here

    def resume(self, path: Path | None) -> tuple[int, dict]:
        """(first step to run, saved extra state) from `path`, a checkpoint `rundir.open_run` verified;
        None starts at step 1."""
        if path is None:
            return 1, {}
        step, extra = checkpoint.load_checkpoint(path, self.policy, self.optimizers, self.critic)
        self.sampler.sync_weights(self.policy)
        if dist.is_main():
            checkpoint.truncate_metrics(self.run_dir / "metrics.jsonl", step)
        print(f"[rlx] resumed from {path} (step {step})")
        return step + 1, extra

    def checkpoint(self, step: int, extra: dict) -> Path:
        gathered = parallel.gather_train_state(self.policy, self.optimizers, self.critic)  # FSDP2: a collective
        if dist.is_main():
            checkpoint.save_checkpoint(self.run_dir, step, self.policy, self.tokenizer, self.optimizers,
                                       self.critic, extra, self.cfg.train.keep_last,
                                       meta=rundir.checkpoint_meta(self.cfg), gathered=gathered)
        dist.barrier()  # every rank can resume from it once any rank moves on
        return checkpoint.checkpoint_root(self.run_dir) / f"step_{step}"

    def preempted(self, step: int, extra: dict, progress) -> None:
        """After a preemption signal: a resumable checkpoint of `step`, then exit with preemption.EXIT_CODE."""
        progress.close()
        path = self.checkpoint(step, extra)
        if dist.is_main():
            print(f"[rlx] preempted after step {step}: resumable checkpoint {path}; continue with resume=auto "
                  f"(same run directory); exit code {preemption.EXIT_CODE}", flush=True)
            self.logger.close()
        self.sampler.close()
        dist.close()
        preemption.exit()

    def save(self) -> Path:
        """The final HF checkpoint, written by rank 0 (call it on every rank: FSDP2 gathers the weights)."""
        ckpt = self.run_dir / "checkpoint"
        gathered = parallel.gather_train_state(self.policy, [], None)
        if not dist.is_main():
            return ckpt
        if gathered:
            self.policy.save_pretrained(str(ckpt), state_dict=gathered["policy"])
        else:
            save_policy(self.policy, ckpt)  # LoRA: the adapter (ckpt/adapter) and the merged model
        self.tokenizer.save_pretrained(str(ckpt))
        return ckpt


def train(cfg: RunConfig, resolved_config: str = "") -> dict:
    with rundir.open_run(cfg, resolved_config) as run:  # lock, verified resume, config history: before any model
        return run.finished or _train(cfg, resolved_config, run.resume_from)


def _train(cfg: RunConfig, resolved_config: str, resume_from: Path | None) -> dict:
    started = time.time()
    trainer = Trainer(cfg)
    first_step, state = trainer.resume(resume_from)
    started -= state.get("elapsed", 0.0)
    trainer.logger = (build_logger(cfg.logger, trainer.run_dir, resolved_config=resolved_config) if dist.is_main()
                      else dist.NullLogger())  # one metrics.jsonl per run
    if first_step == 1:
        state["accuracy_before"] = trainer.evaluate()
        trainer.logger.log(0, {"test_accuracy": state["accuracy_before"]})
    accuracy_before = state["accuracy_before"]
    print(f"[rlx] test accuracy before training: {accuracy_before:.3f} on {cfg.train.eval_size} problems")
    progress = _progress(cfg, first_step - 1)
    preemption.install()  # a preemption signal now only raises a flag, checked after each step
    for step in range(first_step, cfg.train.steps + 1):
        metrics = trainer.train_step(step)
        if cfg.train.eval_every and step % cfg.train.eval_every == 0 and step != cfg.train.steps:
            metrics["test_accuracy"] = trainer.evaluate()
        metrics["wall_seconds"] = time.time() - started
        trainer.logger.log(step, metrics)
        if cfg.train.save_every and step % cfg.train.save_every == 0 and step != cfg.train.steps:
            trainer.checkpoint(step, {"accuracy_before": accuracy_before, "elapsed": time.time() - started})
        progress.update(1)
        progress.set_postfix(reward=f"{metrics['reward_mean']:.3f}", acc=f"{metrics['train_accuracy']:.3f}")
        if preemption.should_stop():  # SIGTERM/SIGUSR1/SIGUSR2 on any rank: checkpoint this step and leave
            trainer.preempted(step, {"accuracy_before": accuracy_before, "elapsed": time.time() - started}, progress)
    progress.close()
    preemption.uninstall()
    accuracy_after = trainer.evaluate()
    dist.write_parameter_digest(trainer.run_dir, trainer.policy)
    ckpt = trainer.save()
    if not dist.is_main():  # rank 0 alone writes the checkpoint and summary
        trainer.sampler.close()
        dist.close()
        return {"accuracy_after": accuracy_after}
    trainer.logger.log(cfg.train.steps, {"test_accuracy": accuracy_after, "final": True})
    (ckpt / "rlx_config.yaml").write_text(resolved_config)
    summary = {"accuracy_before": accuracy_before, "accuracy_after": accuracy_after,
               "wall_seconds": time.time() - started, "eval_size": min(cfg.train.eval_size, len(trainer.task.test)),
               "algo": cfg.algo.name, "steps": cfg.train.steps, "checkpoint": str(ckpt)}
    summary["skipped_rows"] = trainer.task.skipped_total  # malformed data rows skipped (data.on_error=skip)
    (trainer.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    trainer.logger.log_summary(summary)
    trainer.sampler.close()
    trainer.logger.close()
    dist.close()
    print(f"[rlx] test accuracy: {accuracy_before:.3f} -> {accuracy_after:.3f} "
          f"({summary['wall_seconds']:.0f}s); run directory {trainer.run_dir}")
    return summary


# -------------------------------------------------------------------- helpers
def terminal_reward(length: int, reward: float) -> torch.Tensor:
    rewards = torch.zeros(length)  # [L] zero-reward assumption: the whole RM on the last token
    rewards[-1] = reward
    return rewards


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


def _progress(cfg: RunConfig, done: int):
    from tqdm.auto import tqdm

    return tqdm(total=cfg.train.steps, initial=done, desc=f"rlx {cfg.algo.name}",
                disable=not cfg.train.progress_bar or not dist.is_main())
