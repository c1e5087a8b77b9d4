"""The serving core with a really trained, exported recurrent bundle: step path vs full-sequence path,
late events, unknown items, cold start, model changes, dead letters."""

import json

import numpy as np
import pytest

from operators.bundle import load_bundle
from operators.inference import OnnxModel
from operators.items import item_key
from operators.rerank import RerankConfig
from operators.serving import DEAD_LETTER, LIST, ServingCore
from operators.state import UserState, decode_state, encode_state
from operators.window import left_pad_row, model_input

TS = 1_767_225_600_000


@pytest.fixture(scope="module")
def model(trained_bundle):
    return OnnxModel(load_bundle(trained_bundle), providers=["CPUExecutionProvider"])


PLAIN = RerankConfig(repeat_window=0, diversity_lambda=0, neighbor_cold_start=0, explain=False)  # model order


@pytest.fixture
def core(model):
    return ServingCore(model, top_k=10, history_len=50, input_topic="events", rerank=PLAIN)


def event(user, item, ts, event_type="view", **extra):
    return json.dumps({"user_id": user, "item_id": item, "event_type": event_type, "ts": ts, **extra}).encode()


def send(core, store, user, item, ts, **kw):
    out = core.process(user, event(user, item, ts, **kw), 0, ts, ts, store.get(user), now_ms=TS + 10**9)
    if out.state is not None:
        store[user] = out.state
    return out, json.loads(out.value)


def full_path(core, state_bytes):
    """What the full-sequence graph gives on the stored window (the rebuild path)."""
    state = decode_state(state_bytes)
    inp = model_input(core.index.lookup(state.keys))
    scores, items, new = core.model.run_full(left_pad_row(inp.sequence, core.seq_len)[None], inp.exclude[None])
    return core.vocab[items[0, :10]].tolist(), scores[0, :10], new[0]


def test_active_provider_is_cpu_here(model):
    assert model.active_provider == "CPUExecutionProvider"
    assert model.bundle.recurrent and model.bundle.state_size > 0


def test_step_path_gives_the_full_sequence_scores_event_after_event(core):
    """Exact while the user's stream fits the model's sequence length; beyond it the step state also remembers
    events that left the window (weight <= max|lambda| ** L, recorded in the manifest)."""
    vocab = core.bundle.item_vocab
    store: dict[str, bytes] = {}
    rng = np.random.default_rng(1)
    length = core.seq_len
    for n, i in enumerate(rng.integers(0, len(vocab), size=length)):
        out, doc = send(core, store, "u1", vocab[i], TS + n)
        items, scores, state = full_path(core, out.state)
        # The list came from the one-event step graph; the full-sequence graph agrees on the same window.
        assert [x["item_id"] for x in doc["items"]] == items
        np.testing.assert_allclose([x["score"] for x in doc["items"]], scores, atol=1e-4)
        np.testing.assert_allclose(decode_state(out.state).model, state, atol=1e-4)
        assert doc["history_len"] == n + 1 and doc["strategy"] == "model"
    # every event was one step, the first one from the empty state (what a rebuild would give, far cheaper)
    assert core.counts["rebuilds"] == 0 and core.counts["steps"] == length
    assert 0 < core.bundle.manifest["model"]["memory_beyond_window"] < 1


def test_lists_never_hold_an_item_of_the_window(core):
    vocab = core.bundle.item_vocab
    store: dict[str, bytes] = {}
    seen = set()
    for n in range(40):
        item = vocab[(n * 7) % len(vocab)]
        seen.add(item)
        _, doc = send(core, store, "u2", item, TS + n)
        shown = [x["item_id"] for x in doc["items"]]
        assert len(shown) == 10 and not set(shown) & seen
        assert [x["score"] for x in doc["items"]] == sorted((x["score"] for x in doc["items"]), reverse=True)


def test_a_late_event_goes_to_its_event_time_place_and_the_model_sees_event_time_order(core):
    """Training reads a user's events in event-time order: after a late event the model's state is the one the
    full-sequence graph gives on the window in that order (a rebuild), not the arrival-order step's."""
    vocab = core.bundle.item_vocab
    store: dict[str, bytes] = {}
    for n, item in enumerate(vocab[:5]):
        send(core, store, "u3", item, TS + 10 * n)
    rebuilds, steps = core.counts["rebuilds"], core.counts["steps"]
    out, doc = send(core, store, "u3", vocab[9], TS + 15)  # between the 2nd and 3rd event
    assert (core.counts["rebuilds"], core.counts["steps"], core.counts["late_rebuilds"]) == (rebuilds + 1, steps, 1)
    state = decode_state(out.state)
    assert state.keys.tolist() == [item_key(i) for i in (vocab[0], vocab[1], vocab[9], *vocab[2:5])]
    assert not {x["item_id"] for x in doc["items"]} & {*vocab[:5], vocab[9]}
    items, scores, model_state = full_path(core, out.state)
    np.testing.assert_allclose(state.model, model_state, atol=1e-4)
    assert [x["item_id"] for x in doc["items"]] == items
    # the same events in event-time order, stepped one by one, reach the same state and the same next list
    in_order: dict[str, bytes] = {}
    for item, ts in ((vocab[0], 0), (vocab[1], 10), (vocab[9], 15), (vocab[2], 20), (vocab[3], 30), (vocab[4], 40)):
        send(core, in_order, "u3-ordered", item, TS + ts)
    np.testing.assert_allclose(decode_state(in_order["u3-ordered"]).model, state.model, atol=1e-4)
    # the next in-order event is a step again, from the rebuilt state
    out, _ = send(core, store, "u3", vocab[11], TS + 50)
    assert core.counts["rebuilds"] == rebuilds + 1 and core.counts["steps"] == steps + 6 + 1
    # the previous behaviour (stepping in arrival order) gives another state: the check above can fail
    core.rebuild_late = False
    stepped: dict[str, bytes] = {}
    for n, item in enumerate(vocab[:5]):
        send(core, stepped, "u3-stepped", item, TS + 10 * n)
    send(core, stepped, "u3-stepped", vocab[9], TS + 15)
    assert np.abs(decode_state(stepped["u3-stepped"]).model - model_state).max() > 1e-3
    # an event older than the whole window is not kept, but its item is still excluded from its own list
    small = ServingCore(core.model, top_k=10, history_len=3, input_topic="events")
    store = {}
    for n, item in enumerate(vocab[:3]):
        send(small, store, "u3b", item, TS + 10 * n)
    out, doc = send(small, store, "u3b", vocab[7], TS - 100)
    assert item_key(vocab[7]) not in decode_state(out.state).keys.tolist()
    assert vocab[7] not in [x["item_id"] for x in doc["items"]]


