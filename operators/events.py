"""The event contract: parse and validate raw Kafka payloads, build output and dead-letter records.

Every input record is either an :class:`Event` or an :class:`~operators.errors.EventValidationError`
whose ``reason`` and ``code`` go to the dead-letter topic with the raw payload and source offset.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator

from operators.errors import EventValidationError

__all__ = [
    "Event",
    "SourcePosition",
    "event_schema",
    "parse_event",
    "dead_letter_record",
    "recommendation_record",
]

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
    schema = event_schema()
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


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
        text = bytes(raw).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EventValidationError(f"payload is not UTF-8: {exc}", "bad_encoding") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise EventValidationError(f"payload is not JSON: {exc}", "bad_json") from None
    if not isinstance(doc, dict):
        raise EventValidationError(
            f"payload must be a JSON object, got {type(doc).__name__}", "schema_violation"
        )
    errors = sorted(_validator().iter_errors(doc), key=lambda e: (e.validator != "required", e.path))
    if errors:
        code, reason = _schema_reason(errors[0])
        raise EventValidationError(reason, code)
    ts = doc["ts"]
    if ts > now_ms + max_future_ms:
        raise EventValidationError(
            f"field 'ts' = {ts} is {(ts - now_ms) / 3_600_000:.1f} h in the future "
            f"(limit {max_future_ms / 3_600_000:.1f} h); check the producer's clock and units",
            "absurd_timestamp",
        )
    user_id = str(doc["user_id"])
    item_id = str(doc["item_id"])
    if not user_id.strip() or not item_id.strip():
        raise EventValidationError("'user_id' and 'item_id' must not be blank", "schema_violation")
    value = doc.get("value")
    return Event(
        user_id=user_id,
        item_id=item_id,
        event_type=doc["event_type"],
        ts=int(ts),
        event_id=str(doc.get("event_id") or source.event_id()),
        value=None if value is None else float(value),
    )


def dead_letter_record(
    raw: bytes | bytearray | str | None,
    error: EventValidationError,
    source: SourcePosition,
    *,
    now_ms: int,
    max_raw_chars: int = 65_536,
) -> dict[str, Any]:
    """The dead-letter record for a rejected payload: reason, raw payload and source offset."""
    payload: str | None
    encoding = "utf-8"
    if raw is None:
        payload = None
    else:
        data = raw.encode("utf-8") if isinstance(raw, str) else bytes(raw)
        try:
            payload = data.decode("utf-8")
        except UnicodeDecodeError:
            payload, encoding = base64.b64encode(data).decode("ascii"), "base64"
        if len(payload) > max_raw_chars:
            payload = payload[:max_raw_chars]
            encoding += "+truncated"
    return {
        "reason": error.reason,
        "code": error.code,
        "source": {
            "topic": source.topic,
            "partition": source.partition,
            "offset": source.offset,
            "timestamp_ms": source.timestamp_ms,
        },
        "raw": payload,
        "raw_encoding": encoding,
        "rejected_at_ms": now_ms,
    }


def recommendation_record(
    event: Event,
    items: list[tuple[str, float]],
    *,
    model_version: str,
    emit_ms: int,
    source_ts_ms: int | None,
    strategy: str,
    history_len: int,
) -> dict[str, Any]:
    """The output record: the ranked list triggered by ``event``."""
    return {
        "user_id": event.user_id,
        "event_id": event.event_id,
        "trigger_item_id": event.item_id,
        "items": [{"item_id": item, "score": round(float(score), 6)} for item, score in items],
        "model_version": model_version,
        "strategy": strategy,
        "history_len": history_len,
        "event_ts": event.ts,
        "source_ts": source_ts_ms,
        "emit_ts": emit_ms,
    }
