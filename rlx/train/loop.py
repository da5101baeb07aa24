"""The step driver: the step's rollout record from a rollout source (the rollout phase, rlx/train/rollout/:
sample -> branch -> score -> the immutable record of rlx/record.py), then the learning phase (rows of the
record -> frozen batch -> advantages -> update, rlx/train/learn/), publish the weights, log.

It serves every registered algorithm and never branches on an algorithm's name: the algorithm says which
inputs it needs (`requires`, checked once at start-up by `setup`), where to branch (`plan_branches`,
`plan_forks`), turns the frozen batch into advantages (`advantages`) and defines the losses. The rollout source
is the phase in this process (`LocalRollouts`), or the generation ranks of async rollouts (`RemoteRollouts`,
rlx/train/rollout/remote.py): the driver is the same. docs/architecture.md draws the data flow.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from rlx import algos
from rlx.algos.base import CRITIC_VALUES
from rlx.logger import build_logger
from rlx.models.full_params import reshard
from rlx.models.logprobs import attention_pair_cost
from rlx.record import RolloutBatch
from rlx.sampling.factory import build_sampler
from rlx.train import schedule, setup
from rlx.train.infra import checkpoint, preemption, rundir
from rlx.train.infra import distributed as dist
from rlx.train.learn import correction
from rlx.train.learn.batch import BatchBuilder
from rlx.train.learn.forwards import Forwards
from rlx.train.learn.update import Updater, freezes_old_logprobs, kl_in_rewards
from rlx.train.metrics import PhaseTimer, greedy_accuracy, sample_rows, seed_everything, step_metrics
from rlx.train.rollout.phase import LocalRollouts, StepProblems, build_phase, newline_tokens

if TYPE_CHECKING:
    from rlx.config import RunConfig

__all__ = ["Trainer", "train"]

PREEMPTED = -1.0  # what `Trainer.evaluate` broadcasts for an evaluation a signal stopped (no accuracy is negative)


class Trainer:
    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        dist.init()  # joins torchrun's process group when WORLD_SIZE > 1
        setup.check_world(cfg)  # before any model loads
        self.algo = algos.get(cfg.algo.name)
        self.run_dir = Path(cfg.output_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        seed_everything(cfg.seed)
        inputs = setup.load_inputs(cfg, self.algo)  # data and reward errors surface before any model
        self.task, self.reward_fn, self.model_path, self.tokenizer = (inputs.task, inputs.reward_fn,
                                                                      inputs.model_path, inputs.tokenizer)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.policy = setup.load_policy(self.model_path, cfg.model, self.device)
        self.reference = setup.load_reference(self.model_path, self.device) if cfg.algo.kl.beta > 0 else None
        self.critic = None
        if self.algo.needs(cfg.algo, CRITIC_VALUES):
            self.critic = setup.load_critic(self.model_path, cfg.model, self.device)
        dist.broadcast_parameters([self.policy, self.critic])  # identical replicas on every rank
        self.train_policy, self.train_critic, self.reference = setup.wrap_for_strategy(
            cfg, self.policy, self.critic, self.reference)
        self.optimizers = setup.build_optimizers(cfg, self.policy, self.critic)  # after the wrap: FSDP2's shards
        self.sampler = build_sampler(cfg.sampler, self.policy, self.tokenizer, self.model_path, cfg.model.dtype,
                                     seed=cfg.seed)
        reshard(self.train_policy)  # the canary's start-up calibration ran a forward: FSDP2 left the root gathered
        if cfg.train.num_threads > 0:  # after the sampler: a vLLM engine start may change the count
            torch.set_num_threads(cfg.train.num_threads)
        self.newline_ids = newline_tokens(self.tokenizer)
        self.step_problems = StepProblems.of(self.task, cfg.seed, cfg.train.prompts_per_step)
        self._build_step_parts()
        self.source = self._rollout_source()
        self.logger = None  # opened by _train(), after a resume has truncated metrics.jsonl

    def _build_step_parts(self) -> None:
        cfg = self.cfg
        self.forwards = Forwards(cfg.train.micro_batch_tokens, cfg.train.micro_batch_size, cfg.model.dtype,
                                 self.device, cfg.model.logprob_chunk,
                                 share_prefix=cfg.train.shares_prefixes(self.device.type),
                                 pair_cost=attention_pair_cost(self.policy))
        self.updater = Updater(cfg, self.algo, self.policy, self.critic, self.optimizers, self.forwards,
                               self.train_policy, self.train_critic)
        self.batches = BatchBuilder(cfg, self.algo, self.forwards, self.tokenizer.pad_token_id, self.newline_ids,
                                    self.train_policy, self.reference, self.critic, kl_in_rewards(cfg.algo),
                                    need_old_logp=freezes_old_logprobs(cfg))

    def _rollout_source(self):
        """Where the step's records come from: the rollout phase here, or the generation ranks (async rollouts)."""
        if self.cfg.train.rollout_workers:
            from rlx.train.rollout.remote import RemoteRollouts  # torchrun only: keep its imports off the default

            return RemoteRollouts(self.cfg, self.sampler)
        return LocalRollouts(build_phase(self.cfg, self.algo, self.sampler, self.tokenizer, self.task, self.reward_fn,
                                         self.forwards, self.policy, self.newline_ids))

    # ---------------------------------------------------------------- driver
    def train_step(self, step: int) -> dict[str, float]:
        timer = PhaseTimer()
        problems = dist.shard(self.step_problems(step))  # this rank's prompts: r, r + W, ...
        with preemption.within(preemption.generation_phase(self.cfg.train.rollout_workers)):  # may stop at once
            preemption.pause_point("generate", step)
            rollout_batch, extra = self.rollouts(problems, step, timer)  # the step's immutable rollout record
        with timer("train"), preemption.updating(step):  # a signal abandons the step until its first optimizer step
            batch, metrics = self.learn(rollout_batch, step)
        if self.logger.wants_samples(step):
            self.logger.log_samples(step, sample_rows(self.tokenizer, rollout_batch, batch.advantages))
        with timer("sync"):
            self.sync()  # the next step samples from the updated policy
        return dist.mean_metrics({**step_metrics(rollout_batch, batch.rows, batch.advantages, batch.packed),
                                  "tokens_forward": self.forwards.forward_tokens(batch.packed),  # shared: once
                                  **metrics, **extra, **timer.seconds})

    def learn(self, rollout_batch: RolloutBatch, step: int):
        """The learning phase of one rollout record: its frozen batch (its training rows, with their advantages
        [B, T] and loss weights) and the update's metrics (the optimizer steps taken)."""
        batch = self.batches.build(rollout_batch)  # the trained rows (with train_on_branches every node), frozen
        inputs = batch.advantage_inputs()  # what the algorithm declared it reads
        advantages = dist.global_advantages(self.algo.advantages, inputs, self.cfg.algo).detach()  # [B, T]
        returns = self.algo.value_targets(inputs, self.cfg.algo) if self.critic is not None else None
        sampler_logp, weights = correction.step_weights(self.cfg, [tree.nodes[i] for tree, i in batch.rows],
                                                        batch.packed.response_mask, batch.old_logp, advantages)
        batch = replace(batch, advantages=advantages, returns=returns, sampler_logp=sampler_logp, weights=weights)
        return batch, self.updater.run(batch, step)

    def rollouts(self, problems, step: int, timer: PhaseTimer) -> tuple[RolloutBatch, dict[str, float]]:
        """The step's immutable rollout record (rlx/record.py) and the rollout phase's metrics."""
        return self.source.rollouts(problems, step, timer)

    def sync(self) -> None:
        """The updated weights to whatever samples next (the sampler, or the generation ranks)."""
        reshard(self.train_policy)  # FSDP2 leaves the root's weights gathered after a forward
        self.source.publish(self.policy)

    def evaluate(self, phase: str | None = None) -> float:
        """Greedy test accuracy on `train.eval_size` test problems: rank 0 measures, every rank gets it. With
        `phase` ("first_eval", "step_eval": due at a trained step, "final_eval") a preemption signal cuts it short:
        when any rank was signalled before it, or rank 0 during it, every rank raises `preemption.Preempted`.
        Without, a signal waits for its end."""
        if phase is not None and preemption.should_stop():
            raise preemption.Preempted(phase)
        self.source.ready_for_eval(self.policy)
        accuracy = self._greedy_accuracy(phase) if dist.is_main() else 0.0
        accuracy = dist.broadcast_from_main(accuracy)  # rank 0 evaluates, the others wait here
        if phase is not None and accuracy == PREEMPTED:
            raise preemption.Preempted(phase)
        return accuracy

    def _greedy_accuracy(self, phase: str | None) -> float:
        """Rank 0's measurement for `evaluate`: PREEMPTED when a signal stopped it."""
        problems = self.task.test[: self.cfg.train.eval_size]
        if phase is None:
            return greedy_accuracy(self.sampler, self.tokenizer, self.task, problems, self.cfg.train.max_new_tokens)
        try:
            with preemption.within(phase):  # the signal handler raises Preempted in here
                preemption.pause_point(phase)
                return greedy_accuracy(self.sampler, self.tokenizer, self.task, problems,
                                       self.cfg.train.max_new_tokens)
        except preemption.Preempted:
            return PREEMPTED

    def resume(self, path: Path | None) -> tuple[int, dict]:
        """(first step to run, saved extra state) from `path`, a checkpoint `rundir.open_run` verified;
        None starts at step 1."""
        if path is None:
            return 1, self.source.start(1, {}, self.policy)
        step, extra = checkpoint.load_checkpoint(path, self.policy, self.optimizers, self.critic)
        self.sync()
        if dist.is_main():
            checkpoint.truncate_metrics(self.run_dir / "metrics.jsonl", step)
        print(f"[rlx] resumed from {path} (step {step})")
        return step + 1, self.source.start(step + 1, extra, self.policy)

    def checkpoint(self, step: int, extra: dict) -> Path:
        """A resumable checkpoint of `step` with the rollout source's state; call it on every rank (FSDP2 gathers,
        rank 0 writes). A generation worker that fails while its state is taken still gets what arrived saved."""
        try:
            own = self.source.checkpoint_state(step)
        except preemption.RunAborted as err:
            path = self._save(step, {**extra, **self.source.checkpoint_state(step)})
            raise SystemExit(f"rlx train: {err}. Stopped after step {step}: resumable checkpoint {path}; "
                             "continue with resume=auto") from None
        return self._save(step, {**extra, **own})

    def _save(self, step: int, extra: dict) -> Path:
        reshard(self.train_policy)  # FSDP2 leaves the root's weights gathered after a forward
        return checkpoint.save_resumable(self.run_dir, step, self.policy, self.tokenizer, self.optimizers,
                                         self.critic, extra, self.cfg.train.keep_last, rundir.checkpoint_meta(self.cfg))

    def close(self) -> None:
        """The end of every run, finished or preempted, on every rank: the sampler's engine, the logger (a no-op
        one on ranks > 0), then the process group (a barrier first: no rank leaves while another needs it)."""
        self.source.close()
        self.sampler.close()
        if self.logger is not None:
            self.logger.close()
        dist.close()


