"""The update: the optimizer steps taken on one training step's frozen batch (`FrozenBatch`, with its
advantages and loss weights: rlx/train/learn/batch.py).

Owns the epoch / mini-batch / micro-batch structure and exact gradient accumulation:
  - `algo.optimization_num` epochs; each splits the batch into `train.mini_batches` mini-batches of whole
    groups (rows sharing a prompt; a TRePO trajectory is one row), reshuffled every epoch by a generator
    seeded from (seed, step), one optimizer step per mini-batch; a mini-batch and each of its micro-batches
    are the batch's own rows, selected (`FrozenBatch.select`);
  - each optimizer step runs its forward + backward passes per micro-batch (`Forwards.plan`) and
    normalises every loss by the optimizer step's own counts (`AggScale`: tokens, sequences, rows and one
    padded width), so the accumulated gradient equals the unsplit batch's for every `loss_agg`
    (docs/algorithms.md, "Micro-batches and mini-batches");
  - a non-finite loss or gradient norm stops the run naming the step and metric, or skips that optimizer
    step with `train.skip_nonfinite=true` (counted as `nonfinite_skipped`).
When the ratio is identically 1 (one epoch, one mini-batch) pi_old's log-probs are the loss pass's own,
detached: no separate no-grad forward (the same numbers, one pass fewer).
"""

from __future__ import annotations

import math

import torch

from rlx.algos.base import ValueLossInputs
from rlx.algos.losses import AggScale
from rlx.algos.stats import masked_mean
from rlx.train.infra import parallel, preemption
from rlx.train.learn.batch import FrozenBatch
from rlx.train.learn.correction import mismatch
from rlx.train.learn.forwards import DUMMY, Forwards

SUMMED = ("loss", "policy_loss", "pg_loss", "kl_ref", "vf_loss")  # globally normalised: micro-batches add up
EXTREMES = {"mismatch_ratio_max": max, "mismatch_ratio_min": min}  # over micro-batches and optimizer steps


class NonFiniteError(RuntimeError):
    """A loss or gradient norm of the update is NaN or infinite."""


def mini_batch_rows(group_ids: torch.Tensor, mini_batches: int, generator: torch.Generator) -> list[list[int]]:
    """Rows of each mini-batch: the groups are shuffled by `generator` and dealt into `mini_batches` nearly
    equal parts, a group's rows always together. One mini-batch keeps the batch as it is."""
    ids = group_ids.tolist()  # [B]
    if mini_batches == 1:
        return [list(range(len(ids)))]
    groups = list(dict.fromkeys(ids))  # in order of first appearance
    order = torch.randperm(len(groups), generator=generator).tolist()
    parts = [set(groups[i] for i in part.tolist()) for part in torch.tensor_split(torch.tensor(order), mini_batches)]
    return [[r for r, g in enumerate(ids) if g in part] for part in parts if part]


def combine(parts: list[tuple[dict[str, float], float]]) -> dict[str, float]:
    """Micro-batch metrics of one optimizer step: losses add up (each is already normalised by the step's
    counts), the rest are means weighted by the micro-batch's token count."""
    if len(parts) == 1:
        return dict(parts[0][0])
    total = sum(w for _, w in parts) or 1.0
    keys = dict.fromkeys(k for m, _ in parts for k in m)
    return {k: EXTREMES[k](m[k] for m, _ in parts if k in m) if k in EXTREMES else
            sum(m.get(k, 0.0) * (1.0 if k in SUMMED else w / total) for m, w in parts) for k in keys}


def mean_of_steps(taken: list[dict[str, float]]) -> dict[str, float]:
    """Metrics of a training step: the mean over its optimizer steps (the mismatch extremes: max / min)."""
    if len(taken) <= 1:
        return taken[0] if taken else {}
    return {k: EXTREMES[k](m[k] for m in taken) if k in EXTREMES else sum(m[k] for m in taken) / len(taken)
            for k in taken[0]}


