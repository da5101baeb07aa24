"""The outer loop around the step driver (`rlx.train.loop`): how many steps run and what happens between them.

It owns the stopping rule (`train.steps`, `train.token_budget`, `train.time_budget_s`, whichever comes first;
`rlx.train.budget`), the evaluation cadence (every `train.eval_every` steps and every `train.eval_every_tokens`
generated tokens), resumable checkpoints every `train.save_every` steps, preemption (a SIGTERM/SIGUSR1 flag
checked after each step; a step stopped in its generation or before its first optimizer step is abandoned and
the step before checkpointed; a signal in the final evaluation checkpoints the last step;
`rlx.train.infra.preemption`), and
the end of a run: the final evaluation, the gathered HF checkpoint and summary.json. `trainer` is the loop's
`Trainer` (duck-typed, so this module imports no upward).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from rlx.models.full_params import reshard
from rlx.train.budget import Budget, BudgetCounters
from rlx.train.infra import checkpoint, preemption
from rlx.train.infra import distributed as dist
from rlx.train.metrics import progress_bar, write_summary

if TYPE_CHECKING:
    from rlx.config import RunConfig

PENDING_EVAL = "pending_eval"  # in a checkpoint's extra: its step's metrics row, whose evaluation a signal stopped


class EvaluationStopped(Exception):
    """A preemption signal cut short the evaluation due at a trained step; `row`: the step's metrics so far."""

    def __init__(self, row: dict):
        super().__init__("evaluation stopped")
        # plain Python numbers (numpy / 0-d tensor values .item()'d): the checkpoint's weights-only loader reads it
        self.row = {k: v.item() if hasattr(v, "item") else v for k, v in row.items()}


def resume_state(accuracy_before: float, started: float, counters: BudgetCounters) -> dict:
    """The `extra` of a resumable checkpoint: what a resumed run needs beyond weights, optimizers and RNG states."""
    return {"accuracy_before": accuracy_before, "elapsed": time.time() - started, **counters.state()}


def finish(trainer, resolved_config: str, accuracy_before: float, started: float, last_step: int,
           counters: BudgetCounters) -> dict:
    """The final evaluation, HF checkpoint (gathered on every rank) and summary.json (rank 0). A preemption
    signal before or during the evaluation writes the last step's resumable checkpoint instead and exits:
    `resume=auto` then comes straight back here (`run_steps` finds the budget spent)."""
    cfg = trainer.cfg
    try:
        accuracy_after = trainer.evaluate("final_eval")
    except preemption.Preempted:
        preemption.checkpoint_and_exit(trainer, last_step, resume_state(accuracy_before, started, counters),
                                       phase="final_eval")
    preemption.enter("end")  # seconds from here: a signal lets the run complete (exit 0, nothing to resume)
    dist.write_parameter_digest(trainer.run_dir, trainer.policy)
    reshard(trainer.train_policy)
    ckpt = checkpoint.save_final(trainer.run_dir, trainer.policy, trainer.tokenizer)
    if not dist.is_main():  # rank 0 alone writes the checkpoint and summary
        trainer.close()
        return {"accuracy_after": accuracy_after}
    trainer.logger.log(last_step, {"test_accuracy": accuracy_after, "final": True})
    (ckpt / "rlx_config.yaml").write_text(resolved_config)
    summary = write_summary(cfg, trainer.run_dir, trainer.task, ckpt, (accuracy_before, accuracy_after), started,
                            last_step, counters.state())
    trainer.logger.log_summary(summary)
    trainer.close()
    print(f"[rlx] test accuracy: {accuracy_before:.3f} -> {accuracy_after:.3f} "
          f"({summary['wall_seconds']:.0f}s); run directory {trainer.run_dir}")
    return summary


