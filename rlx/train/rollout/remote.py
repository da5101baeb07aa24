"""Asynchronous rollouts: generation runs ahead of training by at most `train.max_staleness` = k policy versions.

Placement (`train.rollout_workers` = N >= 1, under `torchrun --nproc_per_node=1+N`): rank 0 trains, ranks
1..N only generate. The generation ranks are kept out of every trainer collective (`distributed.world_size`
counts the training ranks only). Each generation rank holds its own sampler (vLLM engine, or the HF sampler
on its own copy of the policy) and runs the whole rollout phase of the steps it serves (step s goes to worker
1 + (s - 1) mod N): responses, branch rollouts and deeper forks all from the same worker and the same policy
version, scored there, frozen into the step's immutable `RolloutBatch` (rlx/record.py) stamped with that
version: the worker runs the same `RolloutPhase` object as the synchronous trainer (rlx/train/rollout/phase.py),
and the trainer takes the records through `RemoteRollouts`, its rollout source. Records flow back to the
trainer and weights out to the workers as point-to-point messages over the process group
(`rlx.train.infra.channel`): no sockets or RPC of our own.

Staleness. Policy version v = optimizer updates applied (step s trains with version s - 1). Step s's records are
generated with version max(0, s - 1 - k) exactly: the worker waits for that publication and uses no newer one,
so runs are deterministic (two runs give the same metrics) and staleness = min(k, s - 1) at every step. The
trainer checks every node before training (a record more than k versions old is never trained on) and logs
`staleness_mean` / `staleness_max`. k = 0 with a worker reproduces the synchronous loop's metrics exactly.

Checkpoints carry the pipeline: the checkpoint of step s holds the records of steps s+1..s+k already generated
(with versions <= s - 1, which the checkpoint's weights could not regenerate), so `resume=auto` trains each
record exactly once and reproduces the uninterrupted run. A worker that dies or stays silent longer than
`train.rollout_timeout_s` stops the run with a message and a resumable checkpoint (`preemption.RunAborted`).
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.distributed as torch_dist

from rlx import algos
from rlx.data.configs import ConfigError
from rlx.models.full_params import iter_full_parameters
from rlx.models.load import load_causal_lm
from rlx.models.precision import MASTER_DTYPE
from rlx.record import RolloutBatch, from_plain, to_plain
from rlx.sampling.factory import build_sampler
from rlx.train import setup
from rlx.train.infra import distributed as dist
from rlx.train.infra import preemption
from rlx.train.infra.channel import Channel, ChannelError, flatten, layout_of, unflatten
from rlx.train.learn.forwards import Forwards
from rlx.train.metrics import PhaseTimer, seed_everything
from rlx.train.rollout.phase import StepProblems, build_phase

GENERATE, TRAIN = "generate", "train"
PIPELINE_KEY = "async_pipeline"  # the checkpoint's records of the steps after it (plain containers)
TRAINER_SILENCE_S = dist.DEFAULT_TIMEOUT_MINUTES * 60  # a worker waits this long for the trainer (evaluations)


def place(cfg) -> str:
    """Join torchrun's group with the last `train.rollout_workers` ranks generation-only; this rank's role."""
    workers, world = cfg.train.rollout_workers, int(os.environ.get("WORLD_SIZE", "1"))
    if world != workers + 1:
        raise ConfigError(f"train.rollout_workers={workers} needs torchrun --nproc_per_node={workers + 1} (one "
                          f"trainer rank + {workers} generation ranks); got WORLD_SIZE={world}")
    dist.set_rollout_workers(workers)
    dist.init()
    return GENERATE if torch_dist.get_rank() >= world - workers else TRAIN


def required_version(step: int, max_staleness: int) -> int:
    """The policy version that generates step `step`'s records: k versions behind the trainer's s - 1."""
    return max(0, step - 1 - max_staleness)


def worker_rank(step: int, workers: int) -> int:
    return 1 + (step - 1) % workers


def channels(peers: list[int]) -> dict[int, Channel]:
    """A channel to each peer rank: objects over gloo (a gloo group beside NCCL on GPUs), weights over the world."""
    gpu = torch_dist.get_backend() == "nccl"
    objects = torch_dist.new_group(backend="gloo") if gpu else torch_dist.group.WORLD  # every rank calls new_group
    device = torch.device("cuda", torch.cuda.current_device()) if gpu else torch.device("cpu")
    return {peer: Channel(peer, objects, torch_dist.group.WORLD, device) for peer in peers}


# ---------------------------------------------------------------- staleness
def staleness_metrics(batch: RolloutBatch, trainer_version: int, max_staleness: int, step: int) -> dict[str, float]:
    """staleness_mean / staleness_max over the record's nodes; refuses a record older than the bound, or a tree
    whose branches come from another policy version than the response they fork from."""
    ages = []
    for tree in batch.trees:
        versions = {n.policy_version for n in tree.nodes}
        if len(versions) > 1:
            raise RuntimeError(f"step {step}: prompt group {tree.group} mixes policy versions {sorted(versions)}")
        ages += [trainer_version - n.policy_version for n in tree.nodes]
    if max(ages) > max_staleness:
        raise RuntimeError(f"step {step}: a record of policy version {trainer_version - max(ages)} is "
                           f"{max(ages)} versions old, over train.max_staleness={max_staleness}: not trained")
    return {"staleness_mean": float(np.mean(ages)), "staleness_max": float(max(ages))}


# ---------------------------------------------------------------- records saved with a checkpoint
def restore_pending(saved: list, first_step: int, max_staleness: int) -> dict[int, tuple[RolloutBatch, dict]]:
    """The checkpoint's records of steps first_step, first_step + 1, ... that the bound still allows (a resume
    with a smaller train.max_staleness drops the rest: the workers regenerate them with the current weights)."""
    pending = {}
    for item in sorted(saved, key=lambda x: x["step"]):
        batch = from_plain(item["record"], f"the checkpoint's record of step {item['step']}")
        oldest = min(n.policy_version for tree in batch.trees for n in tree.nodes)
        if item["step"] != first_step + len(pending) or item["step"] - 1 - oldest > max_staleness:
            print(f"[rlx] resume: the saved records of step {item['step']} and later are not used (regenerated)")
            break
        pending[item["step"]] = (batch, item["extra"])
    return pending


# ---------------------------------------------------------------- the trainer's side
class Pipeline:
    """The trainer's view of the generation workers: start them, publish weights, take each step's record."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.workers = list(range(1, cfg.train.rollout_workers + 1))
        self.channels = channels(self.workers)
        self.pending: dict[int, tuple[RolloutBatch, dict]] = {}  # records received (or restored), not yet trained
        self.version = -1  # the last published policy version; -1 = not started
        self.broken = False  # a worker failed: no more messages

    def start(self, first_step: int, pending: dict, weights) -> None:
        """Send every worker the first step it generates, the current version and its weights."""
        self.pending, self.version = dict(pending), first_step - 1
        named = list(weights)
        flat, layout = flatten(named), layout_of(named)
        for rank, chan in self.channels.items():
            message = {"kind": "start", "first_step": first_step + len(pending), "version": self.version,
                       "layout": layout}
            self._guard(rank, lambda c=chan, m=message: (c.send(m), c.send_weights(flat)))

    def publish(self, weights) -> None:
        """The next policy version to every worker (each has taken the previous one before it is sent)."""
        self.version += 1
        flat = flatten(weights)
        for rank, chan in self.channels.items():
            self._guard(rank, lambda c=chan: (c.flush(self.cfg.train.rollout_timeout_s, "weight-sync acknowledgement"),
                                              c.send({"kind": "weights", "version": self.version}),
                                              c.send_weights(flat)))

    def take(self, step: int) -> tuple[RolloutBatch, dict]:
        """Step `step`'s record. It stays pending until the next step's is taken: a step abandoned before its
        first optimizer step (a preemption signal) checkpoints the step before, whose pipeline holds it."""
        for done in [s for s in self.pending if s < step]:
            del self.pending[done]
        if step not in self.pending:
            self._receive(step)
        return self.pending[step]

    def drain(self, step: int) -> list[tuple[int, RolloutBatch, dict]]:
        """The records of steps step+1 .. step+k (received now if need be): the pipeline a checkpoint holds."""
        last = min(step + self.cfg.train.max_staleness, self.cfg.train.steps)
        for later in range(step + 1, last + 1):
            if later not in self.pending and not self.broken:
                self._receive(later)
        return [(s, *self.pending[s]) for s in sorted(self.pending) if s > step]

    def _receive(self, step: int) -> None:
        rank = worker_rank(step, len(self.workers))
        timeout = self.cfg.train.rollout_timeout_s
        message = self._guard(rank, lambda: self.channels[rank].recv(timeout, f"rollout record of step {step}"))
        if message.get("kind") != "record" or message["step"] != step:
            raise RuntimeError(f"generation rank {rank} sent {message.get('kind')} for step "
                               f"{message.get('step')} while step {step} was due")
        self.pending[step] = (message["record"], message["extra"])

    def _guard(self, rank: int, action):
        try:
            return action()
        except ChannelError as err:
            self.broken = True
            raise preemption.RunAborted(f"generation worker (rank {rank}) failed: {err} "
                                        "(train.rollout_timeout_s bounds the wait)") from None

    def stop(self) -> None:
        """Tell every worker to stop; take what each still sends until its `done` (records never trained)."""
        if self.broken or self.version < 0:
            return
        timeout = self.cfg.train.rollout_timeout_s
        for rank, chan in self.channels.items():
            self._guard(rank, lambda c=chan: c.send({"kind": "stop"}))
            while self._guard(rank, lambda c=chan: c.recv(timeout, "end of the generation stream"))["kind"] != "done":
                pass
            self._guard(rank, lambda c=chan: c.flush(timeout))


