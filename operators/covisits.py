"""Item-to-item neighbours refreshed in the stream: decayed co-visit counts of the users a subtask serves.

The bundle carries the neighbour lists learned offline (``item_neighbors.npz``, the served co-occurrence model);
they age with the catalog's taste. :class:`StreamNeighbors` counts, from every stored event, the pairs it forms
with the user's previous ``window`` known items (both directions, as the offline co-occurrence counts), each
pair weighted by event time with a half-life, so what users do now shows in the cold-start lists within minutes.
:meth:`StreamNeighbors.blend` adds a source item's in-stream row, scaled to the offline row's strongest weight,
to its offline row; the cold-start path (:meth:`operators.serving.ServingCore._neighbor_candidates`) sums the
blended rows of the user's one or two items.

Bounded: at most ``max_items`` source items (the least recently updated leave first), each with at most
``per_item`` targets (a new target replaces the weakest). Kept in memory, not in Flink state: it is a cache of
recent behaviour that every subtask rebuilds from its own users' events after a restart (each subtask sees a
hash-partitioned sample of all users, so its counts estimate the same co-visits). Clock-free (event time), so
the replay and the job agree.
"""

from __future__ import annotations

import math
from collections import OrderedDict

__all__ = ["StreamNeighbors"]


class StreamNeighbors:
    """Decayed co-visit counts by catalog index (0: not in the catalog, ignored)."""

    def __init__(self, *, half_life_minutes: float, window: int = 3, per_item: int = 20,
                 max_items: int = 50_000) -> None:
        self.half_life_ms = half_life_minutes * 60_000.0
        self.window = window
        self.per_item = per_item
        self.max_items = max_items
        # source item -> {target: (order key, weight as of ts, ts)}; ordered by last update (oldest first). The
        # order key log2(weight) + ts / half-life orders the pairs by their decayed weight at any time after
        # every pair's ts, so the weakest of a full row is one C-level min (not a decay computed per pair)
        self.rows: OrderedDict[int, dict[int, tuple[float, float, int]]] = OrderedDict()
        self._newest = -(2**62)  # the newest event time seen: no pair is younger

    def __len__(self) -> int:
        return len(self.rows)

    def observe(self, indices: list[int], item: int, ts: int) -> None:
        """A stored event of catalog index ``item`` at event time ``ts``; ``indices``: the user's window
        (catalog indices, oldest first) including this event; the previous ``window`` known items pair with it."""
        if not item:
            return
        seen = 0
        for other in reversed(indices):
            if seen >= self.window:
                break
            if other == item or not other:
                continue
            seen += 1
            self._bump(other, item, ts)
            self._bump(item, other, ts)

    def _entry(self, weight: float, when: int) -> tuple[float, float, int]:
        return (math.log2(weight) + when / self.half_life_ms if weight > 0 else -math.inf), weight, when

    def _bump(self, source: int, target: int, ts: int) -> None:
        row = self.rows.get(source)
        if row is None:
            row = self.rows[source] = {}
            if len(self.rows) > self.max_items:
                self.rows.popitem(last=False)
        else:
            self.rows.move_to_end(source)
        in_order = ts >= self._newest
        if in_order:
            self._newest = ts
        old = row.get(target)
        if old is not None:
            row[target] = self._entry(self._at(old, ts) + 1.0, max(ts, old[2]))
            return
        if len(row) >= self.per_item:  # full: the new pair replaces the weakest (as of now), if it is weaker
            if in_order:  # every pair is older: the order keys order the decayed weights
                weakest = min(row, key=row.__getitem__)
            else:
                weakest = min(row, key=lambda t: self._at(row[t], ts))
            if self._at(row[weakest], ts) >= 1.0:
                return
            del row[weakest]
        row[target] = self._entry(1.0, ts)

    def _at(self, entry: tuple[float, float, int], ts: int) -> float:
        _, weight, when = entry
        return weight * 0.5 ** (max(ts - when, 0) / self.half_life_ms) if ts > when else weight

    def row(self, source: int, ts: int) -> dict[int, float]:
        """``{target: decayed count as of ts}`` of one source item (empty when never seen)."""
        row = self.rows.get(source)
        return {} if row is None else {t: self._at(e, ts) for t, e in row.items()}

    def blend(self, source: int, offline: list[tuple[int, float]], ts: int, weight: float) -> dict[int, float]:
        """``source``'s neighbours: the ``offline`` ``(target, weight)`` pairs plus its in-stream row, each
        count scaled so that the row's strongest pair gets ``weight`` times the offline row's strongest weight
        (1 when the item has no offline neighbours)."""
        out = dict(offline)
        counts = self.row(source, ts)
        top = max(counts.values(), default=0.0)
        if top > 1e-12 and weight > 0:  # (counts decay towards 0: years later they underflow)
            scale = weight * (max((w for _, w in offline), default=1.0) or 1.0) / top
            for target, count in counts.items():
                out[target] = out.get(target, 0.0) + count * scale
        return out
