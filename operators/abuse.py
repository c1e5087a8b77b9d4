"""Implausible behaviour: users whose events come too fast, or repeat one interaction over and over.

Checked on the user's window (:class:`operators.state.UserState`) with the new event added, so it costs two
vectorised passes over at most ``history_len`` entries and no extra state. A flagged event is quarantined: it
is not stored (it moves neither the user's window and model state nor anything shared), it gets no list, and
it goes to the quarantine topic (the dead-letter topic with code ``quarantined`` unless ``--quarantine-topic``
names one) with the reason. Because a quarantined event is not stored, a burst stays flagged until its rate
falls below the limit.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["AbuseConfig", "abuse_reason"]


class AbuseConfig(BaseModel):
    """Abuse-filter knobs (``--abuse KEY=VALUE``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = Field(True, description="quarantine users whose behaviour is implausible")
    max_events_per_minute: int = Field(
        120, ge=1, description="events of one user within 60 s of event time (below history_len: the window is "
                               "the evidence)")
    max_identical_run: int = Field(50, ge=2, description="the same item and event type this many times in a row")


def abuse_reason(keys: np.ndarray, ts: np.ndarray, types: np.ndarray, cfg: AbuseConfig) -> str | None:
    """Why the newest event (the last entry of the window arrays) is implausible, or None."""
    n = len(ts)
    if not cfg.enabled or n == 0:
        return None
    newest = int(ts[-1])
    if n > cfg.max_events_per_minute:
        recent = int(np.count_nonzero(ts >= newest - 60_000))
        if recent > cfg.max_events_per_minute:
            return (f"{recent} events within a minute of event time (limit {cfg.max_events_per_minute}); "
                    "quarantined until the rate drops")
    run = cfg.max_identical_run
    if n >= run:
        tail_keys, tail_types = keys[-run:], types[-run:]
        if (tail_keys == tail_keys[-1]).all() and (tail_types == tail_types[-1]).all():
            return f"the same item and event type {run} times in a row; quarantined"
    return None