def freezes_old_logprobs(cfg) -> bool:
    """Whether a step freezes pi_old's log-probs in a no-grad pass before its update: the one place this is
    decided (the batch builder computes them exactly then; the update and the loss weights read what it made).
    Not needed when pi_old = pi_theta for the only optimizer step, so the ratio is identically 1 and the loss
    pass's own log-probs, detached, are pi_old's: one epoch, one mini-batch, no rollout correction and no decoupled
    objective (both weigh by the frozen pi_old), fresh batches (with train.max_staleness >= 1 the sampling weights
    are older than the trainer's). Always needed when the KL is booked in the rewards, which read pi_old."""
    algo, train = cfg.algo, cfg.train
    ratio_is_one = (algo.optimization_num == 1 and train.mini_batches == 1 and algo.rollout_correction.mode == "none"
                    and train.max_staleness == 0 and not train.uses_decoupled_objective())
    return kl_in_rewards(algo) or not ratio_is_one


def kl_in_rewards(algo_cfg) -> bool:
    """The KL to the reference is booked in the rewards (`algo.kl.mode` reward_token / reward_response)."""
    return algo_cfg.kl.beta > 0 and algo_cfg.kl.mode in ("reward_token", "reward_response")


class Updater:
    """`policy` / `critic` are the modules whose parameters the optimizers own (clipped here); `train_policy` /
    `train_critic` are what the forwards go through: the same modules in one process, their DDP / FSDP2
    wrappers under torchrun (`rlx.train.infra.parallel`)."""

    def __init__(self, cfg, algo, policy, critic, optimizers: list, forwards: Forwards, train_policy=None,
                 train_critic=None):
        self.cfg, self.algo, self.policy, self.critic = cfg, algo, policy, critic
        self.train_policy = policy if train_policy is None else train_policy
        self.train_critic = critic if train_critic is None else train_critic
        self.optimizers = optimizers
        self.forwards = forwards

    def run(self, batch: FrozenBatch, step: int) -> dict[str, float]:
        """All epochs and mini-batches of one training step -> metrics averaged over its optimizer steps."""
        generator = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + step)
        taken, skipped = [], 0
        for _ in range(self.cfg.algo.optimization_num):
            for rows in mini_batch_rows(batch.group_ids, self.cfg.train.mini_batches, generator):
                metrics = self.optimizer_step(batch, rows, step)
                if metrics is None:
                    skipped += 1
                else:
                    taken.append(metrics)
        out = mean_of_steps(taken)
        if batch.weights is not None and batch.weights.metrics:
            out.update(batch.weights.metrics)
        if self.cfg.train.skip_nonfinite:
            out["nonfinite_skipped"] = float(skipped)
        return out

    def optimizer_step(self, batch: FrozenBatch, rows: list[int], step: int) -> dict[str, float] | None:
        """Forward + backward per micro-batch of the mini-batch `rows`, then one step of every optimizer (None:
        skipped)."""
        mask = batch.packed.response_mask[rows]  # [b, T], the step's full padded width
        whole = len(rows) == mask.shape[0] == batch.packed.response_mask.shape[0]
        keep = batch.weights.keep if batch.weights is not None else None  # [B, T] 0 on rejected tokens
        every_row = list(rows) == list(range(batch.packed.response_mask.shape[0]))
        mini = batch if every_row else batch.select(rows)  # the micro-batches' rows index the mini-batch
        plan = self.forwards.synced_plan(mini.packed)  # torchrun: as many micro-batches on every rank
        # the optimizer step's counts, rejected tokens left out; None: the unsplit batch's own counts
        scale = None if whole and len(plan) == 1 and keep is None else AggScale.of(
            mask if keep is None else mask * keep[rows])
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=True)
        parts = self.backward_passes(mini, plan, scale)
        metrics = {"loss": 0.0, **combine(parts)}  # a rank whose micro-batches were all dummies reports 0
        # the gradients are now the mean over ranks (DDP/FSDP2): clipping and the step act on that mean
        grad_norm = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.cfg.train.grad_clip)
        if self.critic is not None:
            torch.nn.utils.clip_grad_norm_(self.critic.parameters(), self.cfg.train.grad_clip)
        metrics = {"loss": metrics.pop("loss"), "grad_norm": float(grad_norm), **metrics}
        if not self.finite(metrics, step):
            return None
        for optimizer in self.optimizers:
            optimizer.step()
        preemption.committed()  # the step has changed the weights: from here a signal lets it finish
        return metrics

    def backward_passes(self, batch: FrozenBatch, plan: list[list[int]], scale: AggScale | None,
                        ) -> list[tuple[dict[str, float], float]]:
        """Forward + backward of every micro-batch of `plan`, gradients accumulated -> (metrics, response
        tokens) per micro-batch. Before the step's first optimizer step a preemption signal on any rank abandons
        the step before the next micro-batch or the optimizer step (`preemption.abandon_point`): the gradients
        are dropped."""
        parts = []
        try:
            for i, micro in enumerate(plan):
                preemption.abandon_point()  # as many checks on every rank: `synced_plan` evened the counts out
                is_last = i == len(plan) - 1  # DDP/FSDP2 average the gradients over ranks in the last backward only
                with parallel.no_sync(self.train_policy, is_last), parallel.no_sync(self.train_critic, is_last):
                    loss, metrics = self.micro_batch_loss(batch, micro, scale) if micro else self.dummy_loss()
                    loss.backward()
                parts.append((metrics, float(batch.packed.response_mask[micro].sum())))
            preemption.abandon_point()  # and after the last backward: a signal during it still abandons the step
        except preemption.Preempted:
            for optimizer in self.optimizers:
                optimizer.zero_grad(set_to_none=True)
            raise
        return parts

    def finite(self, metrics: dict[str, float], step: int) -> bool:
        """False (skip) or NonFiniteError (stop) when the loss or the gradient norm is not a finite number."""
        bad = [k for k in ("loss", "grad_norm") if not math.isfinite(metrics[k])]
        if not bad:
            return True
        if self.cfg.train.skip_nonfinite:
            print(f"[rlx] step {step}: non-finite {bad[0]} ({metrics[bad[0]]}); optimizer step skipped")
            return False
        raise NonFiniteError(f"step {step}: non-finite {bad[0]} ({metrics[bad[0]]}); stopping. Lower train.lr, "
                             "check the rewards, or set train.skip_nonfinite=true to skip such optimizer steps")

    def dummy_loss(self) -> tuple[torch.Tensor, dict[str, float]]:
        """Zero times a one-token forward of every trained module: a rank with fewer real micro-batches than
        the others joins their collective forward and backward passes, adding nothing to the gradients."""
        logp, _ = self.forwards.logprobs(self.train_policy, DUMMY)  # [1, 1]
        loss = logp.sum() * 0.0
        if self.train_critic is not None:
            loss = loss + self.forwards.values(self.train_critic, DUMMY).sum() * 0.0
        return loss, {}

    def micro_batch_loss(self, batch: FrozenBatch, rows: list[int], scale: AggScale | None):
        """Policy (+ critic) loss of the micro-batch `rows` of `batch`, normalised by the optimizer step's counts."""
        micro = batch.select(rows)  # every field of these rows, padding trimmed to them: [b, T']
        sub = self.forwards.lay_out(micro.packed, rows)  # prefixes shared as planned
        logp, entropy = self.forwards.logprobs(self.train_policy, sub, with_entropy=True)  # [b, T'] fp32
        inputs = micro.loss_inputs(logp, entropy, scale)  # the loss weights applied
        loss, loss_metrics = self.algo.policy_loss(inputs, self.cfg.algo)
        metrics = {"policy_loss": loss.item(), **loss_metrics}
        if self.critic is not None:
            values = self.forwards.values(self.train_critic, sub)  # [b, T'] fp32
            critic_loss, critic_metrics = self.algo.value_loss(
                ValueLossInputs(values, micro.old_values, micro.returns, sub.response_mask, scale), self.cfg.algo)
            metrics.update(critic_metrics)
            loss = loss + critic_loss
        metrics["entropy"] = masked_mean(entropy.detach(), sub.response_mask).item()
        metrics.update(mismatch(micro.sampler_logp, inputs.old_logp, sub.response_mask))
        return loss, {"loss": loss.item(), **metrics}