class RemoteRollouts:
    """The trainer's rollout source with async rollouts (the protocol of `rlx.train.rollout.phase.LocalRollouts`):
    records are received from the generation ranks (`Pipeline.take`), each update is published to them, and the
    trainer's own sampler (evaluation only) is synced only when an evaluation uses it."""

    def __init__(self, cfg, eval_sampler):
        self.cfg = cfg
        self.pipeline = Pipeline(cfg)
        self.eval_sampler = eval_sampler
        self.eval_synced = True  # the evaluation sampler holds the current weights

    def rollouts(self, problems: list, step: int, timer: PhaseTimer) -> tuple[RolloutBatch, dict[str, float]]:
        with timer("wait"):  # the trainer idles only when generation is behind
            batch, extra = self.pipeline.take(step)
        return batch, {**extra, **staleness_metrics(batch, step - 1, self.cfg.train.max_staleness, step)}

    def publish(self, policy) -> None:
        self.eval_synced = False
        if self.pipeline.version >= 0:  # not during a resume's load: `start` sends the first weights
            self.pipeline.publish(iter_full_parameters(policy))

    def ready_for_eval(self, policy) -> None:
        if not self.eval_synced:
            self.eval_sampler.sync_weights(policy, weights=iter_full_parameters(policy))
            self.eval_synced = True

    def start(self, first_step: int, state: dict, policy) -> dict:
        """Restores the checkpoint's pipeline of records and starts the workers; `state` without it."""
        state = dict(state)
        pending = restore_pending(state.pop(PIPELINE_KEY, []), first_step, self.cfg.train.max_staleness)
        self.pipeline.start(first_step, pending, iter_full_parameters(policy))
        return state

    def checkpoint_state(self, step: int) -> dict:
        """The pipeline's records of the steps after `step` (`Pipeline.drain`), as plain containers."""
        return {PIPELINE_KEY: [{"step": s, "record": to_plain(batch), "extra": ex}
                               for s, batch, ex in self.pipeline.drain(step)]}

    def close(self) -> None:
        self.pipeline.stop()


