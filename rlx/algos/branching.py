"""Where to branch: knot selection from per-token scores of the sampled response (`algo.branch_selection`).

entropy   the positions of highest policy entropy H(pi(. | prompt, y_<t)), from one no-grad forward pass of
          the trainer: the tokens where the policy was most undecided are where a different continuation is
          most likely, so Monte-Carlo values there carry the most information (TreeRL, arXiv 2506.11902, EPTree
          forks at the highest-entropy tokens)
low_prob  the positions whose sampled token had the lowest probability under the sampler (free: the sampler
          returns these log-probs): an unlikely token is a decision the policy could well have made
          differently (SPO, arXiv 2505.23564, SPO-chain cuts segments at low-probability tokens)

A knot t (1-based, as in `rlx.algos.base.Knot`) keeps y_1..y_{t-1} and re-generates from y_t, so the score of
response token t (0-based column t-1) selects knot t: the branch re-samples exactly the uncertain token and the
segment boundary sits just before it. Like the other selections, t = 1 is always a knot and counts towards
num_branch_points (TRePO T3-T5); the remaining n-1 are the best-scoring positions in {2..T}, ties broken by the
earlier position, so the choice is deterministic. Scores are [T] with T = the response length (no padding).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

SCORE_SELECTIONS = ("entropy", "low_prob")


def top_score_knots(scores: torch.Tensor, num_branch_points: int | str) -> list[int]:
    """Sorted 1-based knots: 1 plus the n-1 positions t in {2..T} with the highest scores[t-1] (earlier wins a
    tie); n = T for "all", else min(num_branch_points, T). [] when T = 0."""
    T = int(scores.numel())
    if T == 0:
        return []
    if torch.isnan(scores).any():
        raise ValueError(f"branch selection: NaN in the per-token scores {scores.tolist()}")
    n = T if num_branch_points == "all" else min(int(num_branch_points), T)
    candidates = sorted(range(2, T + 1), key=lambda t: (-float(scores[t - 1]), t))  # best first, earlier on ties
    return [1] + sorted(candidates[: n - 1])


def entropy_knots(entropy: torch.Tensor, num_branch_points: int | str) -> list[int]:
    """Knots at the highest-entropy positions; entropy [T] = H(pi_old(. | prompt, y_<t)) of response token t."""
    return top_score_knots(entropy.detach().reshape(-1).to(torch.float64), num_branch_points)


def low_prob_knots(sampler_logprobs: Sequence[float] | torch.Tensor, num_branch_points: int | str) -> list[int]:
    """Knots at the lowest-probability sampled tokens; sampler_logprobs [T] = log pi_sampler(y_t | ...)."""
    logp = torch.as_tensor(sampler_logprobs, dtype=torch.float64).reshape(-1)  # [T]
    return top_score_knots(-logp, num_branch_points)  # lowest log-prob = highest score


def score_knots(selection: str, scores: torch.Tensor | Sequence[float] | None, T: int,
                num_branch_points: int | str) -> list[int]:
    """Dispatch for `select_knots`: `scores` are the entropies (entropy) or sampler log-probs (low_prob)."""
    if scores is None:
        raise ValueError(f"algo.branch_selection={selection!r} needs per-token scores "
                         f"({'trainer entropies' if selection == 'entropy' else 'sampler log-probs'})")
    scores = torch.as_tensor(scores, dtype=torch.float64).reshape(-1)  # [T]
    if scores.numel() != T:
        raise ValueError(f"branch selection {selection!r}: {scores.numel()} scores for a response of {T} tokens")
    if selection == "entropy":
        return entropy_knots(scores, num_branch_points)
    if selection == "low_prob":
        return low_prob_knots(scores, num_branch_points)
    raise ValueError(f"algo.branch_selection: {selection!r} is not one of {list(SCORE_SELECTIONS)}")
