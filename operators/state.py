"""A user's keyed state as one packed byte string: the window of recent interactions plus the model's state.

One value per user means one crossing into Flink's state backend per read and per write (a ``ListState``
pickles and crosses once per element). Layout version 3, little-endian::

    header  24 bytes  version u8 = 3 | flags u8 | n u16 | model floats m u16 | shown items s u16
                      | affinity floats c u16 | purchased items p u16 | model tag u32
                      | newest event time i64 (epoch ms)
    keys    8n bytes  item keys u64 (:func:`operators.items.item_key`), oldest first
    ages    4n bytes  newest event time - event time, ms, u32 (saturates at ~49.7 days)
    types   n bytes   event type codes u8 (index in ``EVENT_TYPES``; bit 7: negative feedback,
                      :data:`operators.interests.NEGATIVE`)
    model   4m bytes  the model's per-user state, float32 (empty for stateless models)
    shown   5s bytes  the items of the user's last lists (repeat suppression, :mod:`operators.rerank`):
                      32-bit item hashes u32, then each one's list age u8 (0 = newest list)
    affinity 4c bytes the long-term, decayed affinity per item category, float32, as of the newest event
                      time (:mod:`operators.interests`; empty without a catalog)
    purchased 8p bytes item keys u64 of the user's purchases, oldest first, bounded: never recommended again,
                      even after they left the window
    pending rest      only when flags & 1 (PENDING): the event whose list is not computed yet (micro-batching),
                      msgpack ``[event_id, item_id, ts, source_ts]``; the model state is still the one before it

At 200 events, a 2 x 64 LRU model (320 floats), 3 remembered lists of 10 and 20 categories a user takes 24 +
2,600 + 1,280 + 150 + 80 = 4,134 bytes (plus 8 per remembered purchase). ``version`` lets a layout migrate
state restored from a savepoint: versions 1 and 2 (a 20-byte header without ``c`` and ``p``; version 1 has no
shown section, its ``s`` field was reserved, always 0) read as version 3 with no affinity and no purchases;
:func:`decode_state` refuses versions it does not know with a message, never silently.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import msgspec
import numpy as np

from operators.errors import StateLayoutError
from operators.events import EVENT_TYPES
from operators.rerank import ShownHistory

__all__ = ["LAYOUT_VERSION", "PENDING", "Pending", "has_pending", "UserState", "decode_state", "encode_state",
           "model_tag", "EVENT_CODES"]

LAYOUT_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
PENDING = 1
_HEADER = struct.Struct("<BBHHHHHIq")
_HEADER_V2 = struct.Struct("<BBHHHIq")
_MAX_PURCHASED = 65_535
_MAX_AGE = np.uint64(2**32 - 1)
EVENT_CODES = {name: code for code, name in enumerate(EVENT_TYPES)}


def model_tag(version: str) -> int:
    """32-bit tag of a model version: model state written by another model is rebuilt, never reused."""
    return zlib.crc32(version.encode("utf-8"))


class Pending(msgspec.Struct, array_like=True):
    """The newest event of a user whose list waits for a micro-batch (kept in state so a failover loses it not)."""

    event_id: str
    item_id: str
    ts: int
    source_ts: int | None


_PENDING_ENCODER = msgspec.msgpack.Encoder()
_PENDING_DECODER = msgspec.msgpack.Decoder(Pending)


@dataclass(slots=True)
class UserState:
    """Decoded state (arrays may be read-only views into the stored bytes)."""

    keys: np.ndarray  # uint64 [n], oldest first
    ts: np.ndarray  # int64 [n], event times (ms)
    types: np.ndarray  # uint8 [n]
    model: np.ndarray | None  # float32 [m] or None
    tag: int  # model_tag of the model that wrote ``model``
    newest: int  # newest event time (ms), 0 when empty
    pending: Pending | None = None
    shown: ShownHistory | None = None
    affinity: np.ndarray | None = None  # float32 [c], long-term per-category affinity as of ``newest``
    purchased: np.ndarray | None = None  # uint64 [p], item keys of purchases, oldest first

    @classmethod
    def empty(cls) -> UserState:
        """A user never seen (or expired)."""
        return cls(np.zeros(0, np.uint64), np.zeros(0, np.int64), np.zeros(0, np.uint8), None, 0, 0)

    def __len__(self) -> int:
        return len(self.keys)

    def add(self, key: int, event_type: str, ts: int, max_len: int, code: int | None = None) -> bool:
        """Add one interaction at its event-time position (ties keep arrival order), keep the newest
        ``max_len``. ``code`` overrides the type code (negative feedback). Returns whether it went last (in
        order); a late event returns False."""
        code = EVENT_CODES[event_type] if code is None else code
        n = len(self.keys)
        if n == 0 or ts >= self.newest:
            start = max(n - max_len + 1, 0)
            self.keys = np.concatenate((self.keys[start:], [np.uint64(key)]))
            self.ts = np.concatenate((self.ts[start:], [ts]))
            self.types = np.concatenate((self.types[start:], [code])).astype(np.uint8)
            self.newest = ts
            return True
        pos = int(np.searchsorted(self.ts, ts, side="right"))
        self.keys = np.insert(self.keys, pos, np.uint64(key))[-max_len:]
        self.ts = np.insert(self.ts, pos, ts)[-max_len:]
        self.types = np.insert(self.types, pos, code).astype(np.uint8)[-max_len:]
        return False

    def remember_purchase(self, key: int, limit: int) -> None:
        """Keep ``key`` among the newest ``limit`` purchased items (once; a repeat moves it to the end)."""
        old = self.purchased if self.purchased is not None else np.zeros(0, np.uint64)
        kept = old[old != np.uint64(key)]
        self.purchased = np.concatenate((kept, [np.uint64(key)]))[-min(limit, _MAX_PURCHASED):].astype(np.uint64)


def has_pending(data: bytes | None) -> bool:
    """Whether stored state holds an event whose list was not emitted yet (one byte read, no decoding)."""
    return bool(data) and len(data) >= _HEADER_V2.size and data[0] in READABLE_VERSIONS and bool(data[1] & PENDING)


def encode_state(state: UserState) -> bytes:
    """Pack (layout version 3)."""
    n = len(state.keys)
    model = state.model if state.model is not None else np.zeros(0, np.float32)
    ages = np.minimum((state.newest - state.ts).astype(np.uint64), _MAX_AGE).astype("<u4")
    flags = PENDING if state.pending is not None else 0
    shown = state.shown
    s = len(shown) if shown is not None else 0
    c = len(state.affinity) if state.affinity is not None else 0
    p = len(state.purchased) if state.purchased is not None else 0
    header = _HEADER.pack(LAYOUT_VERSION, flags, n, len(model), s, c, p, state.tag if len(model) else 0,
                          state.newest)
    parts = [header, state.keys.astype("<u8", copy=False).tobytes(), ages.tobytes(), state.types.tobytes(),
             model.astype("<f4", copy=False).tobytes()]
    if s:
        parts += [shown.hashes.astype("<u4", copy=False).tobytes(), shown.ages.astype(np.uint8).tobytes()]
    if c:
        parts.append(state.affinity.astype("<f4", copy=False).tobytes())
    if p:
        parts.append(state.purchased.astype("<u8", copy=False).tobytes())
    if state.pending is not None:
        parts.append(_PENDING_ENCODER.encode(state.pending))
    return b"".join(parts)


def decode_state(data: bytes | None) -> UserState:
    """Unpack; ``None`` (no state yet, or expired by TTL) is the empty state."""
    if not data:
        return UserState.empty()
    version = data[0]
    if version not in READABLE_VERSIONS:
        msg = (f"user state has layout version {version}; this job reads versions {READABLE_VERSIONS}. "
               "Restore the savepoint with the streamrec version that wrote it, or migrate it.")
        raise StateLayoutError(msg)
    head = _HEADER if version >= 3 else _HEADER_V2
    if len(data) < head.size:
        msg = f"user state is {len(data)} bytes, shorter than its {head.size}-byte header"
        raise StateLayoutError(msg)
    if version >= 3:
        _, flags, n, m, s, c, p, tag, newest = head.unpack_from(data)
    else:
        _, flags, n, m, s, tag, newest = head.unpack_from(data)
        c = p = 0
    expected = head.size + 13 * n + 4 * m + 5 * s + 4 * c + 8 * p
    pending = None
    if flags & PENDING and len(data) > expected:
        try:
            pending = _PENDING_DECODER.decode(data[expected:])
        except msgspec.DecodeError as exc:
            msg = f"user state's pending event is unreadable: {exc}"
            raise StateLayoutError(msg) from None
    elif len(data) != expected:
        msg = (f"user state is {len(data)} bytes, layout version {version} with n={n}, m={m}, s={s}, c={c}, p={p} "
               f"needs {expected}")
        raise StateLayoutError(msg)
    off = head.size
    keys = np.frombuffer(data, "<u8", n, off)
    ages = np.frombuffer(data, "<u4", n, off + 8 * n)
    types = np.frombuffer(data, np.uint8, n, off + 12 * n)
    model = np.frombuffer(data, "<f4", m, off + 13 * n).copy() if m else None
    shown = None
    if s:
        at = off + 13 * n + 4 * m
        # copies: a view at an unaligned offset sends numpy down its slow loops
        shown = ShownHistory(np.frombuffer(data, "<u4", s, at).copy(),
                             np.frombuffer(data, np.uint8, s, at + 4 * s).copy())
    at = off + 13 * n + 4 * m + 5 * s
    affinity = np.frombuffer(data, "<f4", c, at).copy() if c else None
    purchased = np.frombuffer(data, "<u8", p, at + 4 * c) if p else None
    return UserState(keys, newest - ages.astype(np.int64), types, model, tag, newest, pending, shown, affinity,
                     purchased)
