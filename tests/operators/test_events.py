import base64
import json
import re

import msgspec
import pytest

from operators.errors import EventValidationError
from operators.events import (
    Event,
    SourcePosition,
    check_record_key,
    dead_letter_record,
    decode_event,
    encode_record,
    event_schema,
    output_schemas,
    parse_event,
    recommendation_record,
)

SRC = SourcePosition("events", 3, 42, 1_767_225_600_000)
NOW = 1_767_225_600_000


def good(**overrides):
    doc = {"user_id": "u1", "item_id": "i9", "event_type": "view", "ts": NOW - 1000}
    doc.update(overrides)
    return json.dumps(doc).encode()


def reject(raw, **kwargs) -> EventValidationError:
    with pytest.raises(EventValidationError) as info:
        parse_event(raw, source=SRC, now_ms=NOW, **kwargs)
    # The hot path rejects it the same way.
    with pytest.raises(EventValidationError) as fast:
        decode_event(raw if not isinstance(raw, str) else raw.encode(), source=SRC, now_ms=NOW, **kwargs)
    assert (fast.value.code, fast.value.reason) == (info.value.code, info.value.reason)
    return info.value


def test_valid_event_is_normalised():
    event = parse_event(good(user_id=17, item_id=99, value=4.5, event_id="abc"), source=SRC, now_ms=NOW)
    assert event == Event("17", "99", "view", NOW - 1000, "abc", 4.5)


def test_event_without_id_gets_its_source_position():
    event = parse_event(good(), source=SRC, now_ms=NOW)
    assert event.event_id == "events:3:42"


@pytest.mark.parametrize("event_type", ["view", "click", "add_to_cart", "purchase", "rating"])
def test_every_event_type_is_accepted(event_type):
    assert parse_event(good(event_type=event_type), source=SRC, now_ms=NOW).event_type == event_type


def test_missing_field_names_the_field():
    doc = json.loads(good())
    del doc["item_id"]
    err = reject(json.dumps(doc))
    assert err.code == "missing_field"
    assert "'item_id' is a required property" in err.reason


@pytest.mark.parametrize(
    ("overrides", "code", "fragment"),
    [
        ({"ts": "yesterday"}, "schema_violation", "field 'ts'"),
        ({"ts": 1767225599999.5}, "schema_violation", "field 'ts'"),
        ({"event_type": "teleport"}, "schema_violation", "field 'event_type'"),
        ({"user_id": ""}, "schema_violation", "field 'user_id'"),
        ({"user_id": None}, "schema_violation", "field 'user_id'"),
        ({"value": "lots"}, "schema_violation", "field 'value'"),
        ({"ts": (NOW - 1000) // 1000}, "absurd_timestamp", "send milliseconds, not seconds"),
        ({"ts": -5}, "absurd_timestamp", "outside the plausible"),
    ],
)
def test_schema_violations(overrides, code, fragment):
    err = reject(good(**overrides))
    assert err.code == code
    assert fragment in err.reason


def test_future_timestamp_is_rejected_with_hours():
    err = reject(good(ts=NOW + 3 * 86_400_000))
    assert err.code == "absurd_timestamp"
    assert re.search(r"72\.0 h in the future", err.reason)


def test_future_limit_is_configurable():
    event = parse_event(good(ts=NOW + 3 * 86_400_000), source=SRC, now_ms=NOW, max_future_ms=4 * 86_400_000)
    assert event.ts == NOW + 3 * 86_400_000


def test_oversized_payload_is_rejected_before_parsing():
    err = reject(b"{" + b" " * 100 + b"}", max_bytes=50)
    assert err.code == "oversized"
    assert err.reason == "payload is 102 bytes, over the limit of 50 bytes"


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b'{"user_id": "u1",', "bad_json"),
        (b"[1, 2]", "schema_violation"),
        (b"\xff\xfe{}", "bad_encoding"),
        (None, "empty"),
        (b"", "bad_json"),
    ],
)
def test_unparseable_payloads(raw, code):
    assert reject(raw).code == code


def test_blank_ids_are_rejected():
    assert reject(good(item_id="   ")).code == "bad_id"


