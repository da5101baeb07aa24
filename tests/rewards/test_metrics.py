"""rlx.eval.metrics: unbiased pass@k, maj@n with deterministic ties, accuracy, breakdowns."""

from __future__ import annotations

from math import comb

import pytest

from rlx.eval.metrics import (
    breakdown,
    default_ks,
    maj_at_n,
    majority_answer,
    mean_accuracy,
    pass_at_k,
    pass_at_k_table,
)


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [
        (5, 2, 1, 0.4),  # 1 - 3/5
        (5, 2, 2, 0.7),  # 1 - C(3,2)/C(5,2) = 1 - 3/10
        (5, 2, 4, 1.0),  # n - c < k: every 4-subset holds a correct sample
        (10, 3, 5, 11 / 12),  # 1 - C(7,5)/C(10,5) = 1 - 21/252
        (4, 0, 1, 0.0),  # c = 0
        (4, 0, 4, 0.0),  # c = 0, n = k
        (4, 1, 4, 1.0),  # n = k with one correct
        (4, 4, 4, 1.0),
        (200, 1, 100, 0.5),  # 1 - C(199,100)/C(200,100) = 1 - 100/200
    ],
)
def test_pass_at_k_hand_computed(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_matches_the_binomial_form():
    for n, c, k in [(16, 5, 3), (30, 7, 10), (64, 1, 32)]:
        assert pass_at_k(n, c, k) == pytest.approx(1 - comb(n - c, k) / comb(n, k), abs=1e-12)


@pytest.mark.parametrize(("n", "c", "k"), [(4, 5, 1), (4, 1, 0), (4, 1, 5), (3, -1, 1)])
def test_pass_at_k_rejects_impossible_counts(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_default_ks():
    assert default_ks(1) == [1]
    assert default_ks(8) == [1, 2, 4, 8]
    assert default_ks(6) == [1, 2, 4, 6]


def test_pass_at_k_table():
    records = [{"correct": [True, False, False, False]}, {"correct": [True, True, False, False]}]
    table = pass_at_k_table(records)
    assert list(table) == [1, 2, 4]
    assert table[1] == pytest.approx(0.375)  # (1/4 + 2/4) / 2
    assert table[2] == pytest.approx((0.5 + 5 / 6) / 2)  # 1 - 3/6 and 1 - 1/6
    assert table[4] == pytest.approx(1.0)


def test_majority_ties_go_to_the_answer_seen_first():
    assert majority_answer(["3", "5", "5", "3"]) == (0, "3")
    assert majority_answer(["5", "3", "3", "5"]) == (0, "5")
    assert majority_answer([None, "7", "1,000", "1000.0", "7"]) == (1, "7")  # 7 first: tie 2-2
    assert majority_answer([None, "1,000", "7", "1000.0"]) == (1, "1000")  # normalised votes merge
    assert majority_answer([None, "  "]) is None


def test_maj_at_n_and_mean_accuracy():
    records = [
        {"correct": [False, True, True, False], "extracted": ["3", "5", "5", "3"]},  # tie -> "3": wrong
        {"correct": [True, False, True], "extracted": ["2", "9", "2"]},  # majority "2": right
        {"correct": [False, False], "extracted": [None, None]},  # no votes: wrong
    ]
    assert maj_at_n(records) == pytest.approx(1 / 3)
    assert mean_accuracy(records) == pytest.approx((0.5 + 2 / 3 + 0.0) / 3)
    assert mean_accuracy([{"correct": True}, {"correct": False}]) == 0.5


def test_breakdown_by_subject_and_level():
    records = [
        {"correct": [True, True], "subject": "Algebra", "level": 1},
        {"correct": [False, True], "meta": {"subject": "Algebra", "level": 2}},
        {"correct": [False, False], "subject": "Geometry", "level": 2},
        {"correct": [True]},
    ]
    assert breakdown(records) == {
        "subject": {
            "Algebra": {"n": 2, "accuracy": 0.75},
            "Geometry": {"n": 1, "accuracy": 0.0},
            "unknown": {"n": 1, "accuracy": 1.0},
        },
        "level": {
            "1": {"n": 1, "accuracy": 1.0},
            "2": {"n": 2, "accuracy": 0.25},
            "unknown": {"n": 1, "accuracy": 1.0},
        },
    }
