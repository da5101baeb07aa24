"""Evaluation metrics over sampled answers: unbiased pass@k, maj@n, mean accuracy, per-group breakdowns.

A *record* is one problem's evaluation, a mapping with at least
    "correct":   list[bool]          one flag per sample (a single bool is read as one sample)
and optionally
    "extracted": list[str | None]    the extracted final answer of each sample (for maj@n)
    any grouping fields ("subject", "level", ...) at top level or under "meta".
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from rlx.grading.extract import normalize_answer


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021): 1 - C(n-c, k) / C(n, k), for n samples of which c are correct.

    Uses the product form 1 - prod_{i=n-c+1}^{n} (1 - k/i), which never builds the huge binomials.
    """
    if not (0 <= c <= n) or not (1 <= k <= n):
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:  # every size-k subset contains a correct sample
        return 1.0
    product = 1.0
    for i in range(n - c + 1, n + 1):
        product *= 1.0 - k / i
    return 1.0 - product


def default_ks(n: int) -> list[int]:
    """1, 2, 4, ... up to n, plus n itself when n is not a power of two."""
    ks = []
    k = 1
    while k <= n:
        ks.append(k)
        k *= 2
    if ks[-1] != n:
        ks.append(n)
    return ks


def _flags(record: Mapping[str, Any]) -> list[bool]:
    correct = record["correct"]
    return [bool(correct)] if isinstance(correct, bool) else [bool(flag) for flag in correct]


def pass_at_k_table(
    records: Sequence[Mapping[str, Any]], ks: Iterable[int] | None = None
) -> dict[int, float]:
    """Mean unbiased pass@k over problems, for each k (default 1, 2, 4, ..., n; n = fewest samples)."""
    if not records:
        return {}
    counts = [(len(flags), sum(flags)) for flags in map(_flags, records)]
    smallest_n = min(n for n, _ in counts)
    chosen = default_ks(smallest_n) if ks is None else sorted(set(ks))
    return {k: sum(pass_at_k(n, c, k) for n, c in counts) / len(counts) for k in chosen}


def majority_answer(answers: Sequence[str | None]) -> tuple[int, str] | None:
    """(index of a representative sample, normalised answer) of the most common answer, or None.

    Answers are grouped by `normalize_answer` (string form, not math equivalence: "1/2" and "0.5" are
    different votes). Samples without an answer do not vote. Ties go to the answer whose first occurrence
    comes earliest in sample order, so the result is deterministic.
    """
    normalised = [(i, normalize_answer(a)) for i, a in enumerate(answers) if a is not None and a.strip()]
    if not normalised:
        return None
    votes = Counter(answer for _, answer in normalised)
    first_index: dict[str, int] = {}
    for index, answer in normalised:
        first_index.setdefault(answer, index)
    winner = max(votes, key=lambda answer: (votes[answer], -first_index[answer]))
    return first_index[winner], winner


def maj_at_n(records: Sequence[Mapping[str, Any]]) -> float:
    """Fraction of problems whose majority answer is correct (its correctness = that of its first sample)."""
    if not records:
        return 0.0
    hits = 0
    for record in records:
        flags = _flags(record)
        majority = majority_answer(record["extracted"])
        hits += majority is not None and flags[majority[0]]
    return hits / len(records)


def mean_accuracy(records: Sequence[Mapping[str, Any]]) -> float:
    """Mean over problems of the per-problem fraction of correct samples (= pass@1 estimate)."""
    if not records:
        return 0.0
    return sum(sum(flags) / len(flags) for flags in map(_flags, records)) / len(records)


def _group_value(record: Mapping[str, Any], key: str) -> Any:
    if key in record:
        return record[key]
    meta = record.get("meta") or {}
    return meta.get(key, "unknown")


def breakdown(
    records: Sequence[Mapping[str, Any]], keys: Sequence[str] = ("subject", "level")
) -> dict[str, dict[str, dict[str, float]]]:
    """Per key, per value: number of problems and mean accuracy, e.g.
    {"subject": {"Algebra": {"n": 124, "accuracy": 0.61}, ...}, "level": {"1": {...}, ...}}.
    Values are stringified (JSON keys) and sorted; a record without the key counts under "unknown"."""
    table: dict[str, dict[str, dict[str, float]]] = {}
    for key in keys:
        groups: dict[str, list[Mapping[str, Any]]] = {}
        for record in records:
            groups.setdefault(str(_group_value(record, key)), []).append(record)
        table[key] = {
            value: {"n": len(members), "accuracy": mean_accuracy(members)}
            for value, members in sorted(groups.items())
        }
    return table
