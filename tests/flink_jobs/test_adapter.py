"""The thin Flink adapter (flink_jobs/functions.py RecommendFunction) with fake Flink state, timers and metrics:
micro-batched events get the same latency gauge and shadow scoring as events served at once (they used to skip
both), and a batch is scored before a model swap."""

from __future__ import annotations

import json
import time

import pytest

from flink_jobs.functions import ACCEPTED_TAG, DEAD_LETTER_TAG, SHADOW_TAG, RecommendFunction
from operators.abuse import AbuseConfig
from operators.config import JobConfig
from operators.serving import ServingCore

TS = 1_767_225_600_000


class FakeState:
    """One ValueState: a dict by the current key (set by the test before each call, as Flink does)."""

    def __init__(self) -> None:
        self.key = None
        self.values: dict[str, object] = {}

    def value(self):  # noqa: ANN201
        return self.values.get(self.key)

    def update(self, value) -> None:  # noqa: ANN001
        self.values[self.key] = value

    def clear(self) -> None:
        self.values.pop(self.key, None)


class FakeGroup:
    def add_group(self, *_: object) -> FakeGroup:
        return self

    def counter(self, _: str) -> FakeGroup:
        return self

    def inc(self, _: int = 1) -> None:
        pass


class FakeRuntime:
    def __init__(self, state: FakeState) -> None:
        self.state = state

    def get_state(self, _descriptor):  # noqa: ANN001, ANN201
        return self.state

    def get_metrics_group(self) -> FakeGroup:
        return FakeGroup()

    def get_index_of_this_subtask(self) -> int:
        return 0

    def get_number_of_parallel_subtasks(self) -> int:
        return 1


class FakeTimers:
    def __init__(self) -> None:
        self.registered: list[int] = []

    def register_processing_time_timer(self, ts: int) -> None:
        self.registered.append(ts)


class FakeCtx:
    def __init__(self, state: FakeState) -> None:
        self.state = state
        self.timers = FakeTimers()

    def timer_service(self) -> FakeTimers:
        return self.timers

    def get_broadcast_state(self, _descriptor):  # noqa: ANN001, ANN201
        raise KeyError("no broadcast state in this test")

    def get_current_key(self) -> str:
        return self.state.key


@pytest.fixture
def function(trained_bundle, tmp_path, monkeypatch):
    monkeypatch.setenv("FLINK_LOG_DIR", str(tmp_path))
    cfg = JobConfig(bootstrap_servers="127.0.0.1:9092", bundle_path=str(trained_bundle),
                    checkpoint_dir=str(tmp_path / "ck"), top_k=10, history_len=200, micro_batch=4,
                    micro_batch_wait_ms=60_000)
    state = FakeState()
    fn = RecommendFunction(cfg)
    fn.open(FakeRuntime(state))
    return fn, state, FakeCtx(state)


def _event(user: str, item: str, ts: int) -> tuple:
    payload = json.dumps({"user_id": user, "item_id": item, "event_type": "view", "ts": ts}).encode()
    return (user, payload, 0, ts - TS, int(time.time() * 1000) - 5)


def _drive(fn, state, ctx, user: str, item: str, ts: int) -> list:  # noqa: ANN001
    state.key = user
    return list(fn.process_element(_event(user, item, ts), ctx))


def test_batched_lists_feed_the_latency_gauge_and_the_shadow(function, trained_bundle):
    fn, state, ctx = function
    assert fn.batcher.enabled, "micro-batching is on (micro_batch=4)"
    fn.shadow.core = ServingCore.from_config(fn.cfg, bundle_path=str(trained_bundle))
    vocab = fn.core.bundle.item_vocab
    out = []
    # the first event comes alone (served at once); the next four close together: deferred, the 4th fills the batch
    for n, user in enumerate(["a", "b", "c", "d", "e"]):
        out += _drive(fn, state, ctx, user, vocab[n], TS + n)
    assert fn.core.counts["batches"] == 1 and len(ctx.timers.registered) >= 3
    lists = [r for r in out if not isinstance(r, tuple)]
    shadow = [r for r in out if isinstance(r, tuple) and r[0] is SHADOW_TAG]
    assert len(lists) == 5
    assert len(shadow) == 5, "the shadow model scores batched events too"
    assert fn.shadow.agreement.compared == 5
    assert fn.latency_ms.n == 5, "batched lists feed the latency gauge"


