"""The event contract: parse and validate raw Kafka payloads, build output and dead-letter records.

Every input record is either an :class:`Event` or an :class:`~operators.errors.EventValidationError`
whose ``reason`` and ``code`` go to the dead-letter topic with the raw payload and source offset.

Two paths, one contract: :func:`decode_event` is the hot path (msgspec decodes and checks typed fields in
about a microsecond); when it rejects a payload, :func:`parse_event` (JSON Schema,
``schemas/event.schema.json``) decides, so the reason and code a dead letter carries are always the detailed
ones, and a payload is accepted exactly when the schema accepts it (a test fuzzes both paths against each
other). Output and dead-letter records are msgspec structs (:class:`RecommendationRecord`,
:class:`DeadLetterRecord`) whose JSON Schemas are generated from them (:func:`output_schemas`).
"""

from __future__ import annotations

import base64
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Annotated, Any, Literal

import msgspec
from jsonschema import Draft202012Validator, validators

from operators.errors import EventValidationError

__all__ = [
    "EVENT_TYPES",
    "FORGET_USER",
    "Event",
    "SourcePosition",
    "event_schema",
    "parse_event",
    "decode_event",
    "check_record_key",
    "RecommendedItem",
    "RecommendationRecord",
    "DeadLetterSource",
    "DeadLetterRecord",
    "output_schemas",
    "encode_record",
    "dead_letter_record",
    "redact_dead_letter",
    "recommendation_record",
]

EVENT_TYPES = ("view", "click", "add_to_cart", "purchase", "rating", "forget_user")
FORGET_USER = "forget_user"
"""Control event: delete all state held for the user (no item, no list)."""
MIN_TS_MS = 631_152_000_000  # 1990-01-01
MAX_TS_MS = 32_503_680_000_000  # 3000-01-01
_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
ID_INT_MIN, ID_INT_MAX = -(2**63), 2**63 - 1
"""Integer ids: JSON integers (no fraction, no exponent) in the signed 64-bit range, read as their decimal string."""
_Int64 = Annotated[int, msgspec.Meta(ge=ID_INT_MIN, le=ID_INT_MAX)]
ID_FIELDS = ("event_id", "item_id", "user_id")
"""Checked in this order on both paths (the schema path reports errors sorted by field name)."""
_BOM = b"\xef\xbb\xbf"


class _WireEvent(msgspec.Struct):
    """What the hot path decodes: the schema's typed fields (extra fields are ignored, as the schema allows)."""

    user_id: _Id | _Int64
    item_id: _Id | _Int64
    event_type: Literal["view", "click", "add_to_cart", "purchase", "rating"]
    ts: Annotated[int, msgspec.Meta(ge=MIN_TS_MS, le=MAX_TS_MS)]
    event_id: _Id | _Int64 | msgspec.UnsetType = msgspec.UNSET
    value: float | None = None


_WIRE_DECODER = msgspec.json.Decoder(_WireEvent)
_INT_DIGITS_LIMIT = sys.get_int_max_str_digits() or 10**9
_LONG_NUMBER = re.compile(rb"[0-9]{%d}" % (_INT_DIGITS_LIMIT + 1))

@dataclass(frozen=True, slots=True)
class SourcePosition:
    """Where a record came from: enough to find it again in Kafka."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None = None

    def event_id(self) -> str:
        """The id given to an event that carries none: ``topic:partition:offset``."""
        return f"{self.topic}:{self.partition}:{self.offset}"


@dataclass(frozen=True, slots=True)
class Event:
    """A valid input event, ids normalised to strings."""

    user_id: str
    item_id: str
    event_type: str
    ts: int
    event_id: str
    value: float | None = None


@lru_cache(maxsize=1)
def event_schema() -> dict[str, Any]:
    """The JSON Schema of input events (``operators/schemas/event.schema.json``)."""
    text = resources.files("operators").joinpath("schemas/event.schema.json").read_text("utf-8")
    return json.loads(text)


@lru_cache(maxsize=1)
def _validator() -> Draft202012Validator:
    """The schema's validator, with JSON's integers as integers: ``7.0`` is a number, not an integer (JSON
    Schema's default would accept it, and a user id ``7.0`` read as ``"7"`` or ``"7.0"`` is a guess)."""
    schema = event_schema()
    Draft202012Validator.check_schema(schema)
    checker = Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda _checker, value: type(value) is int
    )
    return validators.extend(Draft202012Validator, type_checker=checker)(schema)


