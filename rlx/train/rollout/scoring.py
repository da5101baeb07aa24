"""Scoring, inside the rollout phase: one batched reward call per round, each node scored once.

Owns decoding (a node's text is the whole response it completes: the prefix kept from its ancestors plus its
own tokens), the reward of every response and branch rollout, and the task's correctness verdict of every
node. With `reward_model.overlong_penalty`, DAPO's soft overlong punishment (arXiv 2503.14476 Eq. 13) is added
to every reward from the token length of that whole response.

`Scorer.score_drafts` scores the drafts of the rollout record that have no reward yet (rlx/train/rollout/drafts.py).
`Scorer.score` scores Trajectory/Branches rounds that the rollout phase must read before the record exists
(DAPO's dynamic sampling, the first round of adaptive rollouts); `record.draft_trees` carries those rewards
into the drafts, so no node is scored twice.
"""

from __future__ import annotations

from dataclasses import dataclass

from rlx.record import knot_prefix
from rlx.rewards.overlong import shape_overlong
from rlx.train.rollout.generate import Branches, Trajectory


@dataclass(frozen=True)
class Scorer:
    reward_fn: object
    task: object
    tokenizer: object
    overlong: tuple[int, int] | None = None  # (L_max, L_cache) of the soft overlong penalty, None = off

    def rewards(self, problems: list, token_ids: list[list[int]]) -> tuple[list[str], list[float], list[bool]]:
        """(texts, rewards, verdicts) of whole responses given as token ids: one reward and one grading call."""
        texts = [self.tokenizer.decode(ids, skip_special_tokens=True) for ids in token_ids]
        rewards = self.reward_fn(problems, texts) if texts else []
        if self.overlong is not None and texts:
            rewards = shape_overlong(rewards, [len(ids) for ids in token_ids], *self.overlong)
        verdicts = self.task.grade(problems, texts) if texts else []
        return texts, [float(r) for r in rewards], list(verdicts)

    def score(self, trajs: list[Trajectory], branches: list[Branches]) -> None:
        """Rewards of the responses and branch rollouts not scored yet (rollouts appended to a knot after a
        first round are scored on their own)."""
        problems, ids, where = [], [], []
        for b, tr in enumerate(trajs):
            if not tr.scored:
                problems.append(tr.problem)
                ids.append(list(tr.response_ids))
                where.append((b, -1))
        for b, (tr, br) in enumerate(zip(trajs, branches)):
            br.rewards += [[] for _ in range(len(br.rollouts) - len(br.rewards))]
            for i, (knot, gens) in enumerate(zip(br.knots, br.rollouts)):
                for m in range(len(br.rewards[i]), len(gens)):
                    problems.append(tr.problem)
                    ids.append(list(knot_prefix(tr.response_ids, knot.t)) + list(gens[m].token_ids))
                    where.append((b, i))
        texts, rewards, verdicts = self.rewards(problems, ids)
        for (b, i), text, reward, correct in zip(where, texts, rewards, verdicts):
            if i < 0:
                trajs[b].text, trajs[b].reward, trajs[b].correct, trajs[b].scored = text, reward, correct, True
            else:
                branches[b].rewards[i].append(reward)

    def score_drafts(self, trees) -> None:
        """Reward, verdict and text of every draft node (`record.DraftTree`s) that lacks them. A node a first
        round already rewarded (`score`) gets only its text and verdict: its reward is never computed twice."""
        todo = [(tree, i, node) for tree in trees for i, node in enumerate(tree.nodes) if not node.graded]
        problems = [tree.problem for tree, _, _ in todo]
        ids = [tree.prefix(i) + list(node.gen.token_ids) for tree, i, node in todo]
        fresh = [k for k, (_, _, node) in enumerate(todo) if node.reward is None]
        texts, rewards, verdicts = self.rewards([problems[k] for k in fresh], [ids[k] for k in fresh])
        for k, text, reward, correct in zip(fresh, texts, rewards, verdicts):
            node = todo[k][2]
            node.text, node.reward, node.correct, node.graded = text, reward, correct, True
        rewarded = set(fresh)
        known = [k for k in range(len(todo)) if k not in rewarded]  # rewarded by a first round, never graded
        if not known:
            return
        texts = [self.tokenizer.decode(ids[k], skip_special_tokens=True) for k in known]
        for k, text, correct in zip(known, texts, self.task.grade([problems[k] for k in known], texts)):
            todo[k][2].text, todo[k][2].correct, todo[k][2].graded = text, correct, True


def overlong_shape(cfg) -> tuple[int, int] | None:
    """(L_max, L_cache) of `reward_model.overlong_penalty` (L_max null = train.max_new_tokens), None when off."""
    penalty = cfg.reward_model.overlong_penalty
    if penalty.cache == 0:
        return None
    return (cfg.train.max_new_tokens if penalty.max_len is None else penalty.max_len), penalty.cache
