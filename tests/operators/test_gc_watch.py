"""The collector's pauses as the job reports them, and the settled collector (operators/gc_watch.py)."""

from __future__ import annotations

import gc

from operators.gc_watch import YOUNG_THRESHOLD, pauses, settle


def test_readers_see_collections_since_their_last_take() -> None:
    first, second = pauses().reader(), pauses().reader()
    gc.collect()
    taken = first.take()
    assert taken["full_collections"] >= 1 and taken["collections"] >= 1
    assert 0 < taken["pause_ms_max"] <= taken["pause_ms_total"]
    assert first.take()["collections"] == 0  # reset by the take
    assert second.take()["full_collections"] >= 1  # another reader's take does not reset this one
    first.close()
    gc.collect()
    assert first.take()["collections"] == 0 and second.take()["collections"] >= 1  # a closed reader stops counting
    second.close()


def test_settle_freezes_the_loaded_heap_and_raises_the_young_threshold() -> None:
    before = gc.get_threshold()
    try:
        held = [{"k": [i]} for i in range(10_000)]  # long-lived containers, as a loaded bundle's
        frozen = settle()
        assert frozen >= len(held)
        assert gc.get_threshold() == (YOUNG_THRESHOLD, *before[1:])
        assert held[0]["k"] == [0]
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
