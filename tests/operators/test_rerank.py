"""Re-ranking rules step by step (operators.rerank) and through the serving core with a trained bundle."""

import json

import numpy as np
import pytest
from pydantic import ValidationError

from operators.bundle import load_bundle
from operators.errors import ConfigError
from operators.inference import OnnxModel
from operators.rerank import RerankConfig, Reranker, ShownHistory
from operators.serving import ServingCore

TS = 1_767_225_600_000


def test_shown_history_ages_lists_and_forgets_beyond_the_window():
    h = ShownHistory.empty()
    h = h.push(np.array([1, 2], np.uint32), window=2)
    h = h.push(np.array([2, 3], np.uint32), window=2)
    assert sorted(zip(h.hashes.tolist(), h.ages.tolist(), strict=True)) == [(1, 1), (2, 0), (2, 1), (3, 0)]
    # penalty * decay ** age, summed over the lists an item was shown in (candidate i has hash i)
    r = Reranker(RerankConfig(repeat_window=2, repeat_penalty=2.0, repeat_decay=0.5, explain=False), None, top_k=4)
    out = r.rerank(np.array([1, 2, 3, 9]), np.zeros(4, np.float32), np.array([1, 2, 3, 9], np.uint32), h,
                   np.array([], np.int64))
    assert dict(zip(out.picked.tolist(), out.scores, strict=True)) == {1: -1.0, 2: -3.0, 3: -2.0, 9: 0.0}
    # the list just served is remembered: the kernel's history after it is ShownHistory.push's
    assert out.shown.hashes.tolist() == h.push(np.array([9, 1, 3, 2], np.uint32), 2).hashes.tolist()
    assert out.shown.ages.tolist() == h.push(np.array([9, 1, 3, 2], np.uint32), 2).ages.tolist()
    h = h.push(np.array([4], np.uint32), window=2)  # the list holding 1 is now older than the window
    assert 1 not in h.hashes.tolist() and sorted(h.hashes.tolist()) == [2, 3, 4]
    assert len(ShownHistory.empty().push(np.array([5], np.uint32), window=0)) == 0


def embeddings():
    # items 1 and 2 nearly the same direction, 3 and 4 orthogonal to them, row 0 padding
    e = np.array([[0, 0], [1, 0], [0.99, 0.14], [0, 1], [0.7, 0.7]], dtype=np.float32)
    return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)


def test_without_rules_the_order_is_the_models():
    r = Reranker(RerankConfig(repeat_window=0, explain=False), None, top_k=3)
    out = r.rerank(np.array([1, 2, 3, 4]), np.array([4.0, 3.0, 2.0, 1.0]), np.arange(4, dtype=np.uint32),
                   ShownHistory.empty(), np.array([], np.int64))
    assert out.order.tolist() == [0, 1, 2] and out.scores == [4.0, 3.0, 2.0] and out.because is None


def test_repeat_suppression_demotes_what_was_just_shown():
    r = Reranker(RerankConfig(repeat_penalty=1.5, repeat_decay=0.5, explain=False), None, top_k=2)
    shown = ShownHistory.empty().push(np.array([10], np.uint32), window=5)  # item hash 10 = candidate 1
    out = r.rerank(np.array([1, 2, 3]), np.array([4.0, 3.0, 2.0]), np.array([10, 20, 30], np.uint32), shown,
                   np.array([], np.int64))
    assert out.order.tolist() == [1, 0] and out.scores == [3.0, 2.5]


def test_mmr_pushes_a_near_duplicate_down_and_lambda_zero_does_not():
    items, scores = np.array([1, 2, 3, 4]), np.array([4.0, 3.9, 3.0, 1.0])
    hashes = np.arange(4, dtype=np.uint32)
    plain = Reranker(RerankConfig(repeat_window=0, diversity_lambda=0, explain=False), embeddings(), top_k=2)
    assert items[plain.rerank(items, scores, hashes, ShownHistory.empty(), np.array([3])).order].tolist() == [1, 2]
    diverse = Reranker(RerankConfig(repeat_window=0, explain=False, diversity_lambda=0.5), embeddings(), top_k=2)
    assert items[diverse.rerank(items, scores, hashes, ShownHistory.empty(), np.array([3])).order].tolist() == [1, 3]


def test_each_item_is_explained_by_the_most_similar_recent_item():
    r = Reranker(RerankConfig(repeat_window=0, diversity_lambda=0), embeddings(), top_k=2)
    out = r.rerank(np.array([2, 3]), np.array([2.0, 1.0]), np.arange(2, dtype=np.uint32), ShownHistory.empty(),
                   np.array([3, 1]))
    assert out.because.tolist() == [1, 3]