def _is_id_error(error: Any) -> bool:
    """An error the id policy (:func:`_id_text`) words itself: pattern, integer range, or a float id."""
    return len(error.absolute_path) == 1 and error.absolute_path[0] in ID_FIELDS and (
        error.validator in ("pattern", "minimum", "maximum")
        or (error.validator == "type" and type(error.instance) is float)
    )


def _schema_reason(error: Any) -> tuple[str, str]:
    where = "/".join(str(p) for p in error.absolute_path) or "(root)"
    if error.validator == "required":
        return "missing_field", f"missing required field: {error.message}"
    if error.validator in ("minimum", "maximum") and where == "ts":
        return "absurd_timestamp", (
            f"field 'ts' = {error.instance} is outside the plausible epoch-millisecond range "
            f"(1990-01-01 .. 3000-01-01); send milliseconds, not seconds"
        )
    return "schema_violation", f"field '{where}': {error.message}"


def parse_event(
    raw: bytes | bytearray | str | None,
    *,
    source: SourcePosition,
    now_ms: int,
    max_bytes: int = 16_384,
    max_future_ms: int = 86_400_000,
) -> Event:
    """Parse and validate one raw payload.

    Args:
        raw: The Kafka record value.
        source: Where the record came from (its id when the event has no ``event_id``).
        now_ms: The current processing time, injected so that tests are deterministic.
        max_bytes: Payloads larger than this are rejected unparsed.
        max_future_ms: Events more than this far in the future of ``now_ms`` are rejected.

    Returns:
        The event, ids normalised to strings.

    Raises:
        EventValidationError: With a human-readable ``reason`` and a machine-readable ``code``.
    """
    if raw is None:
        raise EventValidationError("empty record value (tombstone); events must be JSON objects", "empty")
    if isinstance(raw, str):
        raw = raw.encode("utf-8")
    if len(raw) > max_bytes:
        raise EventValidationError(
            f"payload is {len(raw)} bytes, over the limit of {max_bytes} bytes", "oversized"
        )
    try:
        text = bytes(raw).decode("utf-8").removeprefix("\ufeff")  # a UTF-8 BOM is allowed (RFC 8259 s. 8.1)
    except UnicodeDecodeError as exc:
        raise EventValidationError(f"payload is not UTF-8: {exc}", "bad_encoding") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise EventValidationError(f"payload is not JSON: {exc}", "bad_json") from None
    except RecursionError:
        raise EventValidationError("payload nests arrays/objects too deeply to parse", "too_deep") from None
    except ValueError as exc:  # e.g. an integer literal over Python's digit limit
        raise EventValidationError(f"payload holds a number too long to read: {exc}", "number_too_large") from None
    if not isinstance(doc, dict):
        raise EventValidationError(
            f"payload must be a JSON object, got {type(doc).__name__}", "schema_violation"
        )
    errors = sorted(_validator().iter_errors(doc), key=lambda e: (e.validator != "required", e.path))
    if errors and all(_is_id_error(e) for e in errors):
        for name in ID_FIELDS:  # the hot path's checks, in its order, so both give the same code and reason
            if name in doc:
                _id_text(name, doc[name])
    if errors:
        code, reason = _schema_reason(errors[0])
        raise EventValidationError(reason, code)
    return _finish(
        doc["user_id"], doc.get("item_id", ""), doc["event_type"], doc["ts"], doc.get("event_id"), doc.get("value"),
        source=source, now_ms=now_ms, max_future_ms=max_future_ms,
    )


