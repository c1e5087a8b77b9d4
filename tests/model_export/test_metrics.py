import math

import numpy as np
import pytest

from model_export.metrics import metrics_from_ranks, spread, target_ranks


def test_ranks_exclude_padding_and_history():
    # Catalog of 4 items (+ padding column 0). Scores: item3 > item1 > item4 > item2.
    scores = np.array([[100.0, 0.8, 0.1, 0.9, 0.5]])
    # Target item 4; without exclusions items 3 and 1 are above it -> rank 2.
    assert target_ranks(scores, np.array([4])).tolist() == [2]
    # With item 3 in the history only item 1 is above -> rank 1. Padding (100.0) never counts.
    assert target_ranks(scores, np.array([4]), [[3]]).tolist() == [1]


def test_target_in_history_is_a_miss():
    scores = np.array([[0.0, 0.9, 0.1]])
    ranks = target_ranks(scores, np.array([1]), [[1]])
    assert metrics_from_ranks(ranks, (1, 2))["recall@2"] == 0.0


def test_hand_computed_metrics():
    # Three users whose targets rank 0, 3 and 12.
    m = metrics_from_ranks(np.array([0, 3, 12]), (5, 10))
    assert m["recall@5"] == pytest.approx(2 / 3)
    assert m["ndcg@5"] == pytest.approx((1.0 + 1 / math.log2(5)) / 3)
    assert m["mrr@5"] == pytest.approx((1.0 + 1 / 4) / 3)
    assert m["recall@10"] == pytest.approx(2 / 3)
    m20 = metrics_from_ranks(np.array([0, 3, 12]), (20,))
    assert m20["recall@20"] == 1.0
    assert m20["ndcg@20"] == pytest.approx((1.0 + 1 / math.log2(5) + 1 / math.log2(14)) / 3)
    assert m20["mrr@20"] == pytest.approx((1.0 + 1 / 4 + 1 / 13) / 3)


def test_ties_rank_target_first():
    scores = np.array([[0.0, 0.5, 0.5, 0.5]])
    assert target_ranks(scores, np.array([2])).tolist() == [0]


def test_spread_reports_the_standard_error_over_repeats_and_none_for_one() -> None:
    s = spread([0.08, 0.09, 0.1])
    assert s["mean"] == pytest.approx(0.09) and s["std"] == pytest.approx(0.01)
    assert s["sem"] == pytest.approx(0.01 / math.sqrt(3)) and (s["min"], s["max"], s["n"]) == (0.08, 0.1, 3)
    assert spread([0.5])["sem"] == 0.0 and spread([0.5])["n"] == 1
