"""Shared builders for the algorithm tests: pack ragged per-token lists into padded [B, T] tensors with the
valid tokens at right-, left- or scattered positions, so every test can also check padding invariance."""

from __future__ import annotations

import torch

DT = torch.float64
LAYOUTS = ("right", "left", "scattered")


def layout_columns(lengths: list[int], layout: str, extra: int = 2, seed: int = 0) -> tuple[int, list[list[int]]]:
    """Padded width T and, per row, the sorted columns that hold its valid tokens."""
    T = max(lengths, default=0) + extra
    gen = torch.Generator().manual_seed(seed)
    cols = []
    for n in lengths:
        if layout == "right":
            cols.append(list(range(n)))
        elif layout == "left":
            cols.append(list(range(T - n, T)))
        elif layout == "scattered":
            cols.append(sorted(torch.randperm(T, generator=gen)[:n].tolist()))
        else:
            raise ValueError(layout)
    return T, cols


def pack(rows: list[list[float]], cols: list[list[int]], T: int, fill: float = 0.0) -> torch.Tensor:
    out = torch.full((len(rows), T), fill, dtype=DT)
    for b, (row, c) in enumerate(zip(rows, cols)):
        out[b, c] = torch.tensor(row, dtype=DT)
    return out


def mask_of(cols: list[list[int]], T: int) -> torch.Tensor:
    return pack([[1.0] * len(c) for c in cols], cols, T)


def unpack(x: torch.Tensor, cols: list[list[int]]) -> list[list[float]]:
    return [x[b, c].tolist() for b, c in enumerate(cols)]


def terminal(rm: float, T: int, kl: list[float] | None = None) -> list[float]:
    """Per-token rewards of a length-T response: optional per-token KL-like rewards + RM at the last token."""
    r = list(kl) if kl is not None else [0.0] * T
    if T:
        r[-1] += rm
    return r


def t(x) -> torch.Tensor:
    return torch.tensor(x, dtype=DT)


def nested_close(a: list[list[float]], b: list[list[float]], tol: float = 1e-12) -> bool:
    """Ragged lists equal up to tol (pytest.approx does not nest)."""
    return len(a) == len(b) and all(
        len(x) == len(y) and all(abs(u - v) <= tol for u, v in zip(x, y)) for x, y in zip(a, b)
    )


def knot_rows(knots: list[list[int]], branches: list[list[list]]) -> tuple:
    """`AdvantageInputs.rows` of one response per row, each in a rollout tree of its own (rlx/record.py) whose
    branch rollouts fork it at the given knots: rollout m of knot knots[b][i] forks at t = knots[b][i] (fork
    t - 1) with one token per entry of branches[b][i][m] (the rewards themselves go in `branch_rewards`). A knot
    given no rollouts still forks once in the tree, so that it exists: a hand-built view may pair it with an empty
    rewards list (the record never does) to test TRePO's sibling pool and its empty-pool error."""
    from rlx.record import Node, RolloutTree

    def node(parent: int, fork: int, length: int) -> Node:
        return Node(parent=parent, fork=fork, token_ids=tuple(range(length)), logprobs=(0.0,) * length,
                    temperature=1.0, finished=True, reward=0.0, correct=False, text="", policy_version=0)

    rows = []
    for b, (row_knots, row_branches) in enumerate(zip(knots, branches)):
        nodes = [node(-1, 0, max(row_knots, default=1))]  # the response
        nodes += [node(0, t - 1, len(x)) for t, rollouts in zip(row_knots, row_branches) for x in rollouts or [()]]
        rows.append((RolloutTree(problem=None, group=b, prompt_ids=(1,), nodes=tuple(nodes)), 0))
    return tuple(rows)
