"""What a Flink JobManager's log says about a job: restarts, completed checkpoints and their sizes, switches to
RUNNING. The fault suite reads it for its duplicate bounds (the log's clock is local time)."""

from __future__ import annotations

import datetime
import re

__all__ = ["RESTART", "CHECKPOINT_BYTES", "RUNNING", "completed_checkpoints", "log_time_ms"]

RESTART = re.compile(r"switched from state \w+ to RESTARTING")
CHECKPOINT_BYTES = re.compile(r"Completed checkpoint \d+ for job \w+ \((\d+) bytes")
_TRIGGERED = re.compile(r"Triggering checkpoint (\d+) .*? @ (\d+) for job (\w+)")
_COMPLETED = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*?Completed checkpoint (\d+) for job (\w+)", re.M)
RUNNING = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*?Job \S+ \(\w+\) switched from state "
                     r"(?:RESTARTING|CREATED) to RUNNING", re.M)
"""A restart (``RESTARTING -> RUNNING``) or a start or recovery by a JobManager (``CREATED -> RUNNING``)."""


def log_time_ms(stamp: str) -> int:
    """``2026-12-07 03:39:21,102`` (a log line's local time) -> epoch ms."""
    return int(datetime.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp() * 1000)  # naive: local


def completed_checkpoints(log_text: str) -> list[tuple[int, int]]:
    """``(triggered_ms, completed_ms)`` of every completed checkpoint in a job's log (the JobManager's lines)."""
    triggered = {(m[3], int(m[1])): int(m[2]) for m in _TRIGGERED.finditer(log_text)}
    out = []
    for m in _COMPLETED.finditer(log_text):
        t = triggered.get((m[3], int(m[2])))
        if t is not None:
            out.append((t, log_time_ms(m[1])))
    return sorted(out)
