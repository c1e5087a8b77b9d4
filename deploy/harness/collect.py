"""The one collector of the job's topics: reads the output topic and the dead-letter topic(s) on a thread,
leaves the probe's records out by one rule, and hands every other record to a hook. The demo, the replay and the
fault suite subclass it for what each keeps (counts and latencies, lists by event id, whole documents)."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from deploy.harness.job_process import PROBE_USER
from deploy.harness.kafka_clients import assigned_consumer

__all__ = ["Collector", "is_probe"]

log = logging.getLogger(__name__)

_PROBE = PROBE_USER.encode()


def is_probe(value: bytes) -> bool:
    """A record of the readiness/recovery probe (by its id anywhere in the record: the key and the user id may be
    pseudonyms, a dead letter carries the probe inside its payload)."""
    return _PROBE in value


class Collector(threading.Thread):
    """Reads ``output`` and ``dead`` (from the beginning, or from now on) until :meth:`stop`.

    Keeps every list and dead letter as a document (:meth:`snapshot`); subclasses override :meth:`on_list` and
    :meth:`on_dead` to keep something else. A failed poll (the broker away) is retried: the consumer reconnects.
    """

    def __init__(self, bootstrap: str, output: str, dead: str | Sequence[str], *, from_beginning: bool = True,
                 read_committed: bool = False, poll_ms: int = 200, name: str = "collector", **consumer: Any) -> None:
        super().__init__(daemon=True, name=name)
        dead_topics = [dead] if isinstance(dead, str) else list(dead)
        if read_committed:
            consumer["isolation_level"] = "read_committed"
        self.consumer = assigned_consumer(bootstrap, [output, *dead_topics], from_beginning=from_beginning,
                                          **consumer)
        self.output = output
        self.poll_ms = poll_ms
        self.lists: list[dict] = []
        self.dead_letters: list[dict] = []
        self.lock = threading.Lock()
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                polled = self.consumer.poll(timeout_ms=self.poll_ms)
            except Exception as exc:  # noqa: BLE001 - the broker went away; the consumer reconnects
                log.debug("collector poll failed: %s", exc)
                time.sleep(0.5)
                continue
            now_ms = time.time() * 1000
            for records in polled.values():
                for record in records:
                    probe = is_probe(record.value)
                    if record.topic == self.output:
                        self.on_list(record.value, now_ms, probe=probe)
                    elif not probe:
                        self.on_dead(record.value, now_ms)
        self.consumer.close()

    def on_list(self, value: bytes, now_ms: float, *, probe: bool) -> None:  # noqa: ARG002 - for subclasses
        """A record of the output topic (``probe``: the probe's own list)."""
        if not probe:
            doc = json.loads(value)
            with self.lock:
                self.lists.append(doc)

    def on_dead(self, value: bytes, now_ms: float) -> None:  # noqa: ARG002 - for subclasses
        """A record of a dead-letter (or quarantine) topic, not the probe's."""
        doc = json.loads(value)
        with self.lock:
            self.dead_letters.append(doc)

    def snapshot(self) -> tuple[list[dict], list[dict]]:
        """Copies of the lists and dead letters kept so far."""
        with self.lock:
            return list(self.lists), list(self.dead_letters)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop polling and close the consumer."""
        self.halt.set()
        self.join(timeout=timeout_s)