POISON = {
    # what the issue found reaching (or crashing) downstream operators, and neighbours of it
    "surrogate user": (b'{"user_id": "p\\ud800u", "item_id": "i1", "event_type": "view", "ts": 1767225599000}',
                       "bad_encoding", "user_id"),
    "surrogate item": (good(item_id="x\udc00"), "bad_encoding", "item_id"),
    "surrogate event id": (good(event_id="\ud83d"), "bad_encoding", "event_id"),
    "float user id": (good()[:-1].replace(b'"u1"', b"7.0") + b"}", "bad_id", "7.0"),
    "exponent item id": (good()[:-1].replace(b'"i9"', b"1E3") + b"}", "bad_id", "fraction or exponent"),
    "200-digit user id": (good()[:-1].replace(b'"u1"', b"1" * 200) + b"}", "bad_id", "64-bit"),
    "2**63 item id": (good(item_id=2**63), "bad_id", "64-bit"),
    "NUL in user id": (good(user_id="u\x001"), "bad_id", "U+0000"),
    "newline at the end": (good(user_id="u1\n"), "bad_id", "U+000A"),
    "bidi override": (good(item_id="i\u202e9"), "bad_id", "U+202E"),
    "line separator": (good(user_id="a\u2028b"), "bad_id", "U+2028"),
    "leading space": (good(user_id=" u1"), "bad_id", "whitespace"),
    "NaN value": (good()[:-1] + b', "value": NaN}', "non_finite_number", "finite"),
    "Infinity value": (good()[:-1] + b', "value": -Infinity}', "non_finite_number", "finite"),
    "1e999 value": (good()[:-1] + b', "value": 1e999}', "non_finite_number", "finite"),
    "400-digit value": (good()[:-1] + b', "value": 9' + b"9" * 400 + b"}", "number_too_large", "double"),
    "5000-digit number": (good()[:-1] + b', "n": ' + b"1" * 5000 + b"}", "number_too_large", "too long"),
    "deep nesting": (good()[:-1] + b', "x": ' + b"[" * 3000 + b"]" * 3000 + b"}", "too_deep", "deeply"),
}


@pytest.mark.parametrize("name", list(POISON))
def test_poison_gets_its_own_reason_code(name):
    raw, code, needle = POISON[name]
    err = reject(raw)
    assert (err.code, needle in err.reason) == (code, True), err.reason
    assert err.code != "internal_error"
    encode_record(dead_letter_record(raw, err, SRC, now_ms=NOW))  # the dead letter itself is representable


@pytest.mark.parametrize(
    ("user", "expected"),
    [(-(2**63), str(-(2**63))), (2**63 - 1, str(2**63 - 1)), (0, "0"), ("é ü", "é ü"), ("日本", "日本")],
)
def test_ids_inside_the_policy_are_accepted(user, expected):
    event = parse_event(good(user_id=user, event_id=12), source=SRC, now_ms=NOW)
    assert (event.user_id, event.event_id) == (expected, "12")
    assert decode_event(good(user_id=user, event_id=12), source=SRC, now_ms=NOW) == event


def test_a_utf8_byte_order_mark_is_allowed():
    event = decode_event(b"\xef\xbb\xbf" + good(), source=SRC, now_ms=NOW)
    assert event == parse_event(b"\xef\xbb\xbf" + good(), source=SRC, now_ms=NOW)
    assert event.user_id == "u1"


def test_every_accepted_id_can_cross_into_the_jvm():
    """pemja encodes strings strictly as UTF-16: whatever validation accepts must encode."""
    accepted, codes = [], set()
    for raw in _fuzz_corpus():
        try:
            event = decode_event(raw, source=SRC, now_ms=NOW)
        except EventValidationError as err:
            codes.add(err.code)
            continue
        for text in (event.user_id, event.item_id, event.event_id):
            text.encode("utf-16")
        accepted.append(event)
    # the corpus reaches both sides: many accepted (non-ASCII and integer ids among them), every reject code
    assert len(accepted) >= 30 and {"é", "0"} <= {e.user_id for e in accepted}, len(accepted)
    assert {"bad_encoding", "bad_id", "bad_json", "schema_violation", "too_deep"} <= codes, codes


def test_extra_properties_are_allowed():
    assert parse_event(good(campaign="x"), source=SRC, now_ms=NOW).item_id == "i9"


def test_lone_surrogate_in_an_id_is_a_dead_letter_not_a_crash():
    raw = b'{"user_id": "p\\ud800u", "item_id": "i1", "event_type": "view", "ts": 1767225599000}'
    err = reject(raw)
    assert err.code == "bad_encoding"
    assert "user_id" in err.reason and "surrogate" in err.reason
    record = json.loads(encode_record(dead_letter_record(raw, err, SRC, now_ms=NOW)))
    assert record["raw"] == raw.decode()


def test_record_key_must_be_the_user_id():
    event = parse_event(good(), source=SRC, now_ms=NOW)
    check_record_key(event, "u1")
    with pytest.raises(EventValidationError, match="record key 'u2' differs from the payload's user_id 'u1'") as e:
        check_record_key(event, "u2")
    assert e.value.code == "key_mismatch"
    for missing in (None, ""):
        with pytest.raises(EventValidationError, match="record has no key") as e:
            check_record_key(event, missing)
        assert e.value.code == "missing_key"


