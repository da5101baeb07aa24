"""The rollout phase (rlx/train/rollout/phase.py) on the real tiny model and HF sampler: every node of the
record is graded exactly once, with one reward call per round, for GRPO, TRePO, adaptive rollouts and DAPO's
dynamic sampling; a reward that grades no answer leaves the verdicts to one call of the task's grader."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from rlx import algos
from rlx.models.load import load_causal_lm
from rlx.models.precision import MASTER_DTYPE
from rlx.rewards.arith import ArithReward
from rlx.sampling.factory import build_sampler
from rlx.train import setup
from rlx.train.learn.forwards import Forwards
from rlx.train.metrics import PhaseTimer
from rlx.train.rollout.phase import RolloutPhase, build_phase
from scripts.bench_trl import compose_config


class Counting:
    """Counts the calls and the completions of a grading function (a reward's `score`, or a task's judge)."""

    def __init__(self, fn):
        self.fn, self.calls, self.completions = fn, 0, 0

    def __call__(self, problems, completions):
        self.calls += 1
        self.completions += len(completions)
        return self.fn(problems, completions)


class GradingReward:
    """The arith reward, its one grading counted."""

    def __init__(self):
        self.inner = ArithReward()
        self.score = Counting(self.inner.score)

    def __call__(self, problems, completions):
        raise AssertionError("the scorer asks for `score`: rewards and verdicts from one grading")


class CountingSampler:
    """A sampler's generate calls and requests counted (everything else is the sampler's own)."""

    def __init__(self, sampler):
        self.sampler, self.calls, self.requests = sampler, 0, 0

    def generate(self, requests):
        self.calls += 1
        self.requests += len(requests)
        return self.sampler.generate(requests)


@pytest.fixture(scope="module")
def parts(tiny_model_dir, tmp_path_factory):
    """(policy, sampler) of the tiny model, shared by the module's phases."""
    policy = load_causal_lm(tiny_model_dir, MASTER_DTYPE).eval()
    cfg = compose_config([f"model.path={tiny_model_dir}", "sampler=hf"], str(tmp_path_factory.mktemp("run")))
    inputs = setup.load_inputs(cfg, algos.get(cfg.algo.name))
    sampler = build_sampler(cfg.sampler, policy, inputs.tokenizer, inputs.model_path, cfg.model.dtype, seed=0)
    yield policy, sampler
    sampler.close()


def phase(parts, tiny_model_dir, tmp_path, reward, *overrides: str) -> tuple[RolloutPhase, Counting]:
    """The run's phase with `reward` and the task's judge counted."""
    policy, sampler = parts
    cfg = compose_config([f"model.path={tiny_model_dir}", "sampler=hf", "train.prompts_per_step=2",
                          "train.max_new_tokens=24", *overrides], str(tmp_path))
    algo = algos.get(cfg.algo.name)
    inputs = setup.load_inputs(cfg, algo)
    judge = Counting(inputs.task.verdicts)
    task = dataclasses.replace(inputs.task, judge=judge)
    forwards = Forwards(None, 8, cfg.model.dtype, torch.device("cpu"), cfg.model.logprob_chunk)
    return build_phase(cfg, algo, sampler, inputs.tokenizer, task, reward, forwards, policy), judge


RUNS = {  # name: (overrides, reward calls in one step)
    "grpo": (("algo=grpo", "algo.samples_per_prompt=4"), 1),
    "trepo": (("algo=trepo", "algo.num_branch_points=2", "algo.rollouts_per_branch=2"), 1),
    "adaptive": (("algo=trepo", "algo.num_branch_points=2", "algo.rollouts_per_branch=3",
                  "algo.adaptive_rollouts=true", "algo.adaptive_first_round=1"), 2),
}


@pytest.mark.parametrize("name", RUNS)
def test_every_node_is_graded_once_in_one_reward_call_per_round(name, parts, tiny_model_dir, tmp_path):
    overrides, rounds = RUNS[name]
    reward = GradingReward()
    rollout_phase, judge = phase(parts, tiny_model_dir, tmp_path, reward, *overrides)
    record, _ = rollout_phase.run(rollout_phase.task.train[:2], 1, 0, PhaseTimer())
    nodes = [n for tree in record.trees for n in tree.nodes]
    responses = sum(len(tree.responses()) for tree in record.trees)
    assert responses == 2 * rollout_phase.cfg.algo.samples_per_prompt
    assert len(nodes) == responses if name == "grpo" else len(nodes) > responses  # with their branch rollouts
    assert (reward.score.calls, reward.score.completions) == (rounds, len(nodes))
    assert judge.calls == 0  # the verdicts are the reward's own grades
    assert [n.correct for n in nodes] == [n.reward == 1.0 for n in nodes]


def test_dynamic_sampling_scores_each_round_once(parts, tiny_model_dir, tmp_path):
    reward = GradingReward()
    rollout_phase, judge = phase(parts, tiny_model_dir, tmp_path, reward, "algo=grpo", "algo.samples_per_prompt=4",
                                 "train.dynamic_sampling=true", "train.max_refill_rounds=2")
    sampler = CountingSampler(rollout_phase.sampler)
    rollout_phase = dataclasses.replace(rollout_phase, sampler=sampler)
    record, metrics = rollout_phase.run(rollout_phase.task.train[:2], 1, 0, PhaseTimer())
    nodes = sum(len(tree.nodes) for tree in record.trees)
    assert reward.score.calls == metrics["dynamic_refill_rounds"] + 1 == sampler.calls  # one per sampling round
    assert reward.score.completions == sampler.requests >= nodes  # every sample (dropped groups too) graded once
    assert judge.calls == 0


def test_a_reward_without_verdicts_leaves_them_to_one_call_of_the_task(parts, tiny_model_dir, tmp_path):
    inner = ArithReward()
    reward = Counting(lambda problems, completions: inner.score(problems, completions).rewards)  # rewards only
    rollout_phase, judge = phase(parts, tiny_model_dir, tmp_path, reward, "algo=trepo", "algo.num_branch_points=2",
                                 "algo.rollouts_per_branch=2")
    record, _ = rollout_phase.run(rollout_phase.task.train[:2], 1, 0, PhaseTimer())
    nodes = [n for tree in record.trees for n in tree.nodes]
    assert (reward.calls, reward.completions) == (1, len(nodes))
    assert (judge.calls, judge.completions) == (1, len(nodes))
    assert [n.correct for n in nodes] == [n.reward == 1.0 for n in nodes]


def test_process_rewards_are_scored_with_the_node_and_only_when_read(parts, tiny_model_dir, tmp_path):
    from rlx.rewards.arith import ArithStepReward

    reward = ArithStepReward()
    runs = {"process": ("algo.supervision=process", "reward_model=arith_steps"), "outcome": ()}
    for name, extra in runs.items():
        rollout_phase, _ = phase(parts, tiny_model_dir, tmp_path, reward, "algo=grpo", "algo.samples_per_prompt=2",
                                 *extra)
        record, _ = rollout_phase.run(rollout_phase.task.train[:2], 1, 0, PhaseTimer())
        nodes = [(tree.problem, n) for tree in record.trees for n in tree.nodes]
        expected = reward.step_rewards([p for p, _ in nodes], [n.text for _, n in nodes])
        steps = [None if n.step_rewards is None else list(n.step_rewards) for _, n in nodes]
        assert steps == (expected if name == "process" else [None] * len(nodes))