def test_bad_knobs_fail_with_the_key_and_diversity_needs_embeddings():
    with pytest.raises(ValidationError, match="diversity_lambda"):
        RerankConfig(diversity_lambda=1.5)
    with pytest.raises(ValidationError, match="repeat_windw"):
        RerankConfig(repeat_windw=3)
    with pytest.raises(ConfigError, match="item embeddings"):
        Reranker(RerankConfig(diversity_lambda=0.3), None, top_k=5)
    # the default lambda on a bundle without embeddings: diversity off, not a refusal to serve
    assert Reranker(RerankConfig(), None, top_k=5).cfg.diversity_lambda == 0


@pytest.fixture(scope="module")
def model(trained_bundle):
    return OnnxModel(load_bundle(trained_bundle), providers=["CPUExecutionProvider"])


def serve(core, store, user, item, ts, event_type="view"):
    payload = json.dumps({"user_id": user, "item_id": item, "event_type": event_type, "ts": ts}).encode()
    out = core.process(user, payload, 0, ts, ts, store.get(user), now_ms=TS + 10**9)
    store[user] = out.state
    return json.loads(out.value)


def test_the_same_list_is_not_shown_again_and_again(model):
    """A view, then clicks of the same item (repeats do not move the model): without suppression the user
    sees one list three times; with it, what was shown moves down list after list (scores are z-scores and a
    confident model's best item can lead the next by more than 3: a penalty of 10 demotes whatever was shown)."""
    vocab = model.bundle.item_vocab
    plain = ServingCore(model, top_k=10, history_len=50, input_topic="e",
                        rerank=RerankConfig(repeat_window=0, diversity_lambda=0, neighbor_cold_start=0))
    core = ServingCore(model, top_k=10, history_len=50, input_topic="e",
                       rerank=RerankConfig(repeat_penalty=10.0, diversity_lambda=0, neighbor_cold_start=0))
    lists = {}
    for name, c in (("plain", plain), ("suppressed", core)):
        store: dict = {}
        serve(c, store, "u", vocab[3], TS)
        got = [serve(c, store, "u", vocab[5], TS + n, "click" if n else "view") for n in range(1, 4)]
        lists[name] = [[x["item_id"] for x in doc["items"]] for doc in got]
    assert lists["plain"][0] == lists["plain"][1] == lists["plain"][2]
    first, second = lists["suppressed"][0], lists["suppressed"][1]
    assert first[0] == lists["plain"][0][0]  # the model's best new item leads
    assert second != first and second[0] != first[0]
    assert len(set(second[:5]) & set(first[:5])) < 5


def test_lists_explain_every_item(model):
    vocab = model.bundle.item_vocab
    core = ServingCore(model, top_k=10, history_len=50, input_topic="e")
    store: dict = {}
    cold = serve(core, store, "new", "not-in-catalog", TS)
    assert cold["strategy"] == "popular" and all(x["reason"] == {"cold_start": "popular"} for x in cold["items"])
    strategies = [serve(core, store, "u", vocab[n], TS + n)["strategy"] for n in (1, 2)]
    doc = serve(core, store, "u", vocab[3], TS + 3)
    # one and two known items: item-to-item neighbours; from the third on, the model
    assert strategies == ["neighbors", "neighbors"] and doc["strategy"] == "model"
    assert all(x["reason"]["because"] in {vocab[1], vocab[2], vocab[3]} for x in doc["items"])


def test_the_neighbour_path_ranks_by_co_occurrence_and_hands_over_to_the_model(model):
    neighbors, weights = model.bundle.item_neighbors()
    vocab = model.bundle.item_vocab
    core = ServingCore(model, top_k=10, history_len=50, input_topic="e",
                       rerank=RerankConfig(repeat_window=0, explain=False))
    item = int(np.argmax((weights > 0).sum(axis=1)))  # an item with many neighbours
    doc = serve(core, {}, "u", vocab[item - 1], TS)
    expected = [vocab[j - 1] for j in neighbors[item][weights[item] > 0] if j != item][:10]
    assert doc["strategy"] == "neighbors" and [x["item_id"] for x in doc["items"]] == expected
    off = ServingCore(model, top_k=10, history_len=50, input_topic="e",
                      rerank=RerankConfig(repeat_window=0, explain=False, neighbor_cold_start=0))
    assert serve(off, {}, "u", vocab[item - 1], TS)["strategy"] == "model"


