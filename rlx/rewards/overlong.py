"""DAPO's soft overlong punishment (Yu et al. 2025, arXiv 2503.14476, §3.4 Eq. 13), a length-aware reward shaper.

With L_max = the generation budget (train.max_new_tokens) and L_cache = the soft punishment interval:

    R_length(y) = 0                                    if |y| <= L_max - L_cache
                  ((L_max - L_cache) - |y|) / L_cache   if L_max - L_cache < |y| <= L_max
                  -1                                   if L_max < |y|

added to the task reward, so the policy learns to stay clear of the cut instead of being hit by a cliff.
|y| counts response tokens (EOS included when generated), which is why the loop, which holds the token ids,
applies it (a text-level reward function cannot count tokens without re-tokenising).
"""

from __future__ import annotations

from collections.abc import Sequence


def soft_overlong_penalty(length: int, max_len: int, cache_len: int) -> float:
    """R_length of one response of `length` tokens (Eq. 13); 0 everywhere when cache_len = 0 and length <= max_len."""
    if cache_len < 0 or cache_len > max_len:
        raise ValueError(f"reward_model.overlong_penalty.cache must be in [0, max_len={max_len}], "
                         f"got {cache_len!r}")
    if length > max_len:
        return -1.0
    start = max_len - cache_len
    if length <= start:
        return 0.0
    return (start - length) / cache_len


def shape_overlong(rewards: Sequence[float], lengths: Sequence[int], max_len: int, cache_len: int) -> list[float]:
    """Task rewards plus R_length, one per response."""
    if len(rewards) != len(lengths):
        raise ValueError(f"shape_overlong: {len(rewards)} rewards for {len(lengths)} lengths")
    return [float(r) + soft_overlong_penalty(n, max_len, cache_len) for r, n in zip(rewards, lengths)]
