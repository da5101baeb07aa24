"""Scoring: one batched reward call for the sampled responses and every branch rollout.

Owns decoding the responses (`Trajectory.text`), the reward of each response and of each branch rollout
(a rollout is scored as the response prefix it continues plus its own tokens), and the task's
correctness verdicts of the sampled responses (`Trajectory.correct`, for train accuracy). With
`reward_model.overlong_penalty`, DAPO's soft overlong punishment (arXiv 2503.14476 Eq. 13) is added to every
reward from its token length (a branch rollout: the response prefix it continues plus its own tokens)."""

from __future__ import annotations

from rlx.rewards.overlong import shape_overlong
from rlx.train.rollout import Branches, Trajectory


def score(trajs: list[Trajectory], branches: list[Branches], reward_fn, task, tokenizer,
          overlong: tuple[int, int] | None = None) -> None:
    """`overlong` = (L_max, L_cache) of the soft overlong penalty, None = off."""
    decode = tokenizer.decode
    problems, texts, lengths = [], [], []
    for tr in trajs:
        tr.text = decode(tr.response_ids, skip_special_tokens=True)
        problems.append(tr.problem)
        texts.append(tr.text)
        lengths.append(len(tr.response_ids))
    for tr, br in zip(trajs, branches):
        for knot, gens in zip(br.knots, br.rollouts):
            for gen in gens:
                problems.append(tr.problem)
                texts.append(decode(tr.response_ids[: knot.t - 1] + gen.token_ids, skip_special_tokens=True))
                lengths.append(knot.t - 1 + len(gen.token_ids))
    rewards = reward_fn(problems, texts)
    if overlong is not None:
        rewards = shape_overlong(rewards, lengths, *overlong)
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


def overlong_shape(cfg) -> tuple[int, int] | None:
    """(L_max, L_cache) of `reward_model.overlong_penalty` (L_max null = train.max_new_tokens), None when off."""
    penalty = cfg.reward_model.overlong_penalty
    if penalty.cache == 0:
        return None
    return (cfg.train.max_new_tokens if penalty.max_len is None else penalty.max_len), penalty.cache
