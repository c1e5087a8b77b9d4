import math

import numpy as np
import pytest

from model_export.metrics import metrics_from_ranks, target_ranks


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
