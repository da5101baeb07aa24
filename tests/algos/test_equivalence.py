"""Loop-vs-vectorised equivalence with padding anywhere: every registered advantage function against a plain
Python reference written from the spec formulas (ragged lists, no tensors, no rlx helpers)."""

from __future__ import annotations

import math
import random

import pytest
import torch

from rlx.algos import AdvantageInputs, get
from rlx.algos.grpo import GRPOConfig
from rlx.algos.ppo import PPOConfig
from rlx.algos.reinforce import REINFORCEConfig
from rlx.algos.rloo import RLOOConfig
from rlx.algos.trepo import TRePOConfig

from .algo_helpers import LAYOUTS, knot_rows, layout_columns, mask_of, nested_close, pack, t, unpack


def random_batch(seed, n_groups=3, per_group=3):
    rnd = random.Random(seed)
    lens = [
        rnd.choice([0, 1, 2, 5, 8]) if rnd.random() < 0.2 else rnd.randint(1, 8) for _ in range(n_groups * per_group)
    ]
    rewards = [[rnd.gauss(0, 0.1) for _ in range(n)] for n in lens]
    for row in rewards:
        if row:
            row[-1] += rnd.choice([0.0, 1.0, 0.5])
    values = [[rnd.gauss(0, 1) for _ in range(n)] for n in lens]
    groups = [g for g in range(n_groups) for _ in range(per_group)]
    return rnd, lens, rewards, values, groups


def disc(xs, g):
    return sum(g**i * x for i, x in enumerate(xs))


def build(lens, rewards, groups, layout, values=None, **kw):
    T, cols = layout_columns(lens, layout, seed=len(lens))
    inp = AdvantageInputs(
        pack(rewards, cols, T),
        mask_of(cols, T),
        torch.tensor(groups),
        values=None if values is None else pack(values, cols, T),
        **kw,
    )
    return inp, cols


def check(name, cfg, reference, lens, rewards, groups, values=None, tol=1e-10, **kw):
    results = []
    for layout in LAYOUTS:
        inp, cols = build(lens, rewards, groups, layout, values, **kw)
        adv = get(name).advantages(inp, cfg)
        assert torch.all(adv * (1 - inp.response_mask) == 0)
        results.append(unpack(adv, cols))
    assert nested_close(results[0], reference, tol), (results[0], reference)
    assert nested_close(results[1], reference, tol) and nested_close(results[2], reference, tol)


def whiten_all(rows, eps=1e-8):
    flat = [x for r in rows for x in r]
    if not flat:
        return rows
    mu = sum(flat) / len(flat)
    sd = math.sqrt(sum((x - mu) ** 2 for x in flat) / len(flat))
    return [[(x - mu) / (sd + eps) for x in r] for r in rows]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("scale_by_std,ddof", [(True, 0), (True, 1), (False, 0)])
def test_grpo_outcome(seed, scale_by_std, ddof):
    _, lens, rewards, _, groups = random_batch(seed)
    ref = []
    for b, g in enumerate(groups):
        s = [sum(rewards[j]) for j in range(len(groups)) if groups[j] == g]
        mu = sum(s) / len(s)
        sd = math.sqrt(sum((x - mu) ** 2 for x in s) / max(len(s) - ddof, 1))
        a = sum(rewards[b]) - mu
        a = 0.0 if max(s) == min(s) else (a / (sd + 1e-6) if scale_by_std else a)
        ref.append([a] * lens[b])
    check("grpo", GRPOConfig(scale_by_std=scale_by_std, ddof=ddof), ref, lens, rewards, groups)


@pytest.mark.parametrize("seed", range(4))
def test_rloo(seed):
    _, lens, rewards, _, groups = random_batch(seed)
    ref = []
    for b, g in enumerate(groups):
        others = [sum(rewards[j]) for j in range(len(groups)) if groups[j] == g and j != b]
        ref.append([sum(rewards[b]) - sum(others) / len(others)] * lens[b])
    check("rloo", RLOOConfig(), ref, lens, rewards, groups)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("baseline", ["none", "batch_mean", "group_mean"])
@pytest.mark.parametrize("rtg", [False, True])
def test_reinforce(seed, baseline, rtg):
    _, lens, rewards, _, groups = random_batch(seed)
    g = 0.9
    full = [disc(r, g) for r in rewards]
    if baseline == "none":
        base = [0.0] * len(full)
    elif baseline == "batch_mean":
        base = [sum(full) / len(full)] * len(full)
    else:
        base = [sum(full[j] for j in range(len(full)) if groups[j] == gr) / groups.count(gr) for gr in groups]
    ref = [[(disc(r[i:], g) if rtg else full[b]) - base[b] for i in range(len(r))] for b, r in enumerate(rewards)]
    check("reinforce", REINFORCEConfig(gamma=g, baseline=baseline, reward_to_go=rtg), ref, lens, rewards, groups)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("adv_norm", ["none", "batch"])