def train(cfg: RunConfig, resolved_config: str = "") -> dict:
    """Train `cfg` in its run directory; a preemption signal in any phase stops the run with
    `preemption.EXIT_CODE`, nothing lost (rlx/train/infra/preemption.py)."""
    installed = preemption.install()  # `rlx train` installed it at start-up already
    try:
        with rundir.open_run(cfg, resolved_config) as run:  # lock, verified resume, config history: before any model
            return run.finished or _train(cfg, resolved_config, run.resume_from)
    finally:
        if installed:
            preemption.uninstall()


def _build_trainer(cfg: RunConfig) -> Trainer | dict:
    """This rank's trainer; with train.rollout_workers (disaggregated, rlx/train/rollout/remote.py) a generation
    rank serves rollouts until the trainer is done and gets its own summary instead."""
    if not cfg.train.rollout_workers:
        return Trainer(cfg)
    from rlx.train.rollout import remote

    if remote.place(cfg) == remote.GENERATE:
        return remote.serve(cfg)
    return Trainer(cfg)


def _train(cfg: RunConfig, resolved_config: str, resume_from: Path | None) -> dict:
    started = time.time()
    if preemption.requested():  # a signal during start-up: leave before any model loads
        preemption.leave_unsaved("start-up", resume_from)
    try:
        with preemption.within("model_load"):  # the handler raises Preempted in here: nothing to save yet
            preemption.pause_point("model_load")
            trainer = _build_trainer(cfg)
            if isinstance(trainer, dict):  # a generation rank: it served its rollouts and is done
                return trainer
            first_step, state = trainer.resume(resume_from)
    except preemption.Preempted as stop:
        preemption.leave_unsaved(stop.phase, resume_from)
    started -= state.get("elapsed", 0.0)
    trainer.logger = (build_logger(cfg.logger, trainer.run_dir, resolved_config=resolved_config) if dist.is_main()
                      else dist.NullLogger())  # one metrics.jsonl per run
    try:
        accuracy_before = _accuracy_before(trainer, first_step, state)
    except preemption.Preempted as stop:
        preemption.leave_unsaved(stop.phase, resume_from, trainer.close)
    print(f"[rlx] test accuracy before training: {accuracy_before:.3f} on {cfg.train.eval_size} problems")
    last_step, counters = schedule.run_steps(trainer, cfg, first_step, state, started)
    return schedule.finish(trainer, resolved_config, accuracy_before, started, last_step, counters)


def _accuracy_before(trainer: Trainer, first_step: int, state: dict) -> float:
    """The test accuracy before training: measured (step 0 of metrics.jsonl) on a start from step 1, the
    checkpoint's on a resume. Raises `preemption.Preempted` for a signal since start-up or in this evaluation."""
    if first_step > 1:
        if preemption.should_stop():  # every rank: a signal since the model load
            raise preemption.Preempted("start-up")
        return state["accuracy_before"]
    state["accuracy_before"] = trainer.evaluate("first_eval")
    trainer.logger.log(0, {"test_accuracy": state["accuracy_before"]})
    return state["accuracy_before"]
