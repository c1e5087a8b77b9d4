"""In-stream item popularity: decayed counts per item, trending lists, and the bonus they give the candidates.

Pure logic, event time, no pyflink. In the job (:mod:`flink_jobs.recommend_job`) the recommender emits every
*accepted* event (not dead-lettered, not quarantined: abusers move no counts) as ``(item_id, ts, weight)``,
combined per item over 200 ms (:class:`LocalCounts`); those are keyed by item on the Java side into a
trending operator whose keyed state per item is a packed
:class:`ItemCount` (:func:`bump`); each of its subtasks keeps a bounded :class:`TrendingBoard` of its items and
publishes the board's top ``top_n`` every ``publish_every_ms`` to the control topic; every recommender subtask
reads the control topic as a broadcast input and merges the boards into one :class:`TrendingTable` (each item
lives in exactly one board, so the merged top-N is exact). The offline replay runs the same classes in-line.

A count decays with half-life ``half_life_minutes`` of event time: ``count(t) = sum weight * 0.5 ** ((t -
ts) / half_life)``. An item is trending when its count is at least ``min_count``; it is *new* when it was first
seen within ``new_item_hours`` of the board's newest event time. Users with no history get the trending list
(``strategy: trending``); every other list gets ``boost * (1 - (rank - 1) / top_n)`` for a trending candidate
and ``new_item_boost`` for a new one, and the item's reason says ``{"trending": rank}``.
"""

from __future__ import annotations

import heapq
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["TrendingConfig", "ItemCount", "bump", "TrendingBoard", "TrendingTable", "TrendingLoop", "LocalCounts",
           "CONTROL_TRENDING"]

CONTROL_TRENDING = "trending"
"""``type`` of a trending message on the control topic."""
_COUNT = struct.Struct("<dqq")


class TrendingConfig(BaseModel):
    """Trending knobs (section ``[trending]``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = Field(True, description="count item popularity in-stream and feed it back to the lists")
    half_life_minutes: float = Field(60.0, gt=0, description="half-life of an item's decayed count (event time)")
    min_count: float = Field(2.0, ge=0, description="decayed weighted count an item needs to be trending")
    top_n: int = Field(50, ge=1, le=1000, description="trending items each trending subtask publishes (and the "
                                                      "length of the merged trending list)")
    publish_every_ms: int = Field(1000, ge=100, description="how often each trending subtask publishes its board "
                                                            "(processing time)")
    boost: float = Field(0.3, ge=0, description="score bonus of the top trending candidate (z-score units), "
                                                "falling linearly to 0 at rank top_n")
    new_item_hours: float = Field(24.0, ge=0, description="an item first seen in the stream within this many "
                                                          "hours is new (0 = no new-item boost)")
    new_item_boost: float = Field(0.2, ge=0, description="score bonus of a new item")
    cold_start: bool = Field(True, description="users with no history get the trending list (else the bundle's "
                                               "popular list, which is also the fallback while nothing trends)")


@dataclass(frozen=True, slots=True)
class ItemCount:
    """One item's keyed state: decayed weighted count as of event time ``ts``, and when it was first seen."""

    count: float
    ts: int
    first_seen: int

    def at(self, ts: int, half_life_ms: float) -> float:
        """The count decayed to event time ``ts`` (a ``ts`` before the state's own is not decayed)."""
        return self.count * 0.5 ** (max(ts - self.ts, 0) / half_life_ms)

    def pack(self) -> bytes:
        return _COUNT.pack(self.count, self.ts, self.first_seen)

    @classmethod
    def unpack(cls, data: bytes | None) -> ItemCount | None:
        if not data or len(data) != _COUNT.size:
            return None
        return cls(*_COUNT.unpack(data))


