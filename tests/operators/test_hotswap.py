"""Model hot-swap and shadow bookkeeping with a really trained bundle: verification refuses tampered, renamed
and unreadable bundles with the reason; a verified core adopts the control state of the one it replaces;
users' model state is rebuilt after a swap; live quantiles and agreement."""

import json
import shutil
import time

import pytest

from operators.bundle import load_bundle
from operators.hotswap import CONTROL_MODEL, ModelLoader, manifest_sha256, model_message, parse_model_message
from operators.inference import OnnxModel
from operators.item_rules import CONTROL_ITEM_RULES
from operators.live_metrics import Agreement, RecentValues
from operators.serving import LIST, ServingCore

TS = 1_767_225_600_000


def build(path):
    return ServingCore(OnnxModel(load_bundle(path), providers=["CPUExecutionProvider"]), top_k=10, history_len=50,
                       input_topic="events")


def finish(loader, timeout_s=60.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done = loader.poll()
        if done:
            return done
        time.sleep(0.05)
    raise AssertionError("the loader did not finish")


@pytest.fixture
def loader():
    return ModelLoader(build=build, smoke=lambda core: core.smoke())


def test_a_published_bundle_is_verified_off_the_calling_thread_and_reported(trained_bundle, loader):
    message = model_message(trained_bundle, now_ms=TS)
    assert message["sha256"] == manifest_sha256(trained_bundle) and message["type"] == CONTROL_MODEL
    loader.request(CONTROL_MODEL, message, None)
    assert loader.busy
    [result] = finish(loader)
    assert result.ok and result.version == load_bundle(trained_bundle).version and result.core is not None
    doc = result.message(subtask=1, now_ms=TS + 5)
    assert doc["type"] == "model_result" and doc["ok"] and doc["subtask"] == 1 and doc["published_ms"] == TS
    assert not loader.busy and loader.poll() == []


def test_tampered_renamed_and_missing_bundles_are_refused_with_the_reason(trained_bundle, tmp_path, loader):
    message = model_message(trained_bundle)
    # a file changed after publishing: the manifest still matches, its per-file checksum does not
    tampered = tmp_path / "tampered"
    shutil.copytree(trained_bundle, tampered)
    onnx = tampered / "model.onnx"
    data = bytearray(onnx.read_bytes())
    data[len(data) // 2] ^= 0xFF
    onnx.write_bytes(bytes(data))
    loader.request(CONTROL_MODEL, {**message, "uri": str(tampered)}, None)
    [result] = finish(loader)
    assert not result.ok and "sha256 of model.onnx" in result.reason and result.core is None
    # the manifest itself changed: the message's checksum no longer matches
    edited = tmp_path / "edited"
    shutil.copytree(trained_bundle, edited)
    manifest = json.loads((edited / "manifest.json").read_text())
    manifest["version"] = "v-other"
    (edited / "manifest.json").write_text(json.dumps(manifest))
    loader.request(CONTROL_MODEL, {**message, "uri": edited.as_uri()}, None)
    [result] = finish(loader)
    assert not result.ok and result.reason.startswith("checksum mismatch")
    # the right bytes under another version name, a missing directory, a remote URI nobody fetched, no checksum
    for bad, reason in (({**message, "version": "v-renamed"}, "the manifest says version"),
                        ({**message, "uri": str(tmp_path / "nowhere")}, "cannot read the bundle's manifest"),
                        ({**message, "uri": "s3://bucket/bundle"}, "no filesystem for its scheme"),
                        ({**message, "sha256": "abc"}, "not 64 hex digits")):
        loader.request(CONTROL_MODEL, bad, None)
        [result] = finish(loader)
        assert not result.ok and reason in result.reason, (reason, result.reason)
    with pytest.raises(ValueError, match="without version, uri"):
        parse_model_message({"type": CONTROL_MODEL, "sha256": message["sha256"]})


def test_a_swapped_core_adopts_rules_and_counts_and_users_state_is_rebuilt(trained_bundle, loader):
    old = build(trained_bundle)
    vocab = old.bundle.item_vocab
    store = {}
    for n, item in enumerate(vocab[:4]):
        out = old.process("u1", json.dumps({"user_id": "u1", "item_id": item, "event_type": "view",
                                            "ts": TS + n}).encode(), 0, n, TS + n, store.get("u1"), TS + 10**6)
        store["u1"] = out.state
    old.control({"type": CONTROL_ITEM_RULES, "blocked": [vocab[10]], "unavailable": [], "allowed": None})
    loader.request(CONTROL_MODEL, model_message(trained_bundle), None)
    [result] = finish(loader)
    new = result.core
    new.tag = old.tag + 1  # as a retrained bundle would have: the users' model state must be rebuilt
    new.adopt(old)
    assert new.counts is old.counts and new.control_log[CONTROL_ITEM_RULES]["blocked"] == [vocab[10]]
    rebuilds = new.counts["rebuilds"]
    out = new.process("u1", json.dumps({"user_id": "u1", "item_id": vocab[5], "event_type": "view",
                                        "ts": TS + 9}).encode(), 0, 9, TS + 9, store["u1"], TS + 10**6)
    doc = json.loads(out.value)
    assert out.kind == LIST and doc["history_len"] == 5 and new.counts["rebuilds"] == rebuilds + 1
    assert vocab[10] not in [i["item_id"] for i in doc["items"]]


def test_recent_values_quantiles_and_agreement():
    values = RecentValues(size=100)
    assert values.quantile(0.5) == 0.0
    for v in range(1, 201):  # the ring keeps the last 100: 101..200
        values.add(float(v))
    assert values.quantile(0.0) == 101.0 and values.quantile(1.0) == 200.0
    agree = Agreement(k=2, max_users=2)
    assert agree.lists("a", ["x", "y"], ["y", "z"]) == 0.5
    agree.observe("a", "z")  # the next event hits the shadow's list only
    assert agree.judged == 1 and agree.serving_hit_rate == 0.0 and agree.shadow_hit_rate == 1.0
    agree.lists("b", ["x"], ["x"])
    agree.lists("c", ["x"], ["q"])
    assert "a" not in agree.last and agree.overlap == pytest.approx((0.5 + 0.5 + 0.0) / 3)


def test_an_event_deferred_under_one_model_and_batched_under_another_is_rebuilt(trained_bundle):
    """A swap between defer and run (micro-batching): the new model must not step the old model's state."""
    old = build(trained_bundle)
    new = build(trained_bundle)
    new.tag, new.version = old.tag + 1, "retrained"  # as a retrained bundle of the same shape would have
    vocab = old.bundle.item_vocab
    store = None
    for n, item in enumerate(vocab[:4]):
        store = old.process("u1", json.dumps({"user_id": "u1", "item_id": item, "event_type": "view",
                                              "ts": TS + n}).encode(), 0, n, TS + n, store, TS + 10**6).state
    event = json.dumps({"user_id": "u1", "item_id": vocab[7], "event_type": "view", "ts": TS + 9}).encode()
    deferred = old.process("u1", event, 0, 9, TS + 9, store, TS + 10**6, defer=True)
    steps, rebuilds = new.counts["steps"], new.counts["rebuilds"]
    [batched] = new.run_deferred([deferred], TS + 10**6)
    assert new.counts["rebuilds"] == rebuilds + 1 and new.counts["steps"] == steps
    alone = new.process("u1", event, 0, 9, TS + 9, store, TS + 10**6)
    got, want = json.loads(batched.value), json.loads(alone.value)
    assert got["model_version"] == "retrained"
    assert [i["item_id"] for i in got["items"]] == [i["item_id"] for i in want["items"]]