def test_an_unknown_item_is_remembered_but_changes_no_score(core):
    vocab = core.bundle.item_vocab
    store: dict[str, bytes] = {}
    _, before = send(core, store, "u4", vocab[3], TS)
    out, after = send(core, store, "u4", "never-seen-item", TS + 1)
    assert after["history_len"] == 2 and after["strategy"] == "model"
    assert after["items"] == before["items"]


def test_cold_start_serves_the_most_popular_items(core):
    store: dict[str, bytes] = {}
    popular = list(core.bundle.popular_items)
    _, doc = send(core, store, "u5", "unknown-1", TS)
    assert doc["strategy"] == "popular"
    assert [x["item_id"] for x in doc["items"]] == popular[:10]
    assert core.counts["cold_start"] == 1


def test_state_written_by_another_model_is_rebuilt(core):
    vocab = core.bundle.item_vocab
    store: dict[str, bytes] = {}
    send(core, store, "u6", vocab[1], TS)
    state = decode_state(store["u6"])
    state.model, state.tag = np.zeros_like(state.model), 12345  # as if a different model had written it
    store["u6"] = encode_state(state)
    rebuilds = core.counts["rebuilds"]
    out, doc = send(core, store, "u6", vocab[2], TS + 1)
    assert core.counts["rebuilds"] == rebuilds + 1
    assert [x["item_id"] for x in doc["items"]] == full_path(core, out.state)[0]


def test_invalid_events_are_dead_letters_and_leave_state_alone(core):
    store: dict[str, bytes] = {"u7": encode_state(UserState.empty())}
    for key, payload, code in [
        ("u7", b"{", "bad_json"),
        ("u8", event("u7", "i1", TS), "key_mismatch"),
        (None, event("u7", "i1", TS), "missing_key"),
    ]:
        out = core.process(key, payload, 2, 99, TS, store.get("u7"), now_ms=TS)
        assert out.kind == DEAD_LETTER and out.state is None
        doc = json.loads(out.value)
        assert doc["code"] == code and doc["source"] == {"topic": "events", "partition": 2, "offset": 99,
                                                         "timestamp_ms": TS}
        assert out.key == "events:2:99"


def test_state_that_cannot_be_read_is_started_afresh_not_a_crash(core):
    from operators.state import has_pending

    garbage = b"\x07garbage-state-bytes...."
    assert not has_pending(garbage)  # an unknown layout is never taken for a pending event
    out = core.process("u9", event("u9", core.bundle.item_vocab[0], TS), 0, 1, TS, garbage, now_ms=TS)
    assert out.kind == LIST and json.loads(out.value)["history_len"] == 1
    assert core.counts["state_resets"] == 1 and core.counts["errors"] == 0
    assert decode_state(out.state).keys.tolist() == [item_key(core.bundle.item_vocab[0])]


def test_top_k_larger_than_the_candidates_fails_fast(model):
    from operators.errors import ConfigError

    with pytest.raises(ConfigError, match="top_k=1000 is larger than the"):
        ServingCore(model, top_k=1000, history_len=50, input_topic="events")


def test_timing_is_accounted_per_part(core):
    store: dict[str, bytes] = {}
    for n in range(5):
        send(core, store, "u10", core.bundle.item_vocab[n], TS + n)
    timing = core.take_timing()
    assert timing["events"] == 5
    assert all(timing[k] > 0 for k in ("parse", "state_decode", "model", "rerank", "output"))
    assert core.take_timing()["events"] == 0


def test_a_deferred_event_lost_with_its_batch_is_served_from_the_state_alone(core):
    vocab = core.bundle.item_vocab
    store: dict[str, bytes] = {}
    send(core, store, "u11", vocab[1], TS)
    deferred = core.process("u11", event("u11", vocab[2], TS + 1, event_id="late-list"), 0, 5, TS + 1,
                            store["u11"], now_ms=TS, defer=True)
    from operators.state import has_pending

    assert has_pending(deferred.state) and not has_pending(store["u11"])
    # the batch is lost (failover): only the stored state is left, and it is enough
    out = core.resolve("u11", deferred.state, now_ms=TS)
    doc = json.loads(out.value)
    assert doc["event_id"] == "late-list" and doc["history_len"] == 2
    assert not has_pending(out.state)
    assert core.resolve("u11", out.state, now_ms=TS) is None
    # the same list as if it had never been deferred
    again: dict[str, bytes] = {}
    send(core, again, "u11", vocab[1], TS)
    _, direct = send(core, again, "u11", vocab[2], TS + 1)
    assert [x["item_id"] for x in direct["items"]] == [x["item_id"] for x in doc["items"]]