def bump(previous: ItemCount | None, ts: int, weight: float, half_life_ms: float) -> ItemCount:
    """The item's count after one accepted event at event time ``ts`` with ``weight`` (a late event adds its
    weight decayed to the count's time; the count never moves back in time)."""
    if previous is None:
        return ItemCount(weight, ts, ts)
    if ts >= previous.ts:
        return ItemCount(previous.at(ts, half_life_ms) + weight, ts, previous.first_seen)
    return ItemCount(previous.count + weight * 0.5 ** ((previous.ts - ts) / half_life_ms), previous.ts,
                     min(previous.first_seen, ts))


class TrendingBoard:
    """The items of one trending subtask with their latest counts; bounded (``keep`` items at most)."""

    def __init__(self, cfg: TrendingConfig, keep: int | None = None) -> None:
        self.cfg = cfg
        self.half_life_ms = cfg.half_life_minutes * 60_000
        self.keep = keep or max(20 * cfg.top_n, 1000)
        self.items: dict[str, ItemCount] = {}
        self.newest = 0

    def observe(self, item_id: str, count: ItemCount) -> None:
        self.items[item_id] = count
        self.newest = max(self.newest, count.ts)
        if len(self.items) > 2 * self.keep:
            self._prune()

    def _prune(self) -> None:
        now, hl = self.newest, self.half_life_ms
        best = heapq.nlargest(self.keep, self.items.items(), key=lambda kv: kv[1].at(now, hl))
        self.items = dict(best)

    def snapshot(self) -> list[list]:
        """The top ``top_n`` as ``[item_id, decayed count, first_seen]``, decayed to the newest event time seen;
        items whose count fell below a quarter of ``min_count`` are forgotten."""
        now, hl, floor = self.newest, self.half_life_ms, self.cfg.min_count
        decayed = {i: c.at(now, hl) for i, c in self.items.items()}
        for item in [i for i, v in decayed.items() if v < floor / 4]:
            del self.items[item]
        top = heapq.nlargest(self.cfg.top_n, ((v, i) for i, v in decayed.items() if v >= floor))
        return [[i, round(v, 4), self.items[i].first_seen] for v, i in top]

    def message(self, subtask: int, parallelism: int) -> dict:
        """The control-topic message for this board."""
        return {"type": CONTROL_TRENDING, "subtask": subtask, "of": parallelism, "ts": self.newest,
                "items": self.snapshot()}


class TrendingTable:
    """The merged trending list as the recommender uses it, by model catalog index (0 = padding)."""

    def __init__(self, cfg: TrendingConfig, index_of: dict[str, int], n_items: int) -> None:
        self.cfg = cfg
        self.index_of = index_of
        self.n_items = n_items
        self.boards: dict[int, dict] = {}
        self.rank = np.zeros(n_items + 1, dtype=np.int32)
        """1-based trending rank by catalog index (0: not trending)."""
        self.bonus: np.ndarray | None = None
        self.items = np.zeros(0, dtype=np.int64)
        """The trending list (catalog indices, best first): what users with no history get."""

    def update(self, message: dict) -> None:
        """Take one control-topic trending message (a board of one trending subtask) and rebuild the table."""
        of = int(message.get("of", 1))
        self.boards[int(message["subtask"])] = message
        for stale in [s for s in self.boards if s >= of]:  # the trending operator was rescaled down
            del self.boards[stale]
        self._rebuild()

    def _rebuild(self) -> None:
        cfg = self.cfg
        merged = [(float(count), item, int(first)) for board in self.boards.values()
                  for item, count, first in board["items"]]
        newest = max((int(b.get("ts", 0)) for b in self.boards.values()), default=0)
        merged.sort(key=lambda t: (-t[0], t[1]))
        rank = np.zeros(self.n_items + 1, dtype=np.int32)
        bonus = np.zeros(self.n_items + 1, dtype=np.float32)
        items = []
        new_after = newest - cfg.new_item_hours * 3_600_000
        for _count, item, first in merged:
            idx = self.index_of.get(item, 0)
            if not idx or len(items) >= cfg.top_n:
                continue  # unknown to the model: it cannot score or exclude it
            items.append(idx)
            rank[idx] = len(items)
            bonus[idx] = cfg.boost * (1.0 - (len(items) - 1) / cfg.top_n)
            if cfg.new_item_hours > 0 and first >= new_after:
                bonus[idx] += cfg.new_item_boost
        self.rank, self.items = rank, np.array(items, dtype=np.int64)
        self.bonus = bonus if (cfg.boost or cfg.new_item_boost) and items else None

    def cold_list(self, k: int, mask: np.ndarray | None, exclude: Sequence[int] = ()) -> np.ndarray:
        """The best ``k`` trending items allowed by ``mask`` (item rules) and not in ``exclude``."""
        items = self.items
        if mask is not None and items.size:
            items = items[mask[items]]
        if len(exclude) and items.size:
            items = items[~np.isin(items, np.asarray(exclude))]
        return items[:k]


