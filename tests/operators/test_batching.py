"""Micro-batching decisions (operators/batching.py), without Flink or a model."""

from __future__ import annotations

from types import SimpleNamespace

from operators.batching import MicroBatcher, failover_pending
from operators.state import PENDING

MS = 1_000_000


def _deferred(key: str) -> SimpleNamespace:
    return SimpleNamespace(key=key)


def test_a_lone_event_is_served_at_once_and_close_events_wait():
    b = MicroBatcher(size=3, wait_ms=5, enabled=True)
    assert not b.defer(100 * MS), "the first event after a quiet spell: served at once"
    assert b.defer(102 * MS), "2 ms later: within the wait, deferred"
    b.add(_deferred("a"))
    assert b.defer(200 * MS), "another event waits: this one joins the batch however late it comes"
    b.take()
    assert not b.defer(300 * MS), "nothing waits and the last came 100 ms ago"


def test_off_without_a_recurrent_model_or_with_size_one():
    assert not MicroBatcher(size=32, wait_ms=5, enabled=False).defer(1)
    off = MicroBatcher(size=1, wait_ms=5, enabled=True)
    assert not off.enabled and not off.defer(1) and not off.defer(2)


def test_the_batch_runs_when_full_and_a_user_never_has_two_events_waiting():
    b = MicroBatcher(size=3, wait_ms=5, enabled=True)
    assert not b.add(_deferred("a"), ("event-a", b"s"))
    assert not b.add(_deferred("b"))
    assert b.waiting("a") and not b.waiting("c")
    assert b.add(_deferred("c")), "the third fills the batch"
    batch = b.take()
    assert [d.key for d in batch.events] == ["a", "b", "c"]
    assert batch.shadow_inputs == {"a": ("event-a", b"s")}
    assert len(b) == 0 and not b.waiting("a") and b.batches == 1 and b.largest == 3


def test_finished_states_wait_for_their_key_and_forget_drops_everything():
    b = MicroBatcher(size=4, wait_ms=5, enabled=True)
    b.finish("a", b"new-a")
    assert b.finished_state("b") is None
    assert b.finished_state("a") == b"new-a"
    assert b.finished_state("a") is None, "handed over once: the caller stores it"
    b.add(_deferred("x"), ("event-x", None))
    b.finish("x", b"new-x")
    b.forget("x")
    assert "x" not in b.finished and "x" not in b.batch.shadow_inputs


def test_a_pending_event_after_a_failover_is_served_first_unless_this_process_holds_the_user():
    pending = bytes([3, PENDING]) + bytes(64)
    settled = bytes([3, 0]) + bytes(64)
    assert failover_pending(None, pending)
    assert not failover_pending(None, settled)
    assert not failover_pending(b"in-memory", pending), "this process ran the batch: nothing was lost"
    assert not failover_pending(None, None)
