"""Latency summaries (nearest-rank percentiles), used by the demo, the tests' reports and perf/."""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["percentile", "latency_summary"]


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values: the smallest value with at least q% at or below it."""
    if not sorted_values:
        return float("nan")
    if not 0 <= q <= 100:
        msg = f"q must be in [0, 100], got {q}"
        raise ValueError(msg)
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return float(sorted_values[rank - 1])


def latency_summary(values_ms: Sequence[float]) -> dict[str, float]:
    """``count, p50, p95, p99, max, mean`` in milliseconds."""
    ordered = sorted(values_ms)
    n = len(ordered)
    return {
        "count": n,
        "p50_ms": percentile(ordered, 50),
        "p95_ms": percentile(ordered, 95),
        "p99_ms": percentile(ordered, 99),
        "max_ms": float(ordered[-1]) if n else float("nan"),
        "mean_ms": float(sum(ordered) / n) if n else float("nan"),
    }
