"""Runtime item rules (operators.item_rules): re-read on change, bad files keep the old rules, and the serving
core never recommends a blocked, unavailable or not-allowed item."""

import json
import os

import pytest

from operators.bundle import load_bundle
from operators.errors import ConfigError
from operators.inference import OnnxModel
from operators.item_rules import ItemRulesWatcher, load_item_rules
from operators.rerank import RerankConfig
from operators.serving import ServingCore

TS = 1_767_225_600_000


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def write(path, doc, mtime_ns):
    path.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    os.utime(path, ns=(mtime_ns, mtime_ns))


def test_rules_are_reread_when_the_file_changes_and_a_bad_file_keeps_the_old_ones(tmp_path):
    path, clock = tmp_path / "rules.json", Clock()
    watcher = ItemRulesWatcher(path, ["a", "b", "c"], check_every_s=1.0, clock=clock)
    assert watcher.mask is None  # no file: everything allowed
    write(path, {"blocked": ["b"], "unavailable": ["c"]}, 10**18)
    assert not watcher.refresh()  # checked at most once a second
    clock.t = 1.5
    assert watcher.refresh() and watcher.mask.tolist() == [False, True, False, False]
    write(path, "{not json", 2 * 10**18)
    clock.t = 3.0
    assert not watcher.refresh() and watcher.errors == 1
    assert watcher.mask.tolist() == [False, True, False, False]  # still the last good rules
    write(path, {"allowed": ["c"]}, 3 * 10**18)
    clock.t = 4.5
    assert watcher.refresh() and watcher.mask.tolist() == [False, False, False, True]
    path.unlink()
    clock.t = 6.0
    assert watcher.refresh() and watcher.mask is None


def test_a_malformed_rules_file_names_the_problem(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"blocked": "i1"}))
    with pytest.raises(ConfigError, match="'blocked' must be a list"):
        load_item_rules(path)
    path.write_text(json.dumps({"blockd": []}))
    with pytest.raises(ConfigError, match="expected an object"):
        load_item_rules(path)


def test_blocked_items_never_reach_a_list(trained_bundle, tmp_path):
    model = OnnxModel(load_bundle(trained_bundle), providers=["CPUExecutionProvider"])
    vocab = model.bundle.item_vocab
    plain = RerankConfig(repeat_window=0, explain=False)
    free = ServingCore(model, top_k=10, history_len=50, input_topic="e", rerank=plain)
    path = tmp_path / "rules.json"

    def lists(core):
        out = []
        for user, item in (("u", vocab[1]), ("u", vocab[2]), ("new", "unknown-item")):
            payload = json.dumps({"user_id": user, "item_id": item, "event_type": "view", "ts": TS}).encode()
            state = None if user == "new" or not out else out[-1][1]
            res = core.process(user, payload, 0, 0, TS, state, now_ms=TS + 1)
            out.append(([x["item_id"] for x in json.loads(res.value)["items"]], res.state))
        return [items for items, _ in out]

    before = lists(free)
    banned = {before[1][0], before[2][0], before[2][1]}  # a model pick and two popular picks
    path.write_text(json.dumps({"blocked": sorted(banned)}))
    ruled = ServingCore(model, top_k=10, history_len=50, input_topic="e", rerank=plain, item_rules=str(path))
    after = lists(ruled)
    for items in after:
        assert not banned & set(items) and len(items) == 10
    assert after[1][:1] == before[1][1:2]  # the rest keeps its order
