"""TEMPO-style temporal-difference terms on the prefix tree an ordinary group already forms (no extra rollouts).

The G responses to one prompt share prefixes: they form a prefix tree (a trie over token ids). At a token
where the group's responses part ways (the prefix y_<t is continued by two or more different tokens), the
mean outcome of the responses through y_<=t differs from that through y_<t; that difference is a Monte-Carlo
TD term V(y_<=t) - V(y_<t) crediting the choice of token t (TEMPO, arXiv 2509.18314: Prefix-to-Tree values,
branch-gated TD). V averages the same per-response scores the algorithm uses: GRPO's group-normalised
rewards (as TEMPO does), RLOO's raw rewards. `algo.tempo=true` (GRPO outcome supervision, RLOO) adds the TD
term, at those branching tokens only, to the algorithm's own outcome advantage; at every other token
the advantage is the algorithm's own (TEMPO reduces to GRPO there).
docs/algorithms.md, "TEMPO".
"""

from __future__ import annotations

import torch

from rlx.algos.stats import valid_positions


def prefix_td(tokens: list[tuple[int, ...]], scores: torch.Tensor, group_ids: torch.Tensor,
              mask: torch.Tensor) -> torch.Tensor:
    """TD terms [B, T] (0 off branching tokens and on padding) for rows with response `tokens[b]`, outcome
    `scores[b]` [B] and group `group_ids[b]` [B]; response token j of row b sits at its j-th valid column."""
    td = torch.zeros(mask.shape, dtype=torch.float64)  # [B, T]
    for gid in torch.unique(group_ids).tolist():
        rows = (group_ids == gid).nonzero().squeeze(1).tolist()
        totals: dict[tuple[int, ...], list[float]] = {}  # prefix -> [sum of outcomes, count]
        nexts: dict[tuple[int, ...], set[int]] = {}  # prefix -> the distinct tokens continuing it
        for b in rows:
            seq = tokens[b]
            for t in range(len(seq) + 1):
                acc = totals.setdefault(seq[:t], [0.0, 0])
                acc[0] += float(scores[b])
                acc[1] += 1
                if t < len(seq):
                    nexts.setdefault(seq[:t], set()).add(seq[t])
        for b in rows:
            seq, cols = tokens[b], valid_positions(mask[b])
            for t in range(min(len(seq), cols.numel())):
                if len(nexts[seq[:t]]) >= 2:
                    after, before = totals[seq[: t + 1]], totals[seq[:t]]
                    td[b, cols[t]] = after[0] / after[1] - before[0] / before[1]
    return td.to(mask.dtype)


def row_tokens(inp) -> list[tuple[int, ...]]:
    """The response tokens of every row, from the rollout record (`AdvantageInputs.rows`)."""
    return [tree.nodes[i].token_ids for tree, i in inp.rows]