def _finish(
    user: str | int,
    item: str | int,
    event_type: str,
    ts: int,
    event_id: str | None,
    value: float | None,
    *,
    source: SourcePosition,
    now_ms: int,
    max_future_ms: int,
) -> Event:
    """The checks both paths share after the schema: ids (in :data:`ID_FIELDS` order), future timestamps,
    finite values."""
    event_id = None if event_id is None else _id_text("event_id", event_id)
    item_id = "" if item == "" and event_type == FORGET_USER else _id_text("item_id", item)
    user_id = _id_text("user_id", user)
    if ts > now_ms + max_future_ms:
        raise EventValidationError(
            f"field 'ts' = {ts} is {(ts - now_ms) / 3_600_000:.1f} h in the future "
            f"(limit {max_future_ms / 3_600_000:.1f} h); check the producer's clock and units",
            "absurd_timestamp",
        )
    return Event(
        user_id=user_id,
        item_id=item_id,
        event_type=event_type,
        ts=int(ts),
        event_id=event_id or source.event_id(),
        value=None if value is None else _value(value),
    )


def _id_text(name: str, value: object) -> str:
    """The id policy (``bad_id`` unless noted): a string of 1-128 printable characters (no control, format,
    line/paragraph separator, non-space separator, surrogate or unassigned code points; Python's
    ``str.isprintable``) without whitespace at either end, or a JSON integer in the signed 64-bit range, read
    as its decimal string. Floats (``7.0``, ``1e3``) are refused rather than guessed at. A lone UTF-16
    surrogate escape is ``bad_encoding``: such text cannot reach the JVM (pemja encodes strictly)."""
    if type(value) is str:
        if value.isprintable() and not value[0].isspace() and not value[-1].isspace():
            return value
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise EventValidationError(
                    f"field '{name}' holds a lone UTF-16 surrogate escape and cannot be represented as text",
                    "bad_encoding",
                ) from None
        bad = next((c for c in value if not c.isprintable()), None)
        if bad is not None:
            raise EventValidationError(
                f"field '{name}' holds the non-printable character U+{ord(bad):04X}; ids must be printable text",
                "bad_id",
            )
        raise EventValidationError(f"field '{name}' must not be blank or start or end with whitespace", "bad_id")
    if type(value) is int:
        if ID_INT_MIN <= value <= ID_INT_MAX:
            return str(value)
        raise EventValidationError(
            f"field '{name}' is an integer outside the signed 64-bit range; send such ids as strings", "bad_id"
        )
    if type(value) is float:
        raise EventValidationError(
            f"field '{name}' = {value!r} is written with a fraction or exponent; ids are strings or integers "
            "(write 7, not 7.0)",
            "bad_id",
        )
    raise EventValidationError(f"field '{name}' must be a string or an integer", "schema_violation")


def _value(value: float) -> float:
    try:
        out = float(value)
    except OverflowError:
        raise EventValidationError("field 'value' is out of the range of a double", "number_too_large") from None
    if out != out or out in (float("inf"), float("-inf")):
        raise EventValidationError("field 'value' must be a finite number (NaN and Infinity are not JSON)",
                                   "non_finite_number")
    return out


