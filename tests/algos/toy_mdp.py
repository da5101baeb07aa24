"""Toy-MDP oracle: tabular softmax policy over prefixes, exhaustive enumeration of trajectories,
exact J, V, Q, E RM(W^(t)) and the true gradient by autograd (float64)."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable

import torch

DT = torch.float64


class Toy:
    """vocab {a, b, EOS} with max length 3 and a forced stop (eos=True), or {a, b} with fixed length 4."""

    def __init__(self, eos: bool = True, seed: int = 0):
        self.vocab = 3 if eos else 2
        self.L = 3 if eos else 4
        self.eos = 2 if eos else None
        self.trajs = self._enumerate()
        self.prefixes = sorted({w[:i] for w in self.trajs for i in range(len(w))}, key=lambda p: (len(p), p))
        self.index = {p: i for i, p in enumerate(self.prefixes)}
        gen = torch.Generator().manual_seed(seed)
        self.theta = torch.randn(len(self.prefixes), self.vocab, generator=gen, dtype=DT).requires_grad_()
        rnd = random.Random(seed)
        self.r_tok = {(p, w): rnd.uniform(-1, 1) for p in self.prefixes for w in range(self.vocab)}
        self.r_final = {w: rnd.uniform(0, 1) for w in self.trajs}  # a response-level score

    def _enumerate(self) -> list[tuple[int, ...]]:
        out = []
        for n in range(1, self.L + 1):
            for w in itertools.product(range(self.vocab), repeat=n):
                ends = self.eos is None or self.eos not in w[:-1]
                full = n == self.L or (self.eos is not None and w[-1] == self.eos)
                if ends and full:
                    out.append(w)
        return out

    # ---------------------------------------------------------------------------------------------- policy
    def logpi(self, prefix: tuple[int, ...], w: int) -> torch.Tensor:
        return torch.log_softmax(self.theta[self.index[prefix]], -1)[w]

    def logp(self, traj) -> torch.Tensor:
        return sum(self.logpi(traj[:i], traj[i]) for i in range(len(traj)))

    def p(self, traj) -> float:
        return float(self.logp(traj).detach().exp())

    def cond_exp(self, prefix, fn: Callable[[tuple[int, ...]], float]) -> float:
        """E[fn(W) | W_{0,t-1} = prefix] by enumeration."""
        num = den = 0.0
        for w in self.trajs:
            if w[: len(prefix)] == prefix:
                q = (
                    float(sum(self.logpi(w[:i], w[i]).detach() for i in range(len(prefix), len(w))).exp())
                    if len(w) > len(prefix)
                    else 1.0
                )
                num += q * fn(w)
                den += q
        return num / den

    # ---------------------------------------------------------------------------------------------- rewards
    def rewards(self, w, gamma: float = 1.0, zero_reward: bool = False) -> list[float]:
        """Per-token rewards r_t; zero_reward: 0 everywhere but the last token, which gets r_final."""
        if zero_reward:
            return [0.0] * (len(w) - 1) + [self.r_final[w]]
        return [self.r_tok[(w[:i], w[i])] for i in range(len(w))]

    @staticmethod
    def G(r: list[float], t: int, gamma: float) -> float:
        """G_t = sum_{k>=t} gamma^(k-t) r_k, t 1-based."""
        return sum(gamma ** (k - t) * r[k - 1] for k in range(t, len(r) + 1))

    def RM(self, w, gamma=1.0, zero_reward=False) -> float:
        return self.G(self.rewards(w, gamma, zero_reward), 1, gamma)

    def J(self, gamma=1.0, zero_reward=False) -> torch.Tensor:
        return sum(self.logp(w).exp() * self.RM(w, gamma, zero_reward) for w in self.trajs)

    def true_grad(self, gamma=1.0, zero_reward=False) -> torch.Tensor:
        (g,) = torch.autograd.grad(self.J(gamma, zero_reward), self.theta)
        return g

    def V(self, w, t, gamma=1.0, zero_reward=False) -> float:
        """V(W_{0,t-1}) = E[G^gamma_t | prefix] (the state before token t)."""
        return self.cond_exp(w[: t - 1], lambda x: self.G(self.rewards(x, gamma, zero_reward), t, gamma))

    def ERM(self, w, t, gamma=1.0, zero_reward=False) -> float:
        """E RM(W^(t)) = c(W_{0,t-1}) + gamma^(t-1) V(W_{0,t-1}); t = T+1 gives RM(W)."""
        return self.cond_exp(w[: t - 1], lambda x: self.RM(x, gamma, zero_reward))

    # ---------------------------------------------------------------------------------------------- gradients
    def expected_grad(self, weight: Callable[[tuple[int, ...], int], float]) -> torch.Tensor:
        """sum_W p(W) sum_t weight(W, t) grad log pi(w_t | W_{0,t-1}), t 1-based."""
        surrogate = sum(
            self.p(w) * sum(weight(w, s) * self.logpi(w[: s - 1], w[s - 1]) for s in range(1, len(w) + 1))
            for w in self.trajs
        )
        (g,) = torch.autograd.grad(surrogate, self.theta)
        return g

    def sample_grad(self, w, weights: list[float]) -> torch.Tensor:
        """sum_t weights[t-1] grad log pi(w_t | .) for one trajectory (a per-sample estimator)."""
        s = sum(weights[i] * self.logpi(w[:i], w[i]) for i in range(len(w)))
        (g,) = torch.autograd.grad(s, self.theta)
        return g