def _fuzz_corpus():
    """Valid events and near misses of every field, as raw bytes."""
    rng = __import__("numpy").random.default_rng(0)
    base = {"user_id": "u1", "item_id": "i9", "event_type": "view", "ts": NOW - 1000, "event_id": "e", "value": 1}
    variants = {
        "user_id": ["", " ", "x" * 128, "x" * 129, 0, -3, 1.0, 7.5, True, None, [], {}, 10**30, "é", 2**63 - 1,
                    2**63, "a\x00", "a\u2028b", "\ud800", " a", "a b"],
        "item_id": ["", "i", 5, 2.0, None, False, "\t", "i\n", "\u202e", 1e300],
        "event_type": ["view", "VIEW", "", 3, None, "purchase"],
        "ts": [NOW, NOW - 1000.0, NOW + 0.5, "1", None, 631152000000, 631151999999, 32503680000000,
               32503680000001, True, NOW + 2 * 86_400_000],
        "event_id": ["", "e" * 129, 5, None, "ok", 5.0, "\udfff", "e\x7f"],
        "value": [None, 1, 2.5, "x", True, [], -1e308],
    }
    docs = [dict(base)]
    for field, values in variants.items():
        for value in values:
            docs.append({**base, field: value})
        docs.append({k: v for k, v in base.items() if k != field})
    for _ in range(300):
        doc = dict(base)
        for field, values in variants.items():
            if rng.random() < 0.3:
                doc[field] = values[int(rng.integers(len(values)))]
        docs.append(doc)
    raws = [json.dumps(d).encode() for d in docs]
    ok = raws[0][:-1]  # a valid event without its closing brace, to append fields to
    raws += [ok + b', "zz": "\xc3("}', ok + b', "zz": "\xed\xa0\x80"}', b'{"user_id": "\xff"' + ok[14:] + b"}",
             ok + b', "x": ' + b"[" * 3000 + b"]" * 3000 + b"}", ok + b', "n": ' + b"1" * 5000 + b"}",
             ok + b', "value": 9' + b"9" * 400 + b"}", ok + b', "value": 1e999}', ok + b', "value": -1e999}',
             ok.replace(b'"u1"', b"7.0") + b"}", ok.replace(b'"i9"', b"1E3") + b"}"]
    raws += [b"[]", b"null", b"1", b'"x"', b"{", b"", b"\xef\xbb\xbf" + raws[0], raws[0][:-1], raws[0] + b" x",
             b'{"user_id": "u1", "user_id": 5, "item_id": "i", "event_type": "view", "ts": 1767225599000}',
             b'{"user_id": "u1", "item_id": "i", "event_type": "view", "ts": 1767225599000, "value": NaN}']
    return raws


def test_hot_path_and_schema_path_agree_on_every_record():
    """decode_event (msgspec) accepts exactly what parse_event (JSON Schema) accepts, with the same result,
    and rejects with the same code and reason."""
    checked = 0
    for raw in _fuzz_corpus():
        try:
            slow = parse_event(raw, source=SRC, now_ms=NOW)
        except EventValidationError as err:
            slow = (err.code, err.reason)
        try:
            fast = decode_event(raw, source=SRC, now_ms=NOW)
        except EventValidationError as err:
            fast = (err.code, err.reason)
        assert fast == slow, raw
        checked += 1
    assert checked > 350


@pytest.mark.parametrize(
    ("tail", "code"),
    [
        (b', "x": ' + b"[" * 3000 + b"]" * 3000, "too_deep"),
        (b', "n": ' + b"1" * 5000, "number_too_large"),
        (b', "value": 9' + b"9" * 400, "number_too_large"),
        (b', "zz": "\xc3("', "bad_encoding"),
    ],
)
def test_hostile_payloads_get_their_own_reason_codes(tail, code):
    assert reject(good()[:-1] + tail + b"}").code == code


def test_integral_floats_are_refused_as_ids():
    raw = good()[:-1].replace(b'"u1"', b"7.0").replace(b'"i9"', b"1E3") + b"}"
    assert reject(raw).code == "bad_id"


def test_output_schema_files_are_generated_from_the_structs():
    from importlib import resources

    for name, schema in output_schemas().items():
        text = resources.files("operators").joinpath(f"schemas/{name}.schema.json").read_text("utf-8")
        assert json.loads(text) == schema, f"regenerate with `python -m operators.events` ({name})"