def test_a_swap_scores_the_waiting_batch_with_the_model_it_was_deferred_under(function, trained_bundle):
    from operators.hotswap import CONTROL_MODEL, SwapResult

    fn, state, ctx = function
    vocab = fn.core.bundle.item_vocab
    for n, user in enumerate(["a", "b", "c"]):  # the first is served at once, the next two wait
        _drive(fn, state, ctx, user, vocab[n], TS + n)
    assert len(fn.batcher) == 2
    old_version = fn.core.version
    new = ServingCore.from_config(fn.cfg, bundle_path=str(trained_bundle))
    new.tag, new.version = fn.core.tag + 1, "retrained"

    class Loader:
        busy = True

        def poll(self):  # noqa: ANN201
            return [SwapResult(kind=CONTROL_MODEL, version="retrained", ok=True, reason="ok", load_ms=1.0, core=new)]

    fn.loader = Loader()
    out = [r for r in fn._swap_results() if not isinstance(r, tuple)]  # noqa: SLF001 - lists only
    versions = [json.loads(bytes(r[1]))["model_version"] for r in out]
    assert versions == [old_version, old_version], "the waiting lists come from the model they were deferred under"
    assert fn.core is new and not len(fn.batcher)


def _held_ids(fn) -> str:  # noqa: ANN001
    """Every per-user thing the adapter keeps in memory, as text (keys and values)."""
    held = [fn.batcher.finished, fn.batcher.keys, fn.batcher.batch.shadow_inputs, fn.shadow.agreement.last]
    return repr([(list(h.keys()) if isinstance(h, dict) else sorted(h)) for h in held])


def test_forget_user_leaves_nothing_of_the_user_in_the_adapters_memory(function, trained_bundle):
    """After ``forget_user`` the user's keyed state is gone and so is everything the adapter holds in memory
    for them: the shadow agreement's last lists, a finished batch's state waiting to be stored, the shadow
    inputs. The agreement is keyed by a per-process keyed digest: no raw user id in memory at any time."""
    fn, state, ctx = function
    fn.shadow.core = ServingCore.from_config(fn.cfg, bundle_path=str(trained_bundle))
    vocab = fn.core.bundle.item_vocab
    user = "forget-me-7f3a"
    for n in range(3):  # alone, then close together: deferred and batched
        _drive(fn, state, ctx, user, vocab[n], TS + n)
        _drive(fn, state, ctx, f"other-{n}", vocab[n + 5], TS + n)
    state.key = user
    list(fn._on_timer(TS, ctx))  # noqa: SLF001 - the batch's wait is over
    assert fn.shadow.agreement.compared >= 2
    assert user not in _held_ids(fn), "per-user memory is keyed by a digest, never by the raw id"
    forget = json.dumps({"user_id": user, "event_type": "forget_user", "ts": TS + 9}).encode()
    state.key = user
    out = list(fn.process_element((user, forget, 0, 9, int(time.time() * 1000)), ctx))
    assert not [r for r in out if not isinstance(r, tuple)], "forget_user emits no list"
    assert user not in state.values
    remembered = len(fn.shadow.agreement.last)
    fn.shadow.agreement.forget("other-0")
    assert len(fn.shadow.agreement.last) == remembered - 1, "forget drops exactly the user's entry"
    assert fn.shadow.agreement._id(user) not in fn.shadow.agreement.last  # noqa: SLF001
    assert user not in fn.batcher.finished and user not in fn.batcher.batch.shadow_inputs


def test_pseudonymised_job_redacts_dead_letters_and_quarantine(trained_bundle, tmp_path, monkeypatch):
    """With --pseudonymize-users, dead letters and quarantined records carry the pseudonym, never the raw id
    (payload and reason text); ``dead_letter_payload = "raw"`` keeps them as received."""
    from operators.serving import pseudonym

    secret = "unit-test-secret-0123456789"
    monkeypatch.setenv("STREAMREC_USER_ID_SECRET", secret)
    monkeypatch.setenv("FLINK_LOG_DIR", str(tmp_path))
    for payload_mode, redacted in ((None, True), ("raw", False)):
        cfg = JobConfig(bootstrap_servers="127.0.0.1:9092", bundle_path=str(trained_bundle),
                        checkpoint_dir=str(tmp_path / "ck"), top_k=10, history_len=200, pseudonymize_users=True,
                        dead_letter_payload=payload_mode, abuse=AbuseConfig(max_events_per_minute=3))
        state = FakeState()
        fn = RecommendFunction(cfg)
        fn.open(FakeRuntime(state))
        ctx = FakeCtx(state)
        vocab = fn.core.bundle.item_vocab
        user = "raw-user-91c2"
        out = []
        for n in range(6):  # a burst: quarantined after the 3rd
            out += _drive(fn, state, ctx, user, vocab[n], TS + n)
        bad = json.dumps({"user_id": user, "item_id": vocab[1], "event_type": "teleport", "ts": TS}).encode()
        state.key = user
        out += list(fn.process_element((user, bad, 0, 99, None), ctx))
        dead = [json.loads(bytes(r[1][1])) for r in out if isinstance(r, tuple) and r[0] is DEAD_LETTER_TAG]
        assert len(dead) == 4 and {d["code"] for d in dead} == {"quarantined", "schema_violation"}
        text = json.dumps(dead)
        if redacted:
            assert user not in text, text
            assert all(json.loads(d["raw"])["user_id"] == pseudonym(secret.encode(), user) for d in dead)
            assert all(d["raw_encoding"] == "utf-8+redacted" for d in dead)
            assert pseudonym(secret.encode(), user) in dead[0]["reason"]
        else:
            assert all(json.loads(d["raw"])["user_id"] == user for d in dead)


