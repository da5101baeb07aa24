"""Drafts: the nodes of a step's rollout trees while the rollout phase builds them, then frozen into the record.

Sampling writes drafts directly (rlx/train/rollout/generate.py): one `DraftTree` per prompt, its responses
first (in sample order), then each response's branch rollouts knot by knot, then deeper forks level by level.
A draft is made once with everything sampling knows (its place in the tree, its generation, its temperature,
whether it shares an earlier draft's greedy generation) and gets its `NodeScore` once, from the one scorer
(rlx/train/rollout/scoring.py). Drafts are private to the rollout phase; `freeze` turns scored drafts into the
immutable `RolloutBatch` (rlx/record.py) that the learning side reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rlx.data.base import Problem
from rlx.record import Node, RolloutBatch, RolloutTree, kept_prefix
from rlx.sampling.base import Generation


@dataclass(frozen=True)
class NodeScore:
    """What the scorer says of a node's whole response (prefix kept from its ancestors + its own tokens)."""

    reward: float
    correct: bool
    text: str
    step_rewards: tuple[float, ...] | None = None  # the process reward's, when the algorithm reads them


@dataclass
class Draft:
    """A node under construction: made by sampling, scored once (`score` is None until then)."""

    parent: int  # -1 = a response
    fork: int  # the parent's own tokens kept before this node's
    gen: Generation
    temperature: float
    depth: int
    duplicate: bool = False  # its greedy request was an earlier draft's (rlx/record.py: not trained, not counted)
    knot: int = 0  # which of its parent's planned knots it continues (orders a second adaptive round's rollouts)
    score: NodeScore | None = None


@dataclass
class DraftTree:
    problem: Problem
    group: int  # the prompt's index within the step (this rank's)
    prompt_ids: tuple[int, ...]
    nodes: list[Draft] = field(default_factory=list)

    def prefix(self, i: int) -> list[int]:
        """The response tokens before draft i's own (its ancestors' kept tokens), as `RolloutTree.prefix`."""
        return list(kept_prefix(self.nodes, i, tokens=lambda draft: draft.gen.token_ids))

    def responses(self) -> list[int]:
        return [i for i, d in enumerate(self.nodes) if d.parent < 0]

    def add_fork(self, drafts: list[Draft]) -> list[int]:
        """Adds the rollouts of one knot (all of one parent and knot) right after that knot's earlier rollouts, or
        at the end; returns their indices. Only forks of responses are placed between nodes, and every later
        node's parent is a response, so no parent index moves."""
        first = drafts[0]
        same = [j for j, d in enumerate(self.nodes) if d.parent == first.parent >= 0 and d.knot == first.knot
                and d.depth == first.depth == 2]
        at = same[-1] + 1 if same else len(self.nodes)
        self.nodes[at:at] = drafts
        return list(range(at, at + len(drafts)))


def responses(trees: list[DraftTree]) -> list[tuple[DraftTree, int]]:
    """(tree, index) of every response draft, tree by tree in sample order: the step's trajectory order b."""
    return [(tree, i) for tree in trees for i in tree.responses()]


def freeze(trees: list[DraftTree], policy_version: int) -> RolloutBatch:
    """The immutable record of scored drafts (every draft must have its score)."""
    frozen = []
    for tree in trees:
        nodes = []
        for i, d in enumerate(tree.nodes):
            if d.score is None:
                raise RuntimeError(f"rollout record: node {i} of prompt group {tree.group} was never scored")
            nodes.append(Node(parent=d.parent, fork=d.fork, token_ids=tuple(d.gen.token_ids),
                              logprobs=tuple(d.gen.logprobs), temperature=d.temperature, finished=d.gen.finished,
                              reward=float(d.score.reward), correct=bool(d.score.correct), text=d.score.text,
                              policy_version=policy_version, duplicate=d.duplicate, depth=d.depth,
                              step_rewards=d.score.step_rewards))
        frozen.append(RolloutTree(tree.problem, tree.group, tree.prompt_ids, tuple(nodes)))
    return RolloutBatch(tuple(frozen), policy_version)
