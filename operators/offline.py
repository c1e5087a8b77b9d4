"""The job's serving path without Flink and Kafka: the same :class:`~operators.serving.ServingCore`, fed records
in order, its per-user state kept in an embedded RocksDB store (the engine of the job's state backend) under the
user's key, in the job's layout (:mod:`operators.state`). Used by ``streamrec replay --offline``.

A record is what the job reads from Kafka: record key (the user id), payload bytes, partition and offset. The
lists are the bytes the job would emit; the streamed replay and this path give the same ones (a test holds
them to that, list for list and score for score).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from operators.serving import Output, ServingCore
from operators.trending import TrendingLoop

__all__ = ["StateStore", "RocksStateStore", "MemoryStateStore", "OfflineRecord", "serve_offline"]


class StateStore(Protocol):
    """Per-user state bytes by user id."""

    def get(self, key: str) -> bytes | None: ...

    def put(self, key: str, value: bytes) -> None: ...

    def delete(self, key: str) -> None: ...

    def close(self) -> None: ...


class MemoryStateStore:
    """A dict (small replays, tests)."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    def get(self, key: str) -> bytes | None:
        return self.data.get(key)

    def put(self, key: str, value: bytes) -> None:
        self.data[key] = value

    def delete(self, key: str) -> None:
        self.data.pop(key, None)

    def close(self) -> None:
        self.data.clear()


class RocksStateStore:
    """An embedded RocksDB store (``rocksdict`` raw mode: bytes keys and values), so a replay over millions of
    users does not hold them all in RAM. ``path=None``: a temporary directory removed on :meth:`close`."""

    def __init__(self, path: str | Path | None = None) -> None:
        from rocksdict import AccessType, Options, Rdict

        self._tmp = path is None
        self.path = Path(tempfile.mkdtemp(prefix="streamrec-state-")) if path is None else Path(path)
        opts = Options(raw_mode=True)
        opts.create_if_missing(True)
        self._db = Rdict(str(self.path), options=opts, access_type=AccessType.read_write())

    def get(self, key: str) -> bytes | None:
        return self._db.get(key.encode("utf-8"))

    def put(self, key: str, value: bytes) -> None:
        self._db[key.encode("utf-8")] = value

    def delete(self, key: str) -> None:
        del self._db[key.encode("utf-8")]

    def __len__(self) -> int:
        return sum(1 for _ in self._db.keys())

    def close(self) -> None:
        self._db.close()
        if self._tmp:
            shutil.rmtree(self.path, ignore_errors=True)


@dataclass(frozen=True, slots=True)
class OfflineRecord:
    """One input record as the job would read it from Kafka."""

    key: str
    payload: bytes
    offset: int
    partition: int = 0
    source_ts: int | None = None


def serve_offline(core: ServingCore, records: Iterable[OfflineRecord], store: StateStore,
                  now_ms: int | None = None) -> Iterator[tuple[OfflineRecord, Output, float]]:
    """Serve ``records`` one by one, in order, as the job's keyed function does (read state, process, write
    state): yields ``(record, output, milliseconds it took)``. ``now_ms`` (default: the wall clock per record)
    is what the job's processing time would be (only validation's future-timestamp rule reads it). With
    trending on, the accepted events feed a :class:`~operators.trending.TrendingLoop` whose boards reach the core
    as the control topic's messages reach the job."""
    loop = TrendingLoop(core.trending_cfg) if core.trending is not None else None
    for record in records:
        t0 = time.perf_counter()
        out = core.process(record.key, record.payload, record.partition, record.offset, record.source_ts,
                           store.get(record.key), now_ms if now_ms is not None else time.time_ns() // 1_000_000)
        if out.state == b"":  # forget_user
            store.delete(record.key)
        elif out.state is not None:
            store.put(record.key, out.state)
        if loop is not None and out.accepted is not None:
            message = loop.observe(out.accepted)
            if message is not None:
                core.control(message)
        yield record, out, (time.perf_counter() - t0) * 1000
