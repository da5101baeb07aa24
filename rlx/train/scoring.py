"""Scoring: one batched reward call for the sampled responses and every branch rollout.

Owns decoding the responses (`Trajectory.text`), the reward of each response and of each branch rollout
(a rollout is scored as the response prefix it continues plus its own tokens), and the task's
correctness verdicts of the sampled responses (`Trajectory.correct`, for train accuracy)."""

from __future__ import annotations

from rlx.train.rollout import Branches, Trajectory


def score(trajs: list[Trajectory], branches: list[Branches], reward_fn, task, tokenizer) -> None:
    decode = tokenizer.decode
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
    rewards = reward_fn(problems, texts)
    verdicts = task.grade(problems[: len(trajs)], texts[: len(trajs)])  # one batched grading call
    for tr, r, correct in zip(trajs, rewards, verdicts):
        tr.reward = float(r)
        tr.correct = correct
    cursor = len(trajs)
    for br in branches:
        br.rewards = []
        for gens in br.rollouts:
            br.rewards.append([float(r) for r in rewards[cursor : cursor + len(gens)]])
            cursor += len(gens)
