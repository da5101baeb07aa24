"""Shared-prefix packing: rows that repeat a prefix (a group's prompt, a tree branch's ancestors up to its fork)
are computed with that prefix once.

Prefix Grouper (arXiv 2506.05433) encodes a group's shared prompt once and shows the outputs and gradients equal
the per-row computation. Here the same holds for any set of rows: each packed sequence holds a token trie of
its rows (a token shared by two rows' identical prefixes is one trie node), every node sits at its row position
(`position_ids`), and attends exactly its ancestors and itself (a block attention mask). Under causal
attention a token's hidden state is a function of the tokens before it and their positions only, so every
row's hidden states are the unshared ones, and the gradient of a shared node sums its rows' contributions as
the chain rule does when the rows are computed apart.

Layout, for a micro-batch of b rows in S packed sequences of width W (their widest trie, right-padded):
    input_ids / position_ids [S, W], attend [S, 1, W, W] (True: the query token may read the key token),
    token_at [b, L]: where (flat index s * W + w) each row's token j sits.
A padding slot attends only itself (no fully masked row: SDPA would return NaN there).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class SharedLayout:
    input_ids: torch.Tensor  # [S, W]
    position_ids: torch.Tensor  # [S, W]
    attend: torch.Tensor  # [S, 1, W, W] bool
    token_at: torch.Tensor  # [b, L] flat index into [S * W] of each row's token j; 0 beyond the row

    @property
    def computed_tokens(self) -> int:
        """Token slots a forward pass over this layout computes, padding included: S x W."""
        return int(self.input_ids.numel())


def trie(rows: list[list[int]]) -> tuple[list[int], list[int], list[int], list[list[int]]]:
    """One token trie of `rows`: (token, parent node (-1: root), depth, per-row node of each token). Nodes come
    parents first, so a node's index is above its ancestors'."""
    tokens: list[int] = []
    parents: list[int] = []
    depths: list[int] = []
    child: dict[tuple[int, int], int] = {}  # (parent node, token) -> node
    where = []
    for row in rows:
        node, path = -1, []
        for depth, tok in enumerate(row):
            nxt = child.get((node, tok))
            if nxt is None:
                nxt = child[(node, tok)] = len(tokens)
                tokens.append(tok)
                parents.append(node)
                depths.append(depth)
            node = nxt
            path.append(node)
        where.append(path)
    return tokens, parents, depths, where


def build_layout(rows: list[list[int]], segments: list[list[int]], pad_id: int) -> SharedLayout:
    """The layout of `rows` (each a row's real tokens, prompt + response) packed as `segments` (lists of indices
    into `rows`, one trie per packed sequence)."""
    tries = [trie([rows[r] for r in seg]) for seg in segments]
    width = max(len(t[0]) for t in tries)
    ids = np.full((len(segments), width), pad_id, dtype=np.int64)  # [S, W]
    pos = np.zeros((len(segments), width), dtype=np.int64)  # [S, W]
    attend = np.zeros((len(segments), width, width), dtype=bool)  # [S, W, W]
    longest = max(len(r) for r in rows)
    token_at = np.zeros((len(rows), longest), dtype=np.int64)  # [b, L]
    for s, (seg, (tokens, parents, depths, where)) in enumerate(zip(segments, tries)):
        n = len(tokens)
        ids[s, :n], pos[s, :n] = tokens, depths
        for i, parent in enumerate(parents):  # a node reads what its parent reads, and itself
            if parent >= 0:
                attend[s, i] = attend[s, parent]
            attend[s, i, i] = True
        attend[s, np.arange(n, width), np.arange(n, width)] = True  # padding reads itself only
        for r, path in zip(seg, where):
            token_at[r, : len(path)] = s * width + np.asarray(path, dtype=np.int64)
    return SharedLayout(torch.from_numpy(ids), torch.from_numpy(pos), torch.from_numpy(attend)[:, None],
                        torch.from_numpy(token_at))


def common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def share_segments(rows: list[list[int]], width: int | None, pair_cost: float = 0.0) -> list[tuple[list[int], int]]:
    """Rows grouped into packed sequences: (row indices, trie size) each. Rows are visited in lexicographic token
    order (rows sharing a prefix become neighbours, and a row's longest common prefix with any earlier row is
    its common prefix with the previous one, so the trie grows by len(row) - that prefix). A row joins the open
    sequence when it shares at least one token with the previous row, the trie stays within `width` (None:
    unbounded) and `worth_joining`; else it opens a sequence. A row longer than `width` gets one of its own."""
    order = sorted(range(len(rows)), key=lambda i: (rows[i], i))
    out: list[tuple[list[int], int]] = []
    prev: list[int] | None = None
    for i in order:
        shared = common_prefix(prev, rows[i]) if prev is not None else 0
        size = out[-1][1] if out else 0
        if shared > 0 and (width is None or size + len(rows[i]) - shared <= width) and worth_joining(
                size, len(rows[i]), shared, pair_cost):
            out[-1] = (out[-1][0] + [i], size + len(rows[i]) - shared)
        else:
            out.append(([i], len(rows[i])))
        prev = rows[i]
    return [(sorted(seg), size) for seg, size in out]


def worth_joining(size: int, length: int, shared: int, pair_cost: float) -> bool:
    """Whether a row of `length` tokens, `shared` of them already in a packed sequence of `size`, is cheaper
    inside it than alone. Joining saves `shared` tokens of the decoder's linear layers but grows the dense
    attention (every query against every key of its sequence, attended or masked: SDPA skips nothing) by
    (size + new)^2 - size^2 - length^2 (query, key) pairs, each `pair_cost` tokens' worth (`attention_pair_cost`)."""
    grown = size + length - shared
    return (grown * grown - size * size - length * length) * pair_cost <= shared
