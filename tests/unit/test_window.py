import pytest

from operators.errors import ConfigError
from operators.window import item_sequence, update_window


def test_window_grows_in_event_time_order_and_stays_bounded():
    # An empty window takes the first interaction as is.
    w = update_window([], "a", "view", 100, max_len=3)
    assert w == [("a", "view", 100)]
    # A newer event goes last.
    w = update_window(w, "b", "click", 200, max_len=3)
    assert item_sequence(w) == ["a", "b"]
    # A late event (ts 150) is inserted at its event-time position, not at the end.
    w = update_window(w, "c", "view", 150, max_len=3)
    assert item_sequence(w) == ["a", "c", "b"]
    # Past max_len the oldest entry is dropped.
    w = update_window(w, "d", "purchase", 300, max_len=3)
    assert w == [("c", "view", 150), ("b", "click", 200), ("d", "purchase", 300)]


def test_equal_timestamps_keep_arrival_order():
    w = update_window([("a", "view", 100)], "b", "view", 100, max_len=5)
    w = update_window(w, "c", "view", 100, max_len=5)
    assert item_sequence(w) == ["a", "b", "c"]


def test_repeats_are_kept_as_signal():
    w = update_window([("a", "view", 1)], "a", "click", 2, max_len=5)
    assert item_sequence(w) == ["a", "a"]


def test_max_age_drops_old_entries_relative_to_newest():
    w = [("a", "view", 0), ("b", "view", 500)]
    assert item_sequence(update_window(w, "c", "view", 1_000, max_len=10, max_age_ms=600)) == ["b", "c"]


def test_input_window_is_not_mutated():
    original = [("a", "view", 1)]
    update_window(original, "b", "view", 2, max_len=1)
    assert original == [("a", "view", 1)]


def test_bad_max_len_fails_with_the_value():
    with pytest.raises(ConfigError, match="max_len must be >= 1, got 0"):
        update_window([], "a", "view", 1, max_len=0)
