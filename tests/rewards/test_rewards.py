"""The registered rewards: math_verify, gsm8k, format, composite, hf_rm."""

from __future__ import annotations

import pytest

from rlx.data.base import Problem
from rlx.rewards import REWARDS
from rlx.rewards.composite import CompositeReward

GSM8K_PROBLEMS = [
    Problem(id=f"p{i}", question=f"q{i}", answer=a) for i, a in enumerate(["18", "3", "1000", "7"])
]
GSM8K_COMPLETIONS = [
    "She sells 9 eggs for $2 each.\n#### 18",  # correct, well formed
    "The answer is 3 apples",  # correct by last number, no format
    "So \\boxed{1,000}",  # correct: gsm8k extraction falls back to the last number "1,000"
    "#### 8\nsome trailing words 7",  # #### wins over the last number: wrong; #### not on the last line
]


def test_all_rewards_are_registered():
    assert {"math_verify", "gsm8k", "format", "hf_rm", "composite"} <= set(REWARDS)


def test_gsm8k_reward(grader):
    reward = REWARDS["gsm8k"](grader=grader)
    assert reward(GSM8K_PROBLEMS, GSM8K_COMPLETIONS) == [1.0, 1.0, 1.0, 0.0]
    assert [r.extracted for r in reward.last_results] == ["18", "3", "1,000", "8"]


def test_math_verify_reward_boxed_and_auto(grader):
    problems = [Problem(id="a", question="", answer="\\frac{1}{2}"), Problem(id="b", question="", answer="4")]
    completions = ["so $\\boxed{0.5}$", "the answer is 4"]
    assert REWARDS["math_verify"](style="boxed", grader=grader)(problems, completions) == [1.0, 0.0]
    assert REWARDS["math_verify"](grader=grader)(problems, completions) == [1.0, 1.0]  # auto: last number


def test_math_verify_reward_rejects_unknown_style_at_build_time():
    with pytest.raises(ValueError, match="unknown extraction style"):
        REWARDS["math_verify"](style="latex")


def test_format_reward():
    completions = [
        "work\n#### 18",
        "#### 1\n#### 2",
        "text \\boxed{5} more",
        "#### 3\nthen more",
        "#### ",
        "plain",
    ]
    problems = [Problem(id=str(i), question="", answer="0") for i in range(len(completions))]
    assert REWARDS["format"]()(problems, completions) == [0.1, 0.0, 0.1, 0.0, 0.0, 0.0]
    assert REWARDS["format"](bonus=0.5, accept=["boxed"])(problems, completions) == [0, 0, 0.5, 0, 0, 0]
    with pytest.raises(ValueError, match="format accept"):
        REWARDS["format"](accept=["xml"])


def test_composite_sums_weighted_parts(grader):
    reward = REWARDS["composite"](
        components=[
            {"name": "gsm8k", "weight": 1.0, "grader": grader},
            {"name": "format", "weight": 2.0, "config": {"bonus": 0.25}},
            {"name": "format", "weight": -1.0, "accept": ["boxed"]},
        ]
    )
    assert isinstance(reward, CompositeReward)
    totals = reward(GSM8K_PROBLEMS, GSM8K_COMPLETIONS)
    # gsm8k [1,1,1,0]; format(0.25) x2 -> [0.5,0,0.5,0]; boxed-only format(0.1) x -1 -> [0,0,-0.1,0]
    assert totals == pytest.approx([1.5, 1.0, 1.4, 0.0])
    assert reward.last_parts == {
        "gsm8k": [1.0, 1.0, 1.0, 0.0],
        "format#0": [0.25, 0.0, 0.25, 0.0],
        "format#1": [0.0, 0.0, 0.1, 0.0],
    }


def test_composite_config_errors():
    with pytest.raises(ValueError, match="unknown reward 'nope'"):
        REWARDS["composite"](components=[{"name": "nope"}])
    with pytest.raises(ValueError, match="at least one component"):
        REWARDS["composite"](components=[])


def test_the_training_reward_has_its_own_shorter_limit():
    """reward_model.timeout_s (0.5 s by default, evaluation's is 2 s) is what the reward's grading call uses,
    whatever the pool's own default: here a pool defaulting to 30 s times the answer out at 0.3 s."""
    from rlx.grading import EVAL_TIMEOUT_S, TRAIN_TIMEOUT_S, Grader

    assert REWARDS["math_verify"]().timeout_s == REWARDS["gsm8k"]().timeout_s == TRAIN_TIMEOUT_S == 0.5
    assert TRAIN_TIMEOUT_S < EVAL_TIMEOUT_S == 2.0
    with Grader(num_workers=1, timeout_s=30.0, screen=None) as pool:  # no screen: the tower reaches sympy
        reward = REWARDS["math_verify"](timeout_s=0.3, grader=pool)
        assert reward([Problem(id="p", question="q", answer="1")], ["\\boxed{10^{10^{10^{10}}}}"]) == [0.0]
    assert reward.last_results[0].status == "timeout" and pool.stats.timeouts == 1
    with pytest.raises(ValueError, match="reward_model.timeout_s must be > 0"):
        REWARDS["math_verify"](timeout_s=0)