def test_the_adapters_micro_batches_give_the_lists_of_one_event_at_a_time(function, trained_bundle):
    """Driven through RecommendFunction itself (its batching rule, timers, the finished states it holds until the
    user's key comes back): the same events, late ones among them, give the lists and the states of serving each
    event alone."""
    import numpy as np

    from operators.state import decode_state

    fn, state, ctx = function
    single = ServingCore.from_config(fn.cfg, bundle_path=str(trained_bundle))
    vocab = fn.core.bundle.item_vocab
    rng = np.random.default_rng(3)
    # every 7th event is ~100 events late (for its user, older than their newest): rebuilt, batched or not
    events = [(f"u{int(u)}", vocab[int(i)], TS + n - (100 if n % 7 == 3 else 0)) for n, (u, i) in
              enumerate(zip(rng.integers(0, 12, 240), rng.integers(0, len(vocab), 240), strict=True))]
    store: dict[str, bytes] = {}
    expected, got = {}, {}
    for n, (user, item, ts) in enumerate(events):
        payload = json.dumps({"user_id": user, "item_id": item, "event_type": "view", "ts": ts,
                              "event_id": f"e{n}"}).encode()
        out = single.process(user, payload, 0, n, None, store.get(user), now_ms=TS + 10**9)
        store[user] = out.state
        expected[f"e{n}"] = json.loads(out.value)
        state.key = user
        for record in fn.process_element((user, payload, 0, n, None), ctx):
            if not isinstance(record, tuple):
                got[json.loads(bytes(record[1]))["event_id"]] = json.loads(bytes(record[1]))
    for user in sorted(fn.batcher.keys | set(fn.batcher.finished)):  # the waits end: timers fire on each waiting key
        state.key = user
        for record in fn._on_timer(TS, ctx):  # noqa: SLF001
            if not isinstance(record, tuple):
                got[json.loads(bytes(record[1]))["event_id"]] = json.loads(bytes(record[1]))
    assert fn.core.counts["batches"] > 30, "events were batched"
    assert fn.core.counts["late_rebuilds"] == single.counts["late_rebuilds"] > 10, "late events among them"
    assert set(got) == set(expected)
    for event_id, doc in expected.items():
        assert [x["item_id"] for x in got[event_id]["items"]] == [x["item_id"] for x in doc["items"]], event_id
        np.testing.assert_allclose([x["score"] for x in got[event_id]["items"]],
                                   [x["score"] for x in doc["items"]], atol=1e-5)
    for user, stored in store.items():
        a, b = decode_state(stored), decode_state(state.values[user])
        assert a.keys.tolist() == b.keys.tolist() and b.pending is None
        np.testing.assert_allclose(a.model, b.model, atol=1e-5)


def test_the_counts_timer_sends_every_count_still_waiting(function):
    """A flush at an event after the counts timer was set (the next event came ``every_ms`` after the last flush)
    must not leave the counts added since then waiting with no timer: when the timer fires, all of them go."""
    fn, state, ctx = function
    vocab = fn.core.bundle.item_vocab
    for n in range(3):
        _drive(fn, state, ctx, f"buyer-{n}", vocab[n], TS + n)
    assert fn._counts_timer and fn.local_counts.items  # noqa: SLF001 - counts waiting, a timer set for them
    fn.local_counts.flushed_at = time.time_ns() // 1_000_000  # as if an event had just flushed the counts
    state.key = "buyer-0"
    sent = [r for r in fn._on_timer(fn._counts_timer, ctx) if isinstance(r, tuple) and r[0] is ACCEPTED_TAG]  # noqa: SLF001
    assert sent and not fn.local_counts.items, "counts left waiting after the timer, with no timer to send them"


def test_the_keyed_function_dead_letters_an_event_whose_state_access_fails(function):
    """The adapter's second line: an exception outside the core (here Flink state that cannot be read) costs
    that one event a dead letter, counted, and the function goes on serving."""
    fn, state, ctx = function
    vocab = fn.core.bundle.item_vocab

    class UnreadableState(FakeState):
        def value(self):  # noqa: ANN201
            raise RuntimeError("state backend says no")

    fn.state = UnreadableState()
    out = _drive(fn, state, ctx, "u1", vocab[0], TS + 7)
    assert len(out) == 1 and out[0][0] is DEAD_LETTER_TAG
    doc = json.loads(bytes(out[0][1][1]))
    assert doc["code"] == "processing_error" and "state backend says no" in doc["reason"]
    assert doc["source"]["offset"] == 7 and fn.core.counts["errors"] == 1
    fn.state = state  # the state reads again: the next event is served
    lists = [r for r in _drive(fn, state, ctx, "u1", vocab[1], TS + 8) if not isinstance(r, tuple)]
    assert len(lists) == 1