def run_steps(trainer, cfg: RunConfig, first_step: int, state: dict, started: float,
              ) -> tuple[int, BudgetCounters]:
    """Train until `train.steps`, `train.token_budget` or `train.time_budget_s` is spent (rlx/train/budget.py),
    evaluating every `train.eval_every` steps and every `train.eval_every_tokens` generated tokens; logs the
    cumulative `tokens_total` and `wall_train_s` every step. Returns the last step run and the counters.
    A resumed run whose checkpoint already spent the budget (preempted in the final evaluation) runs no step."""
    t = cfg.train
    budget = Budget(t.steps, t.token_budget, t.time_budget_s, t.eval_every_tokens)
    counters = BudgetCounters.from_state(state)
    preemption.enter("training")  # a preemption signal now only raises a flag, checked after each step
    _pending_evaluation(trainer, first_step - 1, state, started, counters)
    spent = budget.should_stop(first_step - 1, counters.tokens_total, counters.wall_train_s) if first_step > 1 else None
    if spent is not None:
        print(f"[rlx] train.{spent} was spent at step {first_step - 1}: no step to run, on to the final evaluation")
        return first_step - 1, counters
    progress = progress_bar(cfg, first_step - 1)
    extra = resume_state(state["accuracy_before"], started, counters)
    for step in range(first_step, t.steps + 1):
        try:
            metrics, stop = _step(trainer, cfg, step, budget, counters, started)
        except preemption.RunAborted as err:  # e.g. a generation worker died or hangs: checkpoint, stop
            preemption.checkpoint_and_abort(trainer, step - 1, extra, progress, err)
        except preemption.Preempted as stopped:  # in its generation or update: no optimizer step taken yet
            _abandon_step(trainer, step, extra, progress, stopped.phase)
        except EvaluationStopped as stopped:  # the step is trained: checkpoint it, its evaluation still due
            extra = {**resume_state(state["accuracy_before"], started, counters), PENDING_EVAL: stopped.row}
            preemption.checkpoint_and_exit(trainer, step, extra, progress, phase="step_eval")
        extra = resume_state(state["accuracy_before"], started, counters)
        if t.save_every and step % t.save_every == 0 and stop is None:
            trainer.checkpoint(step, extra)
        progress.update(1)
        progress.set_postfix(reward=f"{metrics['reward_mean']:.3f}", acc=f"{metrics['train_accuracy']:.3f}")
        if stop is None and preemption.should_stop():  # SIGTERM/SIGUSR1/SIGUSR2 on any rank: checkpoint, leave
            preemption.checkpoint_and_exit(trainer, step, extra, progress)
        if stop is not None:
            if stop != "steps":
                print(f"[rlx] train.{stop} spent after step {step}: {counters.tokens_total} tokens, "
                      f"{counters.wall_train_s:.0f}s of training")
            break
    progress.close()
    return step, counters


def _abandon_step(trainer, step: int, extra: dict, progress, phase: str) -> None:
    """A signal in step `step`'s rollout generation or in its update before the first optimizer step
    (rlx/train/infra/preemption.py, `generate`, `update`): the checkpoint of the step before, whose state the
    step left untouched (`extra` and the budget counters are still its); none before step 1 (the run starts
    again)."""
    if step == 1:
        progress.close()
        preemption.leave_unsaved(phase, None, trainer.close)
    preemption.checkpoint_and_exit(trainer, step - 1, extra, progress, phase=phase)


def _step(trainer, cfg: RunConfig, step: int, budget: Budget, counters: BudgetCounters, started: float,
          ) -> tuple[dict, str | None]:
    """One training step, its budget bookkeeping, any evaluation due and its metrics row; returns (the step's
    metrics, the spent budget's name or None to go on)."""
    t = cfg.train
    step_started, cpu_started = time.time(), time.process_time()
    metrics = trainer.train_step(step)
    generated = metrics["tokens_policy"] + metrics["tokens_branch"] + metrics.get("tokens_dropped", 0.0)
    seconds = dist.broadcast_from_main(time.time() - step_started)  # every rank stops at the same step
    before, after = counters.add(round(generated * dist.world_size()), seconds,  # tokens of all ranks
                                 time.process_time() - cpu_started)  # this rank's CPU time
    stop = budget.should_stop(step, counters.tokens_total, counters.wall_train_s)
    metrics.update(counters.state())
    by_steps = bool(t.eval_every) and step % t.eval_every == 0
    if stop is None and (by_steps or budget.eval_due(before, after)):  # the last step's eval follows the loop
        try:
            metrics["test_accuracy"] = trainer.evaluate("step_eval")  # a signal stops it at once
        except preemption.Preempted:
            raise EvaluationStopped(metrics) from None
    metrics["wall_seconds"] = time.time() - started
    trainer.logger.log(step, metrics)
    return metrics, stop


def _pending_evaluation(trainer, step: int, state: dict, started: float, counters: BudgetCounters) -> None:
    """On resume from step `step`'s checkpoint written when a signal stopped the evaluation due at it: that
    evaluation first, then the step's metrics row, as the uninterrupted run logged it. A signal in it again
    writes the same checkpoint again."""
    row = state.pop(PENDING_EVAL, None)
    if row is None:
        return
    try:
        row["test_accuracy"] = trainer.evaluate("step_eval")
    except preemption.Preempted:
        extra = {**resume_state(state["accuracy_before"], started, counters), PENDING_EVAL: row}
        preemption.checkpoint_and_exit(trainer, step, extra, phase="step_eval")
    row["wall_seconds"] = time.time() - started
    trainer.logger.log(step, row)