def decode_event(
    raw: bytes | None,
    *,
    source: SourcePosition,
    now_ms: int,
    max_bytes: int = 16_384,
    max_future_ms: int = 86_400_000,
) -> Event:
    """The hot path of :func:`parse_event`: same arguments, same result, same errors; fast for valid events."""
    if raw is None or len(raw) > max_bytes:
        return parse_event(raw, source=source, now_ms=now_ms, max_bytes=max_bytes, max_future_ms=max_future_ms)
    if raw[:3] == _BOM:
        raw = raw[3:]
    try:
        if not raw.isascii():
            raw.decode("utf-8")  # msgspec skips unknown fields without checking their bytes
        if len(raw) > _INT_DIGITS_LIMIT and _LONG_NUMBER.search(raw):
            raise ValueError("integer literal over the schema path's digit limit")
        wire = _WIRE_DECODER.decode(raw)
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError, ValueError, OverflowError):
        return parse_event(raw, source=source, now_ms=now_ms, max_bytes=max_bytes, max_future_ms=max_future_ms)
    event_id = None if wire.event_id is msgspec.UNSET else wire.event_id
    return _finish(wire.user_id, wire.item_id, wire.event_type, wire.ts, event_id, wire.value,
                   source=source, now_ms=now_ms, max_future_ms=max_future_ms)


def check_record_key(event: Event, key: str | None) -> None:
    """The job keys its state by the Kafka record key; it must be the event's user id."""
    if key is None or key == "":
        raise EventValidationError(
            f"record has no key; key every event by its user id (here {event.user_id!r})", "missing_key"
        )
    if key != event.user_id:
        raise EventValidationError(
            f"record key {key[:64]!r} differs from the payload's user_id {event.user_id[:64]!r}; "
            "key every event by its user id",
            "key_mismatch",
        )


class RecommendedItem(msgspec.Struct, array_like=False, omit_defaults=True):
    """One recommended item."""

    item_id: str
    score: float
    reason: dict[str, str | int] | None = None
    """Why it is here (:mod:`operators.rerank`): ``{"because": item_id}`` (the user's recent item most similar
    to it), with ``"trending": rank`` when the item trends, ``{"trending": rank}`` on a cold-start trending
    list, or ``{"cold_start": "popular"}``; absent when the re-ranker explains nothing."""


class RecommendationRecord(msgspec.Struct):
    """An output record (topic ``streamrec.recommendations``, Kafka key = user id): the ranked list that
    ``event_id`` triggered."""

    user_id: str
    event_id: str
    trigger_item_id: str
    items: list[RecommendedItem]
    model_version: str
    strategy: Literal["model", "neighbors", "trending", "popular"]
    """``model``; ``neighbors`` (item-to-item neighbours of the user's first known items, cold start);
    ``trending`` (in-stream trending items) or ``popular`` (the bundle's list, while nothing trends) when the
    user has no history the model knows."""
    history_len: int
    event_ts: int
    source_ts: int | None
    """Kafka timestamp of the input record (ms); latency = consume time - source_ts."""
    emit_ts: int
    provider: str | None = None
    """onnxruntime execution provider that scored the list."""


class DeadLetterSource(msgspec.Struct):
    """Where a rejected record came from."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None


class DeadLetterRecord(msgspec.Struct):
    """A dead letter (topic ``streamrec.dead-letter``, key = ``topic:partition:offset``)."""

    reason: str
    code: str
    source: DeadLetterSource
    raw: str | None
    raw_encoding: Literal["utf-8", "base64", "utf-8+truncated", "base64+truncated", "utf-8+redacted", "redacted"]
    rejected_at_ms: int


_ENCODER = msgspec.json.Encoder()


def encode_record(record: msgspec.Struct) -> bytes:
    """JSON bytes of an output or dead-letter record."""
    return _ENCODER.encode(record)


def output_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schemas of the output and dead-letter records, generated from their structs
    (written to ``operators/schemas/`` by ``python -m operators.events``; a test keeps the files current)."""
    out = {}
    for name, struct, title in (
        ("recommendation", RecommendationRecord, "streamrec recommendation list"),
        ("dead_letter", DeadLetterRecord, "streamrec dead letter"),
    ):
        schema = msgspec.json.schema(struct)
        out[name] = {"$schema": "https://json-schema.org/draft/2020-12/schema",
                     "$id": f"https://streamrec.invalid/schemas/{name}.schema.json", "title": title, **schema}
    return out