def test_output_records_validate_against_their_schemas():
    from jsonschema import Draft202012Validator

    schemas = output_schemas()
    event = Event("u1", "i9", "view", 5, "e1")
    rec = recommendation_record(event, [("i2", 0.5)], model_version="m1", emit_ms=9, source_ts_ms=None,
                                strategy="popular", history_len=1, provider="CPUExecutionProvider")
    Draft202012Validator(schemas["recommendation"]).validate(json.loads(encode_record(rec)))
    raw = b"\xff"
    dead = dead_letter_record(raw, reject(raw), SRC, now_ms=NOW)
    Draft202012Validator(schemas["dead_letter"]).validate(json.loads(encode_record(dead)))
    # the schemas are generated from the same structs, so also hold them to the documented contract
    # (docs/concepts/event-contract.md):
    # these fields are required, and a record without one of them is refused
    doc = json.loads(encode_record(rec))
    contract = {"user_id", "event_id", "trigger_item_id", "items", "model_version", "strategy", "history_len",
                "event_ts", "emit_ts"}
    assert contract <= set(schemas["recommendation"]["$defs"]["RecommendationRecord"]["required"])
    for name in sorted(contract):
        assert not Draft202012Validator(schemas["recommendation"]).is_valid(
            {k: v for k, v in doc.items() if k != name}), name
    assert not Draft202012Validator(schemas["recommendation"]).is_valid({**doc, "items": [{"score": 1.0}]})


def test_dead_letter_record_keeps_reason_raw_and_offset():
    raw = b'{"user_id": 1'
    record = msgspec.to_builtins(dead_letter_record(raw, reject(raw), SRC, now_ms=NOW))
    assert record["code"] == "bad_json"
    assert record["raw"] == raw.decode()
    assert record["raw_encoding"] == "utf-8"
    assert record["source"] == {"topic": "events", "partition": 3, "offset": 42, "timestamp_ms": SRC.timestamp_ms}
    assert record["rejected_at_ms"] == NOW


def test_dead_letter_record_base64_encodes_binary():
    raw = b"\xff\x00\x01"
    record = msgspec.to_builtins(dead_letter_record(raw, reject(raw), SRC, now_ms=NOW))
    assert record["raw_encoding"] == "base64"
    assert base64.b64decode(record["raw"]) == raw


def test_dead_letter_record_truncates_huge_payloads():
    raw = b"x" * 100
    record = msgspec.to_builtins(dead_letter_record(raw, reject(raw, max_bytes=10), SRC, now_ms=NOW,
                                                    max_raw_chars=10))
    assert record["raw"] == "x" * 10
    assert record["raw_encoding"] == "utf-8+truncated"


def test_recommendation_record_shape():
    event = Event("u1", "i9", "view", 5, "e1")
    record = recommendation_record(event, [("i2", 0.5), ("i3", 0.25)], model_version="m1", emit_ms=9,
                                   source_ts_ms=7, strategy="model", history_len=3)
    assert json.loads(encode_record(record)) == {
        "user_id": "u1", "event_id": "e1", "trigger_item_id": "i9",
        "items": [{"item_id": "i2", "score": 0.5}, {"item_id": "i3", "score": 0.25}],
        "model_version": "m1", "strategy": "model", "history_len": 3, "event_ts": 5, "source_ts": 7, "emit_ts": 9,
        "provider": None,
    }


def test_schema_file_is_a_valid_json_schema():
    from jsonschema import Draft202012Validator

    Draft202012Validator.check_schema(event_schema())
    assert event_schema()["required"] == ["user_id", "event_type", "ts"]
    assert event_schema()["else"] == {"required": ["item_id"]}  # every event but forget_user names its item


def test_redacted_dead_letters_keep_no_user_id():
    """``dead_letter_payload = "redacted"``: the payload's user id becomes its pseudonym (or goes without a
    secret), a payload that is not a JSON object is not kept, and ids quoted in the reason are replaced."""
    from operators.errors import EventValidationError
    from operators.events import SourcePosition, dead_letter_record, redact_dead_letter

    src = SourcePosition("t", 0, 7, None)
    raw = b'{"user_id": "alice-77", "item_id": "i1", "event_type": "teleport"}'
    err = EventValidationError("record key 'alice-77' differs from the payload's user_id 'alice-77'", "key_mismatch")
    record = redact_dead_letter(dead_letter_record(raw, err, src, now_ms=1), raw, "alice-77", lambda u: f"p:{len(u)}")
    assert "alice" not in record.reason + (record.raw or "")
    assert json.loads(record.raw) == {"user_id": "p:8", "item_id": "i1", "event_type": "teleport"}
    assert record.raw_encoding == "utf-8+redacted" and record.source.offset == 7
    gone = redact_dead_letter(dead_letter_record(raw, err, src, now_ms=1), raw, "alice-77", None)
    assert "user_id" not in json.loads(gone.raw) and "alice" not in gone.reason
    garbage = b"alice-77 sent this, not JSON"
    opaque = redact_dead_letter(dead_letter_record(garbage, err, src, now_ms=1), garbage, "alice-77", None)
    assert opaque.raw is None and opaque.raw_encoding == "redacted"
