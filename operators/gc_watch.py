"""The Python garbage collector on the serving path: its pauses measured, and the long-lived heap kept out of
its way.

CPython's cyclic collector stops the interpreter while it walks every tracked container of the generation it
collects. A worker holds a large, permanent heap (the bundle's vocabulary and dictionaries, the catalog, pyflink
and its modules) and allocates small, short-lived objects on every event; left alone, the collector walks that
permanent heap again at every full collection, and in thread mode every task of the TaskManager waits (one
interpreter, one GIL). Measured in-process (``perf/profile_serving.py``, 10,000 items, a ``gc.callbacks``
probe): loading the bundle and warming 60,000 events took ~500 collections, the longest a 56-ms full collection;
the 3,000 events after that, 5 young collections (~2 ms in all). So the pauses are a start-up and tail matter,
not a per-event cost; in the job, after :func:`settle`, no collection showed in any 5-s report of a 3-minute
bench.

:func:`settle` runs once a worker has loaded what it serves: one full collection, then :func:`gc.freeze` moves
every surviving object to the permanent generation (never walked again), and the young generation's threshold
is raised so short-lived garbage is collected in fewer, still short passes. :class:`GcPauses` records every
collection's pause (``gc.callbacks``) for the job's metrics and per-event log line.
"""

from __future__ import annotations

import gc
import threading
import time

__all__ = ["GcPauses", "GcReader", "settle", "pauses", "YOUNG_THRESHOLD"]

YOUNG_THRESHOLD = 20_000
"""Allocations (net, of tracked containers) between young collections after :func:`settle` (CPython's default:
700). An event allocates a few hundred; a young collection walks only what survived since the last one."""


class GcPauses:
    """Collections and their pauses (every generation), for each reader since its last :meth:`GcReader.take`
    (each subtask of a TaskManager reads its own: in thread mode they share one interpreter and its collector)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._started = 0
        self._readers: list[GcReader] = []

    def reader(self) -> GcReader:
        """A new reader, counting from now."""
        r = GcReader(self._lock, self._readers)
        with self._lock:
            self._readers.append(r)
        return r

    def __call__(self, phase: str, info: dict) -> None:  # a gc.callbacks entry
        if phase == "start":
            self._started = time.perf_counter_ns()
            return
        took = time.perf_counter_ns() - self._started
        generation = min(int(info.get("generation", 0)), 2)
        with self._lock:
            for r in self._readers:
                r.collections[generation] += 1
                r.total_ns += took
                r.max_ns = max(r.max_ns, took)


class GcReader:
    """One reader's collections and pauses since its last :meth:`take`."""

    def __init__(self, lock: threading.Lock, readers: list[GcReader]) -> None:
        self._lock = lock
        self._readers = readers
        self._reset()

    def _reset(self) -> None:
        self.collections = [0, 0, 0]
        self.total_ns = 0
        self.max_ns = 0

    def close(self) -> None:
        """Stop counting for this reader (a closed subtask; its TaskManager may open another)."""
        with self._lock:
            if self in self._readers:
                self._readers.remove(self)

    def take(self) -> dict[str, float]:
        """``{collections, full_collections, pause_ms_total, pause_ms_max}`` since the last call; then reset."""
        with self._lock:
            out = {"collections": float(sum(self.collections)), "full_collections": float(self.collections[2]),
                   "pause_ms_total": self.total_ns / 1e6, "pause_ms_max": self.max_ns / 1e6}
            self._reset()
        return out


_PAUSES: GcPauses | None = None
_INSTALL_LOCK = threading.Lock()


def pauses() -> GcPauses:
    """This process's :class:`GcPauses`, registered with ``gc.callbacks`` on first use (once per process)."""
    global _PAUSES  # noqa: PLW0603 - one recorder per interpreter
    with _INSTALL_LOCK:
        if _PAUSES is None:
            _PAUSES = GcPauses()
            gc.callbacks.append(_PAUSES)
        return _PAUSES


def settle(young_threshold: int = YOUNG_THRESHOLD) -> int:
    """After loading: collect once, freeze every survivor into the permanent generation, raise the young
    threshold (older generations keep theirs). Returns the number of objects frozen. Called once per worker, at
    open: frozen objects are still freed by reference counting, but a frozen reference cycle never is, so a
    model swap does not call it again (a swapped-out core would stay in memory if it held a cycle)."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(max(young_threshold, 1), older, oldest)
    return gc.get_freeze_count()
