"""Live distributions and model agreement for the job's metrics (Prometheus scrapes them as gauges).

Pure logic, no pyflink: :class:`RecentValues` keeps the last N samples (event-to-emit latency, model time) and
answers quantiles when a metric is read; :class:`Agreement` compares the serving model with a shadow model on
the same events: overlap@K of their lists, and each model's next-event hit rate (did the user's next event hit
the list that model gave them last time).
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

__all__ = ["RecentValues", "Agreement"]


class RecentValues:
    """A ring of the last ``size`` samples; quantiles over it (0 when empty)."""

    def __init__(self, size: int = 4096) -> None:
        self.values = np.zeros(size, dtype=np.float64)
        self.n = 0

    def add(self, value: float) -> None:
        self.values[self.n % len(self.values)] = value
        self.n += 1

    def quantile(self, q: float) -> float:
        filled = self.values[: min(self.n, len(self.values))]
        return float(np.quantile(filled, q)) if len(filled) else 0.0


class Agreement:
    """Serving vs shadow on live traffic. ``observe(user, item)`` scores the user's new event against the lists
    each model gave them last; ``lists(user, serving, shadow)`` records the new lists and their overlap@K.
    Remembers the last lists of at most ``max_users`` users (least recently seen forgotten)."""

    def __init__(self, k: int = 10, max_users: int = 100_000) -> None:
        self.k = k
        self.max_users = max_users
        self.last: OrderedDict[str, tuple[frozenset[str], frozenset[str]]] = OrderedDict()
        self.compared = 0
        self.overlap_sum = 0.0
        self.judged = 0
        self.serving_hits = 0
        self.shadow_hits = 0

    def observe(self, user: str, item: str) -> None:
        previous = self.last.get(user)
        if previous is None:
            return
        self.judged += 1
        self.serving_hits += item in previous[0]
        self.shadow_hits += item in previous[1]

    def lists(self, user: str, serving: list[str], shadow: list[str]) -> float:
        a, b = frozenset(serving[: self.k]), frozenset(shadow[: self.k])
        overlap = len(a & b) / self.k
        self.compared += 1
        self.overlap_sum += overlap
        self.last[user] = (a, b)
        self.last.move_to_end(user)
        if len(self.last) > self.max_users:
            self.last.popitem(last=False)
        return overlap

    @property
    def overlap(self) -> float:
        return self.overlap_sum / self.compared if self.compared else 0.0

    @property
    def serving_hit_rate(self) -> float:
        return self.serving_hits / self.judged if self.judged else 0.0

    @property
    def shadow_hit_rate(self) -> float:
        return self.shadow_hits / self.judged if self.judged else 0.0
