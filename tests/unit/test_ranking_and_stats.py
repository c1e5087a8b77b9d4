import math

import numpy as np
import pytest

from operators.ranking import top_k_excluding
from operators.stats import latency_summary, percentile


def test_top_k_skips_excluded_and_duplicates_and_keeps_order():
    ids = ["a", "b", "a", "c", "d", "e"]
    scores = np.array([9.0, 8.0, 7.0, 6.0, 5.0, 4.0], dtype=np.float32)
    assert top_k_excluding(ids, scores, {"b"}, 3) == [("a", 9.0), ("c", 6.0), ("d", 5.0)]


def test_top_k_shorter_when_candidates_run_out():
    assert top_k_excluding(["a", "b"], np.array([1.0, 0.5]), {"a"}, 5) == [("b", 0.5)]


def test_percentile_nearest_rank():
    values = list(range(1, 101))
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile([7.0], 1) == 7.0
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError, match="q must be in"):
        percentile(values, 101)


def test_latency_summary():
    summary = latency_summary([30.0, 10.0, 20.0, 40.0])
    assert summary == {"count": 4, "p50_ms": 20.0, "p95_ms": 40.0, "p99_ms": 40.0, "max_ms": 40.0, "mean_ms": 25.0}
