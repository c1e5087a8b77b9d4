"""Live distributions and model agreement for the job's metrics (Prometheus scrapes them as gauges).

Pure logic, no pyflink: :class:`RecentValues` keeps the last N samples (event-to-emit latency, model time) and
answers quantiles when a metric is read; :class:`Agreement` compares the serving model with a shadow model on
the same events: overlap@K of their lists, and each model's next-event hit rate (did the user's next event hit
the list that model gave them last time).
"""

from __future__ import annotations

import hashlib
import os
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
    Remembers the last lists of at most ``max_users`` users (least recently seen forgotten), keyed not by the user
    id but by a keyed BLAKE2b digest of it under a per-process random key (no raw id is held, and the digest
    means nothing outside this process); :meth:`forget` drops a user (``forget_user``)."""

    def __init__(self, k: int = 10, max_users: int = 100_000) -> None:
        self.k = k
        self.max_users = max_users
        self._salt = os.urandom(16)
        self.last: OrderedDict[bytes, tuple[frozenset[str], frozenset[str]]] = OrderedDict()
        self.compared = 0
        self.overlap_sum = 0.0
        self.judged = 0
        self.serving_hits = 0
        self.shadow_hits = 0

    def _id(self, user: str) -> bytes:
        return hashlib.blake2b(user.encode("utf-8", "surrogatepass"), digest_size=16, key=self._salt).digest()

    def forget(self, user: str) -> None:
        """Drop what is remembered of ``user``."""
        self.last.pop(self._id(user), None)

    def observe(self, user: str, item: str) -> None:
        previous = self.last.get(self._id(user))
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
        uid = self._id(user)
        self.last[uid] = (a, b)
        self.last.move_to_end(uid)
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
