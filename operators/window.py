"""A user's rolling interaction window: the pure core behind the job's keyed state.

The window holds the user's most recent interactions ordered by event time (ties keep arrival
order), bounded by ``max_len`` and by age. The Flink adapter stores it as
``ListState<Tuple3<item_id STRING, event_type STRING, ts LONG>>`` with a state TTL.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence

from operators.errors import ConfigError

__all__ = ["Interaction", "update_window", "item_sequence"]

Interaction = tuple[str, str, int]
"""``(item_id, event_type, ts)``: one entry of the window, as stored in Flink state."""


def update_window(
    window: Iterable[Interaction],
    item_id: str,
    event_type: str,
    ts: int,
    *,
    max_len: int,
    max_age_ms: int | None = None,
) -> list[Interaction]:
    """Return the window with one interaction added.

    Args:
        window: The current window, oldest first.
        item_id: The item of the new interaction.
        event_type: Its type.
        ts: Its event time (epoch ms). Late events are inserted at their event-time position.
        max_len: Keep at most this many entries (the newest).
        max_age_ms: Drop entries older than this relative to the newest event time in the window.

    Returns:
        A new list, oldest first, never longer than ``max_len``.
    """
    if max_len < 1:
        msg = f"max_len must be >= 1, got {max_len}"
        raise ConfigError(msg)
    entries = list(window)
    keys = [entry[2] for entry in entries]
    entries.insert(bisect.bisect_right(keys, ts), (item_id, event_type, int(ts)))
    if max_age_ms is not None:
        newest = entries[-1][2]
        entries = [entry for entry in entries if newest - entry[2] <= max_age_ms]
    return entries[-max_len:]


def item_sequence(window: Sequence[Interaction]) -> list[str]:
    """The item ids of the window, oldest first (repeats kept: they are signal for the model)."""
    return [entry[0] for entry in window]