# ---------------------------------------------------------------- a generation rank
class RolloutWorker:
    """A generation rank: the run's `RolloutPhase` on its own sampler and policy copy, at the versions it loads."""

    def __init__(self, cfg):
        self.cfg = cfg
        algo = algos.get(cfg.algo.name)
        seed_everything(cfg.seed)
        inputs = setup.load_inputs(cfg, algo)
        device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else \
            torch.device("cpu")
        self.policy = load_causal_lm(inputs.model_path, MASTER_DTYPE).to(device).eval()  # merged weights arrive
        self.sampler = build_sampler(cfg.sampler, self.policy, inputs.tokenizer, inputs.model_path, cfg.model.dtype,
                                     seed=cfg.seed)
        if cfg.train.num_threads > 0:
            torch.set_num_threads(cfg.train.num_threads)
        forwards = Forwards(cfg.train.micro_batch_tokens, cfg.train.micro_batch_size, cfg.model.dtype, device,
                            cfg.model.logprob_chunk)  # entropy knots: on this side's weights
        self.phase = build_phase(cfg, algo, self.sampler, inputs.tokenizer, inputs.task, inputs.reward_fn, forwards,
                                 self.policy)
        self.step_problems = StepProblems.of(inputs.task, cfg.seed, cfg.train.prompts_per_step)
        self.version, self.layout = -1, []

    def load(self, flat: torch.Tensor, version: int) -> None:
        named = list(unflatten(flat, self.layout))
        with torch.no_grad():
            self.policy.load_state_dict(dict(named), strict=False)  # the tied head arrives as lm_head.weight
        self.policy.tie_weights()
        self.sampler.sync_weights(self.policy, weights=iter(named))
        self.version = version

    def catch_up(self, chan: Channel, need: int | None) -> bool:
        """Take publications until version `need` is loaded (None: until the stop); False once stopped."""
        numel = sum(int(torch.Size(shape).numel()) for _, shape in self.layout)
        while need is None or self.version < need:
            message = chan.recv(TRAINER_SILENCE_S, "message from the trainer")
            if message["kind"] == "stop":
                return False
            flat = chan.recv_weights(numel, TRAINER_SILENCE_S, f"weights of version {message['version']}")
            if need is not None and message["version"] <= need:
                self.load(flat, message["version"])
        return True

    def run(self, chan: Channel) -> None:
        start = chan.recv(TRAINER_SILENCE_S, "the trainer's start message")
        self.layout = start["layout"]
        numel = sum(int(torch.Size(shape).numel()) for _, shape in self.layout)
        self.load(chan.recv_weights(numel, TRAINER_SILENCE_S, "the first weights"), start["version"])
        workers, rank, k = self.cfg.train.rollout_workers, torch_dist.get_rank(), self.cfg.train.max_staleness
        stopped = False
        for step in range(start["first_step"], self.cfg.train.steps + 1):
            if worker_rank(step, workers) != rank:
                continue
            if not self.catch_up(chan, max(self.version, required_version(step, k))):
                stopped = True
                break
            timer = PhaseTimer()
            batch, extra = self.phase.run(self.step_problems(step), step, self.version, timer)
            chan.send({"kind": "record", "step": step, "record": batch, "extra": {**extra, **timer.seconds}})
        if not stopped:
            self.catch_up(chan, None)
        chan.send({"kind": "done"})
        chan.flush(TRAINER_SILENCE_S)


def serve(cfg) -> dict:
    """A generation rank's whole run: generate until the trainer says stop."""
    worker = RolloutWorker(cfg)
    chan = channels([0])[0]
    with preemption.within("serving"):  # a preemption signal only raises a flag: the trainer decides, says stop
        worker.run(chan)
    if preemption.requested():  # the trainer checkpointed and said stop: leave as it does, with EXIT_CODE
        preemption.bound_teardown()
    worker.sampler.close()
    dist.close()
    if preemption.requested():
        preemption.exit()
    return {"accuracy_after": float("nan")}