def dead_letter_record(
    raw: bytes | bytearray | str | None,
    error: EventValidationError,
    source: SourcePosition,
    *,
    now_ms: int,
    max_raw_chars: int = 65_536,
) -> DeadLetterRecord:
    """The dead-letter record for a rejected payload: reason, raw payload and source offset."""
    payload: str | None
    encoding = "utf-8"
    if raw is None:
        payload = None
    else:
        data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else bytes(raw)
        try:
            payload = data.decode("utf-8")
        except UnicodeDecodeError:
            payload, encoding = base64.b64encode(data).decode("ascii"), "base64"
        if len(payload) > max_raw_chars:
            payload = payload[:max_raw_chars]
            encoding += "+truncated"
    return DeadLetterRecord(
        reason=error.reason,
        code=error.code,
        source=DeadLetterSource(source.topic, source.partition, source.offset, source.timestamp_ms),
        raw=payload,
        raw_encoding=encoding,  # type: ignore[arg-type]
        rejected_at_ms=now_ms,
    )


def redact_dead_letter(record: DeadLetterRecord, raw: bytes | None, key: str | None,
                       pseudonym: Callable[[str], str] | None) -> DeadLetterRecord:
    """``record`` without the user's id (``dead_letter_payload = "redacted"``): the payload's ``user_id`` becomes
    ``pseudonym(user_id)`` (or goes, without one), a payload that is not a JSON object is not kept at all
    (``raw`` null, ``raw_encoding`` ``redacted``: its offset still finds it in the input topic), and the ids
    (the user's and the record key) quoted in the reason are replaced the same way."""
    ids: set[str] = set()
    if key:
        ids.add(key)
    doc = None
    if raw:
        try:
            doc = msgspec.json.decode(raw)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError, ValueError):
            doc = None
    if isinstance(doc, dict):
        user = doc.get("user_id")
        if isinstance(user, (str, int)) and not isinstance(user, bool):
            ids.add(str(user))
            if pseudonym is None:
                doc.pop("user_id")
            else:
                doc["user_id"] = pseudonym(str(user))
        redacted, encoding = msgspec.json.encode(doc).decode("utf-8"), "utf-8+redacted"
    else:
        redacted, encoding = None, "redacted"
    reason = record.reason
    for uid in sorted(ids, key=len, reverse=True):
        shown = pseudonym(uid) if pseudonym is not None else "<redacted>"
        for quoted in (repr(uid[:64]), repr(uid)):
            reason = reason.replace(quoted, repr(shown))
    return msgspec.structs.replace(record, reason=reason, raw=redacted, raw_encoding=encoding)


def recommendation_record(
    event: Event,
    items: list[tuple[str, float]],
    *,
    reasons: list[dict[str, str | int] | None] | None = None,
    model_version: str,
    emit_ms: int,
    source_ts_ms: int | None,
    strategy: str,
    history_len: int,
    provider: str | None = None,
) -> RecommendationRecord:
    """The output record: the ranked list triggered by ``event`` (scores as given; the serving core rounds them
    to 6 decimals, vectorised, before they get here)."""
    return RecommendationRecord(
        user_id=event.user_id,
        event_id=event.event_id,
        trigger_item_id=event.item_id,
        items=([RecommendedItem(item, score) for item, score in items] if reasons is None else
               [RecommendedItem(item, score, reason) for (item, score), reason in zip(items, reasons, strict=True)]),
        model_version=model_version,
        strategy=strategy,  # type: ignore[arg-type]
        history_len=history_len,
        event_ts=event.ts,
        source_ts=source_ts_ms,
        emit_ts=emit_ms,
        provider=provider,
    )


if __name__ == "__main__":  # regenerate the output schemas
    folder = resources.files("operators").joinpath("schemas")
    for _name, _schema in output_schemas().items():
        path = folder.joinpath(f"{_name}.schema.json")
        path.write_text(json.dumps(_schema, indent=2) + "\n", "utf-8")  # type: ignore[attr-defined]
        print(f"wrote {path}")
