"""The abuse filter (operators.abuse) step by step, and through the serving core: quarantined events are not
stored, get no list and carry the reason."""

import json

import numpy as np
import pytest

from operators.abuse import AbuseConfig, abuse_reason
from operators.bundle import load_bundle
from operators.config import JobConfig
from operators.errors import ConfigError
from operators.inference import OnnxModel
from operators.serving import LIST, QUARANTINE, ServingCore

TS = 1_767_225_600_000


def window(n, *, step_ms, same=False):
    keys = np.full(n, 7, np.uint64) if same else np.arange(n, dtype=np.uint64)
    return keys, TS + np.arange(n, dtype=np.int64) * step_ms, np.zeros(n, np.uint8)


def test_rate_and_identical_runs_are_flagged_and_normal_use_is_not():
    cfg = AbuseConfig(max_events_per_minute=20, max_identical_run=5)
    assert abuse_reason(*window(20, step_ms=100), cfg) is None  # 20 in 2 s: at the limit
    assert "21 events within a minute" in abuse_reason(*window(21, step_ms=100), cfg)
    assert abuse_reason(*window(100, step_ms=10_000), cfg) is None  # 100 events over 16 minutes
    assert "5 times in a row" in abuse_reason(*window(5, step_ms=60_000, same=True), cfg)
    assert abuse_reason(*window(4, step_ms=60_000, same=True), cfg) is None
    assert abuse_reason(*window(500, step_ms=1), AbuseConfig(enabled=False)) is None


def test_the_rate_limit_must_fit_the_window():
    with pytest.raises(ConfigError, match="below history_len"):
        JobConfig(bootstrap_servers="127.0.0.1:9092", bundle_path="b", checkpoint_dir="c", history_len=100,
                  abuse=AbuseConfig(max_events_per_minute=150))


def test_a_burst_is_quarantined_and_leaves_the_users_state_alone(trained_bundle):
    model = OnnxModel(load_bundle(trained_bundle), providers=["CPUExecutionProvider"])
    vocab = model.bundle.item_vocab
    core = ServingCore(model, top_k=10, history_len=50, input_topic="e",
                       abuse=AbuseConfig(max_events_per_minute=10, max_identical_run=50))
    stored = None
    kinds = []
    for n in range(14):  # 14 events within 1.4 s
        payload = json.dumps({"user_id": "bot", "item_id": vocab[n], "event_type": "view", "ts": TS + n * 100})
        out = core.process("bot", payload.encode(), 0, n, TS, stored, now_ms=TS + 10**6)
        kinds.append(out.kind)
        if out.kind == QUARANTINE:
            doc = json.loads(out.value)
            assert doc["code"] == "quarantined" and "within a minute" in doc["reason"]
            assert doc["source"]["offset"] == n and out.state is None  # not stored
        else:
            stored = out.state
    assert kinds == [LIST] * 10 + [QUARANTINE] * 4 and core.counts["quarantined"] == 4
    # a minute later the user is served again, from the state the burst never touched
    payload = json.dumps({"user_id": "bot", "item_id": vocab[20], "event_type": "view", "ts": TS + 120_000})
    out = core.process("bot", payload.encode(), 0, 99, TS, stored, now_ms=TS + 10**6)
    assert out.kind == LIST and json.loads(out.value)["history_len"] == 11
