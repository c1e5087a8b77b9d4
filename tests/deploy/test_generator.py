import json
from collections import Counter

import pytest

from deploy.harness.generator import MALFORMED_KINDS, GeneratorConfig, generate_events, split_by_time, to_records
from operators.errors import ConfigError, EventValidationError
from operators.events import SourcePosition, decode_event, parse_event

SRC = SourcePosition("t", 0, 0)
NOW = 1_800_000_000_000


def test_generation_is_deterministic_and_sorted():
    cfg = GeneratorConfig(n_users=50, n_items=80, n_clusters=5, seed=3)
    a, b = generate_events(cfg), generate_events(cfg)
    assert a == b
    assert [e["ts"] for e in a] == sorted(e["ts"] for e in a)
    assert len({e["event_id"] for e in a}) == len(a)


def test_stream_has_skewed_popularity_and_mixed_types():
    events = generate_events(GeneratorConfig(n_users=300, n_items=200, seed=1))
    counts = Counter(e["item_id"] for e in events).most_common()
    top_share = sum(c for _, c in counts[:20]) / len(events)
    assert top_share > 0.25  # 10% of the items take far more than 10% of the events
    types = Counter(e["event_type"] for e in events)
    assert set(types) == {"view", "click", "add_to_cart", "purchase", "rating"}
    assert types["view"] > types["click"] > types["add_to_cart"] > types["purchase"]


def test_every_generated_event_is_valid():
    for event in generate_events(GeneratorConfig(n_users=30, n_items=50, n_clusters=5)):
        parse_event(json.dumps(event), source=SRC, now_ms=NOW)


def test_malformed_records_are_all_rejected():
    events = generate_events(GeneratorConfig(n_users=100, n_items=50, n_clusters=5))
    records = to_records(events, malformed_share=0.2)
    bad = [r for r in records if not r.valid]
    assert {r.kind for r in bad} == set(MALFORMED_KINDS)
    assert 0.15 < len(bad) / len(records) < 0.25
    for record in bad:
        for decode in (parse_event, decode_event):
            with pytest.raises(EventValidationError) as err:
                decode(record.value, source=SRC, now_ms=NOW)
            assert err.value.code == MALFORMED_KINDS[record.kind], (record.kind, err.value.reason)


def test_split_by_time():
    events = [{"ts": t} for t in range(10)]
    before, after = split_by_time(events, 0.8)
    assert [e["ts"] for e in before] == list(range(8))
    assert [e["ts"] for e in after] == [8, 9]
    with pytest.raises(ConfigError):
        split_by_time(events, 1.0)


def test_bad_generator_config():
    with pytest.raises(ConfigError, match="n_clusters \\(9\\) cannot exceed n_items \\(3\\)"):
        GeneratorConfig(n_items=3, n_clusters=9)