def test_user_ids_on_the_output_are_keyed_pseudonyms(model, monkeypatch):
    from operators.config import JobConfig
    from operators.serving import pseudonym, user_id_key

    cfg = JobConfig(bootstrap_servers="127.0.0.1:9092", bundle_path="b", checkpoint_dir="c", pseudonymize_users=True)
    monkeypatch.delenv("STREAMREC_USER_ID_SECRET", raising=False)
    with pytest.raises(ConfigError, match="STREAMREC_USER_ID_SECRET"):
        user_id_key(cfg)
    monkeypatch.setenv("STREAMREC_USER_ID_SECRET", "s" * 32)
    key = user_id_key(cfg)
    assert "s" * 32 not in repr(cfg.to_dict())  # the secret is never part of the config or its logs
    core = ServingCore(model, top_k=10, history_len=50, input_topic="e", user_id_key=key)
    payload = json.dumps({"user_id": "alice", "item_id": model.bundle.item_vocab[0], "event_type": "view",
                          "ts": TS}).encode()
    out = core.process("alice", payload, 0, 1, TS, None, now_ms=TS + 1)
    doc = json.loads(out.value)
    assert out.key == doc["user_id"] == pseudonym(key, "alice") != "alice" and len(out.key) == 32
    assert pseudonym(key, "alice") != pseudonym(b"another secret!!", "alice")


def test_forget_user_deletes_everything_held_for_the_user(model):
    from operators.offline import MemoryStateStore, OfflineRecord, serve_offline
    from operators.serving import FORGOTTEN

    core = ServingCore(model, top_k=10, history_len=50, input_topic="e")
    vocab = model.bundle.item_vocab
    events = [{"user_id": "u", "item_id": vocab[n], "event_type": "view", "ts": TS + n} for n in range(3)]
    events.append({"user_id": "u", "event_type": "forget_user", "ts": TS + 3})  # no item_id needed
    events.append({"user_id": "u", "item_id": vocab[9], "event_type": "view", "ts": TS + 4})
    store = MemoryStateStore()
    records = [OfflineRecord("u", json.dumps(e).encode(), n) for n, e in enumerate(events)]
    outs = [out for _, out, _ in serve_offline(core, records, store, now_ms=TS + 10**6)]
    assert outs[3].kind == FORGOTTEN and outs[3].state == b"" and outs[3].value == b""
    after = json.loads(outs[4].value)
    assert after["history_len"] == 1  # the user starts over: nothing of the first three events is left
    assert core.counts["forgotten"] == 1
    # an item-less event of any other type is still a dead letter
    bad = core.process("u", json.dumps({"user_id": "u", "event_type": "view", "ts": TS}).encode(), 0, 9, TS, None,
                       now_ms=TS + 1)
    assert json.loads(bad.value)["code"] == "missing_field"


def test_knobs_layer_file_then_environment_then_command_line(tmp_path):
    from operators.abuse import AbuseConfig
    from operators.settings import layered_knobs, load_config_file

    path = tmp_path / "streamrec.toml"
    path.write_text("[rerank]\nrepeat_penalty = 0.7\ndiversity_lambda = 0.2\n\n[abuse]\nmax_identical_run = 9\n")
    doc = load_config_file(str(path))
    env = {"STREAMREC_RERANK_DIVERSITY_LAMBDA": "0.4", "STREAMREC_RERANK_EXPLAIN": "false"}
    cfg = layered_knobs(RerankConfig, "rerank", doc, env, ["diversity_lambda=0.5"])
    assert (cfg.repeat_penalty, cfg.diversity_lambda, cfg.explain) == (0.7, 0.5, False)
    assert layered_knobs(RerankConfig, "rerank", doc, env, []).diversity_lambda == 0.4
    assert layered_knobs(AbuseConfig, "abuse", doc, {}, []).max_identical_run == 9
    with pytest.raises(ConfigError, match=r"rerank.repeat_decay='2'"):
        layered_knobs(RerankConfig, "rerank", {}, {"STREAMREC_RERANK_REPEAT_DECAY": "2"}, [])
    with pytest.raises(ConfigError, match="expects KEY=VALUE"):
        layered_knobs(RerankConfig, "rerank", {}, {}, ["diversity_lambda"])
    path.write_text("[rerankk]\nx = 1\n")
    with pytest.raises(ConfigError, match="sections must be tables among"):
        load_config_file(str(path))
