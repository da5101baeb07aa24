"""The built-in process reward: one reward per solution line, judged against the reference line."""

from __future__ import annotations

from rlx.data.base import Problem
from rlx.rewards.registry import build_reward

PROBLEM = Problem(id="p", question="47+8-9=?", answer="46", solution="=55-9\n=46\n#### 46")


def test_each_line_is_judged_against_the_reference_line():
    reward = build_reward("arith_steps", {})
    completions = ["=55-9\n=46\n#### 46<eos>".replace("<eos>", ""),  # all right
                   "=55-9\n=47\n#### 47",  # second step wrong, the answer line follows it
                   "=54-9\n=45\n",  # wrong first step, no answer line, trailing newline
                   "=55-9\n=46\n#### 46\nextra"]  # a line beyond the reference is never correct
    assert reward.step_rewards([PROBLEM] * 4, completions) == [
        [1.0, 1.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0], [1.0, 1.0, 1.0, 0.0]]
    assert reward([PROBLEM] * 4, completions) == [1.0, 0.0, 0.0, 1.0]  # the outcome reward is arith's


def test_custom_values():
    reward = build_reward("arith_steps", {"correct": 2.0, "incorrect": -1.0})
    assert reward.step_rewards([PROBLEM], ["=55-9\n=40"]) == [[2.0, -1.0]]