def test_ppo(seed, adv_norm):
    _, lens, rewards, values, groups = random_batch(seed)
    g, lam = 0.95, 0.9
    ref = []
    for r, v in zip(rewards, values):
        row, last = [0.0] * len(r), 0.0
        for i in reversed(range(len(r))):
            last = r[i] + g * (v[i + 1] if i + 1 < len(r) else 0.0) - v[i] + g * lam * last
            row[i] = last
        ref.append(row)
    if adv_norm == "batch":
        ref = whiten_all(ref)
    check("ppo", PPOConfig(gamma=g, lam=lam, adv_norm=adv_norm), ref, lens, rewards, groups, values=values)


def trepo_reference(rewards, knots, branches, groups, cfg):
    """docs/algorithms.md, "TRePO", steps 3-6 written out per trajectory and per knot."""
    g, lam = cfg.gamma, cfg.lam
    out = []
    for b, r in enumerate(rewards):
        T = len(r)
        if T == 0:
            out.append([])
            continue
        D = knots[b]
        G_self = [disc(r[s:], g) for s in range(T)]  # G_t(W), index t-1
        pools = [[(k, disc(x, g)) for x in branches[b][i]] for i, k in enumerate(D)]
        pools[0] += [  # siblings of the same prompt are W^(1) samples ("Siblings join the first pool")
            (1, disc(rewards[j], g))
            for j in range(len(rewards))
            if groups[j] == groups[b] and j != b and rewards[j]
        ]

        def from_t(tt, k, gx, r=r):  # G_t of a rollout branched at k
            return disc(r[tt - 1 : k - 1], g) + g ** (k - tt) * gx

        def mean_pool(i, later, with_self, D=D, pools=pools, G_self=G_self, from_t=from_t):
            tt = D[i]
            xs = [from_t(tt, k, gx) for j in (range(i, len(D)) if later else [i]) for (k, gx) in pools[j]]
            xs += [G_self[tt - 1]] if with_self else []
            return sum(xs) / len(xs)

        vb, vq = [], []
        for i in range(len(D)):
            if cfg.pooling == "paper":
                vb.append(mean_pool(i, True, cfg.include_self))
                vq.append(vb[-1])
            elif cfg.pooling == "unbiased":
                vb.append(mean_pool(i, False, False))
                vq.append(mean_pool(i, True, cfg.include_self))
            else:
                vb.append(mean_pool(i, False, False))
                vq.append(vb[-1])
        ends = D[1:] + [T + 1]
        delta = [
            disc(r[D[i] - 1 : ends[i] - 1], g) + (g ** (ends[i] - D[i]) * vq[i + 1] if i + 1 < len(D) else 0.0) - vb[i]
            for i in range(len(D))
        ]
        A = [sum((g * lam) ** (D[m] - D[i]) * delta[m] for m in range(i, len(D))) for i in range(len(D))]
        row = []
        for tt in range(1, T + 1):
            i = max(j for j in range(len(D)) if D[j] <= tt)
            if cfg.interp == "constant":
                row.append(A[i])
            elif cfg.interp == "value":
                row.append(A[i] / (ends[i] - D[i]))
            elif i + 1 < len(D):
                alpha = (tt - D[i]) / (D[i + 1] - D[i])
                row.append((1 - alpha) * A[i] + alpha * A[i + 1])
            else:
                row.append(A[i])
        out.append(row)
    if cfg.adv_norm == "batch":
        out = whiten_all(out)
    return out


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize(
    "kw",
    [
        dict(),
        dict(pooling="unbiased", gamma=0.9, lam=0.5, interp="value"),
        dict(pooling="none", gamma=0.97, lam=1.0, interp="constant", adv_norm="none"),
        dict(include_self=False, lam=0.7, adv_norm="none"),
        dict(samples_per_prompt=3, pooling="unbiased", adv_norm="none"),
    ],
)
def test_trepo(seed, kw):
    rnd, lens, rewards, _, groups = random_batch(seed)
    cfg = TRePOConfig(**kw)
    knots, branches = [], []
    for n in lens:
        D = [] if n == 0 else [1] + sorted(rnd.sample(range(2, n + 1), min(n - 1, rnd.randint(0, 3))))
        knots.append(D)
        branches.append(
            [[[rnd.random() for _ in range(rnd.randint(1, 4))] for _ in range(rnd.randint(1, 3))] for _ in D]
        )
    ref = trepo_reference(rewards, knots, branches, groups, cfg)
    tensors = [[[t(x) for x in rollouts] for rollouts in row] for row in branches]
    check("trepo", cfg, ref, lens, rewards, groups, rows=knot_rows(knots, tensors), branch_rewards=tensors)
