import math

import pytest

from operators.stats import latency_summary, percentile


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
