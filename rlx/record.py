"""The rollout record: what sampling hands to learning, one immutable tree of samples per prompt.

A step's rollout phase (rlx/train/rollout/generate.py) samples the responses, plans and generates the branch rollouts
(forks of responses, and forks of forks), scores every node once, and freezes the result into a
`RolloutBatch`. The learning side reads only this record; nothing after the rollout phase mutates it
(frozen dataclasses of tuples). docs/algorithms.md, "The rollout record".

Tree layout. The root is the prompt (not a node). Responses are nodes with `parent = -1`; a branch rollout is
a node whose `parent` is the node it forks from and whose `fork` is how many of the parent's own tokens it
keeps before its own `token_ids` (a TRePO knot t is fork = t - 1). A node's full sequence is therefore
    prompt + (the ancestors' kept tokens) + token_ids,
built in one place, `RolloutTree.context`. Every node is a complete sample (it ends at EOS or the token
budget), so every node is also a leaf outcome: `reward` and `correct` score the prompt's whole response
(context beyond the prompt + token_ids).

Identical greedy requests are generated once (greedy decoding is deterministic): the later nodes that share
a generation are marked `duplicate`; they take part in value estimates like any sample but are neither
trained on nor counted as generated tokens (docs/algorithms.md, "The rollout record").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from rlx.data.base import Problem

RECORD_VERSION = 2  # bump when the record's fields or their meaning change (2: Node.step_rewards)


def knot_prefix(token_ids, t: int) -> tuple[int, ...]:
    """The tokens a rollout forked at 1-based knot t keeps of the sequence it forks from: token_ids[:t-1]
    (token ids, never re-tokenised text). Every branch prefix of rlx is built from this."""
    return tuple(token_ids[: t - 1])


def kept_prefix(nodes, i: int, tokens=lambda node: node.token_ids) -> tuple[int, ...]:
    """The response tokens before node i's own: each ancestor's kept tokens, root first. `tokens(node)` reads a
    node's own tokens (a frozen `Node`, or a draft of the rollout phase)."""
    parts: list[tuple[int, ...]] = []
    node = nodes[i]
    while node.parent >= 0:
        parent = nodes[node.parent]
        parts.append(knot_prefix(tokens(parent), node.fork + 1))
        node = parent
    return tuple(tok for part in reversed(parts) for tok in part)


@dataclass(frozen=True)
class Node:
    parent: int  # index of the node this one forks from; -1 = a response (a child of the prompt)
    fork: int  # tokens of the parent's own token_ids kept before this node's tokens (0 for a response)
    token_ids: tuple[int, ...]  # the tokens this node generated (EOS included when emitted)
    logprobs: tuple[float, ...]  # the sampler's raw (temperature-1) log-probs of token_ids
    temperature: float  # the temperature it was sampled at (0.0 = greedy)
    finished: bool  # stopped at EOS (False: hit its token budget)
    reward: float  # the reward of the whole response this node completes
    correct: bool  # the task's verdict on that response
    text: str  # the decoded response (prefix kept from the ancestors + own tokens), special tokens skipped
    policy_version: int  # the policy version (optimizer updates applied) whose weights generated it
    duplicate: bool = False  # shares an earlier node's greedy generation: not trained, not counted
    depth: int = 1  # 1 = a response, 2 = a fork of a response, ...
    # the process reward's one reward per reasoning step of `text`, when the algorithm reads step rewards
    step_rewards: tuple[float, ...] | None = None


@dataclass(frozen=True)
class RolloutTree:
    problem: Problem
    group: int  # index of the prompt within the step (this rank's)
    prompt_ids: tuple[int, ...]
    nodes: tuple[Node, ...]  # parents before children

    def prefix(self, i: int) -> tuple[int, ...]:
        """The response tokens before node i's own: its ancestors' kept tokens (the branch prefix)."""
        return kept_prefix(self.nodes, i)

    def context(self, i: int) -> tuple[int, ...]:
        """What node i was generated from: the prompt + its prefix (token ids, never re-tokenised text)."""
        return self.prompt_ids + self.prefix(i)

    def responses(self) -> list[int]:
        return [i for i, n in enumerate(self.nodes) if n.parent < 0]

    def children(self, i: int) -> list[int]:
        return [j for j, n in enumerate(self.nodes) if n.parent == i]

    def generated_tokens(self) -> int:
        """Tokens this tree's sampling produced, each once (duplicates shared a generation)."""
        return sum(len(n.token_ids) for n in self.nodes if not n.duplicate)


@dataclass(frozen=True)
class RolloutBatch:
    """One step's rollout record: every tree of this rank's prompts, in prompt order."""

    trees: tuple[RolloutTree, ...]
    policy_version: int  # the trainer's version when this batch was sampled (steps already trained)
    record_version: int = RECORD_VERSION

    def responses(self) -> list[tuple[RolloutTree, int]]:
        """(tree, node index) of every response, in prompt order then sample order."""
        return [(tree, i) for tree in self.trees for i in tree.responses()]

    def response_nodes(self) -> list[Node]:
        return [tree.nodes[i] for tree, i in self.responses()]


def step_starts(response_ids: Sequence[int], newline_ids: frozenset[int]) -> list[int]:
    """1-based positions t at which a reasoning step (a line) begins: t=1 and every t after a newline."""
    starts = [1]
    starts += [j + 2 for j, tok in enumerate(response_ids[:-1]) if tok in newline_ids]
    return starts


def step_ends(response_ids: Sequence[int], newline_ids: frozenset[int]) -> list[int]:
    """0-based index of the last token of every reasoning step (a line, or the response's tail)."""
    ends = [j for j, tok in enumerate(response_ids) if tok in newline_ids]
    if response_ids and (not ends or ends[-1] != len(response_ids) - 1):
        ends.append(len(response_ids) - 1)
    return ends


class RecordVersionError(ValueError):
    """A saved record written with another `RECORD_VERSION` than this rlx reads."""


def to_plain(batch: RolloutBatch) -> dict:
    """`batch` as dicts, lists and scalars: what a checkpoint's weights-only loader accepts."""
    return {"policy_version": batch.policy_version, "record_version": batch.record_version,
            "trees": [{"problem": dataclasses.asdict(t.problem), "group": t.group, "prompt_ids": list(t.prompt_ids),
                       "nodes": [dataclasses.asdict(n) for n in t.nodes]} for t in batch.trees]}


def from_plain(plain: dict, where: str = "a saved rollout record") -> RolloutBatch:
    """The record `to_plain` wrote; one of another record version is refused, naming `where` it came from."""
    version = plain.get("record_version")
    if version != RECORD_VERSION:
        raise RecordVersionError(f"{where} has rollout-record version {version}, this rlx reads version "
                                 f"{RECORD_VERSION}: resume it with the rlx version that wrote it, or start anew")

    def node(d: dict) -> Node:
        steps = d.get("step_rewards")
        return Node(**{**d, "token_ids": tuple(d["token_ids"]), "logprobs": tuple(d["logprobs"]),
                       "step_rewards": None if steps is None else tuple(steps)})

    trees = tuple(RolloutTree(Problem(**t["problem"]), t["group"], tuple(t["prompt_ids"]),
                              tuple(node(n) for n in t["nodes"])) for t in plain["trees"])
    return RolloutBatch(trees, plain["policy_version"], plain["record_version"])
