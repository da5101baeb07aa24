"""The one scorer of the rollout phase: every draft graded exactly once, one reward call per round.

A node's text is the whole response it completes (the prefix kept from its ancestors plus its own tokens),
decoded once. One call of the reward (`rlx.rewards.base.score`) gives each node its reward, the verdict that
reward was graded to (a reward that grades no answer, such as `hf_rm`, leaves the verdict to one call of the
task's grader instead) and, when the algorithm reads them (`STEP_REWARDS`), the process reward's per-step
rewards. With `reward_model.overlong_penalty`, DAPO's soft overlong punishment (arXiv 2503.14476 Eq. 13) is
added to every reward from the token length of that whole response. A round is whatever the rollout phase must
read before it goes on (DAPO's dynamic sampling reads the responses' rewards, adaptive rollouts a first
round's): `score` scores exactly the drafts not scored yet, so no node is ever scored twice.
"""

from __future__ import annotations

from dataclasses import dataclass

from rlx.rewards.base import score
from rlx.rewards.overlong import shape_overlong
from rlx.train.rollout.drafts import DraftTree, NodeScore


@dataclass(frozen=True)
class Scorer:
    reward_fn: object
    task: object
    tokenizer: object
    overlong: tuple[int, int] | None = None  # (L_max, L_cache) of the soft overlong penalty, None = off
    steps: bool = False  # the algorithm reads per-step rewards (a process reward's)

    def score(self, trees: list[DraftTree]) -> None:
        """Scores every draft of `trees` that has no score yet: one reward call (one grading) for all."""
        todo = [(tree, i) for tree in trees for i, node in enumerate(tree.nodes) if node.score is None]
        if not todo:
            return
        for (tree, i), node_score in zip(todo, self.scores([tree.problem for tree, _ in todo],
                                                           [tree.prefix(i) + list(tree.nodes[i].gen.token_ids)
                                                            for tree, i in todo])):
            tree.nodes[i].score = node_score

    def scores(self, problems: list, token_ids: list[list[int]]) -> list[NodeScore]:
        """The scores of whole responses given as token ids."""
        texts = [self.tokenizer.decode(ids, skip_special_tokens=True) for ids in token_ids]
        result = score(self.reward_fn, problems, texts, self.steps)
        rewards = result.rewards
        if self.overlong is not None:
            rewards = shape_overlong(rewards, [len(ids) for ids in token_ids], *self.overlong)
        verdicts = result.verdicts if result.verdicts is not None else self.task.grade(problems, texts)
        steps = result.step_rewards or [None] * len(texts)
        return [NodeScore(float(r), bool(c), text, None if s is None else tuple(float(x) for x in s))
                for r, c, text, s in zip(rewards, verdicts, texts, steps, strict=True)]


def overlong_shape(cfg) -> tuple[int, int] | None:
    """(L_max, L_cache) of `reward_model.overlong_penalty` (L_max null = train.max_new_tokens), None when off."""
    penalty = cfg.reward_model.overlong_penalty
    if penalty.cache == 0:
        return None
    return (cfg.train.max_new_tokens if penalty.max_len is None else penalty.max_len), penalty.cache
