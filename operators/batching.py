"""Cross-key micro-batching, decided without Flink: when an event waits for a batch, when the batch runs, and
where a batched user's new state waits until Flink makes that user's key current again.

The adapter (:class:`flink_jobs.functions.RecommendFunction`) only moves records and state: it asks
:meth:`MicroBatcher.defer` per event, :meth:`MicroBatcher.add` s the :class:`~operators.serving.Deferred` the core
returns, runs :meth:`MicroBatcher.take` through :meth:`operators.serving.ServingCore.run_deferred` when
:meth:`MicroBatcher.add` says the batch is full, a timer fires or the user's next event comes
(:meth:`MicroBatcher.waiting`), and stores :meth:`MicroBatcher.finished_state` when the key is current.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from operators.serving import Deferred
from operators.state import has_pending

__all__ = ["MicroBatcher", "Batch", "failover_pending"]


@dataclass
class Batch:
    """The events of one micro-batch, in arrival order, with what the shadow model needs for each user (the event
    and the state it was deferred from; only while a shadow model runs)."""

    events: list[Deferred] = field(default_factory=list)
    shadow_inputs: dict[str, tuple[Any, bytes | None]] = field(default_factory=dict)


def failover_pending(finished: bytes | None, stored: bytes | None) -> bool:
    """The stored state holds an event deferred before a failover (its batch was lost with the process): serve
    it before the new event. Never when this process still has the user's finished state in memory."""
    return finished is None and has_pending(stored)


class MicroBatcher:
    """Which events wait for a cross-key batch and when the batch runs.

    ``size`` > 1 and a recurrent model switch it on (``enabled``); an event is deferred only while events come
    close together (another one is waiting, or the previous one came within ``wait_ms``): a lone event at low load
    is served at once, without a timer round trip for a batch of one. A user has at most one waiting event:
    :meth:`waiting` says to run the batch before that user's next event."""

    def __init__(self, size: int, wait_ms: int, *, enabled: bool) -> None:
        self.size = size
        self.wait_ns = wait_ms * 1_000_000
        self.enabled = enabled and size > 1
        self.batch = Batch()
        self.keys: set[str] = set()
        self.finished: dict[str, bytes] = {}
        self.last_event_ns = 0
        self.batches = 0
        self.largest = 0

    def __len__(self) -> int:
        return len(self.batch.events)

    def waiting(self, key: str) -> bool:
        """``key``'s previous event is still in the batch: run the batch first."""
        return key in self.keys

    def defer(self, now_ns: int) -> bool:
        """Whether the event arriving at ``now_ns`` (a monotonic clock) should wait for a batch."""
        defer = self.enabled and (bool(self.batch.events) or now_ns - self.last_event_ns < self.wait_ns)
        self.last_event_ns = now_ns
        return defer

    def add(self, deferred: Deferred, shadow_input: tuple[Any, bytes | None] | None = None) -> bool:
        """Queue ``deferred``; True when the batch is full and should run now."""
        self.batch.events.append(deferred)
        self.keys.add(deferred.key)
        if shadow_input is not None:
            self.batch.shadow_inputs[deferred.key] = shadow_input
        return len(self.batch.events) >= self.size

    def take(self) -> Batch:
        """The waiting batch (to run now); the batcher starts a new one."""
        batch, self.batch, self.keys = self.batch, Batch(), set()
        if batch.events:
            self.batches += 1
            self.largest = max(self.largest, len(batch.events))
        return batch

    def finish(self, key: str, state: bytes) -> None:
        """A batched user's new state, stored when that user's key is current again."""
        self.finished[key] = state

    def finished_state(self, key: str) -> bytes | None:
        """The user's new state from a batch not yet stored (and forget it here: the caller stores it)."""
        return self.finished.pop(key, None) if self.finished else None

    def forget(self, key: str) -> None:
        """``forget_user``: nothing of the user stays here (its waiting event, if any, ran before the forget)."""
        self.finished.pop(key, None)
        self.batch.shadow_inputs.pop(key, None)