class TrendingLoop:
    """The job's loop through Kafka, in-line for the offline replay: accepted events -> item counts -> one board,
    published every ``publish_every_ms`` of *event* time (the job publishes by processing time, so a streamed
    replay at full speed sees the boards at other points of the log: its lists differ from the offline ones
    while trending is on)."""

    def __init__(self, cfg: TrendingConfig) -> None:
        self.cfg = cfg
        self.half_life_ms = cfg.half_life_minutes * 60_000
        self.board = TrendingBoard(cfg)  # bounded: an item pruned from it had too small a count to trend
        self.next_publish: int | None = None

    def observe(self, accepted: tuple[str, int, float]) -> dict | None:
        """Count one accepted event; returns the control message when a board is due."""
        item, ts, weight = accepted
        if weight > 0:
            self.board.observe(item, bump(self.board.items.get(item), ts, weight, self.half_life_ms))
        if self.next_publish is None:
            self.next_publish = ts + self.cfg.publish_every_ms
        elif ts >= self.next_publish:
            self.next_publish = ts + self.cfg.publish_every_ms
            return self.board.message(0, 1)
        return None


class LocalCounts:
    """Accepted events combined per item before they leave the recommender (one record per item and flush
    instead of one per event): decayed sums compose, so ``bump(previous, ts, combined)`` downstream gives the
    count the single events would have. Flushed when ``every_ms`` of processing time have passed since the last
    flush (checked at each event; :meth:`flush` from a timer sends everything, so that a subtask whose events stop
    still sends what it holds) or when ``max_items`` items are waiting. Counts still waiting are lost on a failure (item
    counts are approximate by design)."""

    def __init__(self, cfg: TrendingConfig, every_ms: int = 200, max_items: int = 1000) -> None:
        self.half_life_ms = cfg.half_life_minutes * 60_000
        self.every_ms = every_ms
        self.max_items = max_items
        self.items: dict[str, ItemCount] = {}
        self.flushed_at = 0

    def add(self, item: str, ts: int, weight: float, now_ms: int) -> list[tuple[str, int, float]]:
        """Count one accepted event; returns the combined ``(item, ts, count)`` records due now (often none)."""
        if weight > 0:
            self.items[item] = bump(self.items.get(item), ts, weight, self.half_life_ms)
        if now_ms - self.flushed_at < self.every_ms and len(self.items) < self.max_items:
            return []
        return self._take(now_ms)

    def due(self, now_ms: int) -> list[tuple[str, int, float]]:
        """The combined records waiting, when ``every_ms`` have passed since the last flush (else none)."""
        return self._take(now_ms) if self.items and now_ms - self.flushed_at >= self.every_ms else []

    def flush(self, now_ms: int) -> list[tuple[str, int, float]]:
        """Every combined record waiting, now (the adapter's timer for a subtask whose events stopped: it was set
        ``every_ms`` after counts began to wait, and nothing else may be left waiting after it)."""
        return self._take(now_ms) if self.items else []

    def _take(self, now_ms: int) -> list[tuple[str, int, float]]:
        self.flushed_at = now_ms
        out = [(i, c.ts, c.count) for i, c in self.items.items()]
        self.items = {}
        return out
