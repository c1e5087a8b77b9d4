"""User interests by category (operators.interests, operators.catalog) step by step, event time injected, and
through the serving core with a trained bundle: drift, negative ratings, purchases, viewed items, the cap."""

import json

import numpy as np
import pytest
from pydantic import ValidationError

from operators.bundle import load_bundle
from operators.catalog import CategoryMatrix, load_catalog
from operators.errors import ConfigError
from operators.inference import OnnxModel
from operators.interests import NEGATIVE, InterestConfig, Interests, type_code
from operators.rerank import RerankConfig, Reranker, ShownHistory
from operators.serving import LIST, ServingCore
from operators.state import decode_state

TS = 1_767_225_600_000
MIN = 60_000
VOCAB = ["a1", "a2", "b1", "b2", "ab"]
CATALOG = {"a1": frozenset({"A"}), "a2": frozenset({"A"}), "b1": frozenset({"B"}), "b2": frozenset({"B"}),
           "ab": frozenset({"A", "B"})}


def interests(**knobs) -> Interests:
    return Interests(InterestConfig(**knobs), CategoryMatrix.build(CATALOG, VOCAB))


def test_catalog_reads_movielens_and_generic_csv(tmp_path):
    (tmp_path / "movies.csv").write_text('movieId,title,genres\n1,"Toy Story (1995)",Animation|Comedy\n'
                                         "2,Nothing,(no genres listed)\n")
    assert load_catalog(tmp_path) == {"1": frozenset({"Animation", "Comedy"}), "2": frozenset()}
    (tmp_path / "c.csv").write_text("item_id,categories\ni1,c3\n")
    assert load_catalog(tmp_path / "c.csv") == {"i1": frozenset({"c3"})}
    (tmp_path / "bad.csv").write_text("id,kind\n1,x\n")
    with pytest.raises(ConfigError, match="expected the columns movieId,genres"):
        load_catalog(tmp_path / "bad.csv")
    m = CategoryMatrix.build(CATALOG, VOCAB)
    assert m.names == ("A", "B") and m.rows[5].tolist() == [0.5, 0.5] and m.rows[0].tolist() == [0, 0]


def test_weights_follow_the_funnel_and_bad_ones_fail_with_the_fix():
    with pytest.raises(ValidationError, match="weight_click=3.0 is above weight_add_to_cart=2.0"):
        InterestConfig(weight_click=3.0)
    cfg = InterestConfig()
    assert type_code("rating", 1.0, cfg) == 4 | NEGATIVE and type_code("rating", 4.5, cfg) == 4
    assert type_code("rating", None, cfg) == 4 and type_code("view", None, cfg) == 0
    assert type_code("rating", 1.0, InterestConfig(negative_rating_below=None)) == 4
    w = Interests.event_weights(cfg)
    assert w[0] < w[1] < w[2] < w[3] and w[4 | NEGATIVE] == -w[4]


def test_long_term_affinity_decays_with_event_time_and_remembers():
    it = interests(long_term_half_life_days=1)
    aff = it.update_long(None, 0, TS, 1, 3, TS)  # a purchase of a1 (category A)
    assert aff.tolist() == [4.0, 0.0]
    day = 86_400_000
    aff = it.update_long(aff, TS, TS + day, 3, 0, TS + day)  # a day later, a view of b1: A halves
    np.testing.assert_allclose(aff, [2.0, 0.5])
    late = it.update_long(aff, TS + day, TS + day, 4, 0, TS)  # a late view (a day old) counts half
    np.testing.assert_allclose(late, [2.0, 0.75])
    negative = it.update_long(aff, TS + day, TS + day, 1, 4 | NEGATIVE, TS + day)  # a bad rating of a1
    np.testing.assert_allclose(negative, [0.0, 0.5])


def test_short_term_profile_follows_a_switch_of_category_within_a_few_events():
    it = interests(short_term_minutes=30)
    idx, ts, types = [], [], []
    for n in range(10):  # ten views of A, a minute apart
        idx.append(1 + n % 2)
        ts.append(TS + n * MIN)
        types.append(0)
    for n in range(3):  # the user switches to B: clicks
        idx.append(3 + n % 2)
        ts.append(TS + (10 + n) * MIN)
        types.append(1)
        pref = it.preference_vector(np.array(idx), np.array(ts), np.array(types, np.uint8), ts[-1], None)
        if n == 0:
            assert it.top_category(pref) == "A"
    assert it.top_category(pref) == "B"  # within two events
    # 40 minutes later the A views have left the short-term profile altogether: only B is left
    later = it.preference_vector(np.array(idx), np.array(ts), np.array(types, np.uint8), ts[-1] + 28 * MIN, None)
    np.testing.assert_allclose(later, [0.0, 0.5])
    assert it.preference_vector(np.array(idx), np.array(ts), np.array(types, np.uint8), ts[-1] + 60 * MIN,
                                None) is None
    r = Reranker(RerankConfig(repeat_window=0, explain=False), None, top_k=3, categories=it.rows)
    out = r.rerank(np.array([1, 3, 5]), np.zeros(3, np.float32), np.arange(3, dtype=np.uint32),
                   ShownHistory.empty(), np.array([], np.int64), preference=later)
    # a pure B item gets short_term_boost, A|B half
    assert out.picked.tolist() == [3, 5, 1] and out.scores == [0.5, 0.25, 0.0]
    # the long-term affinity adds its own boost, scaled to its mass
    both = it.preference_vector(np.array(idx), np.array(ts), np.array(types, np.uint8), ts[-1] + 28 * MIN,
                                np.array([3.0, 1.0], np.float32))
    np.testing.assert_allclose(both, [0.25 * 0.75, 0.5 + 0.25 * 0.25], rtol=1e-6)


def test_category_cap_and_bonus_in_the_reranker():
    m = CategoryMatrix.build(CATALOG, VOCAB)
    r = Reranker(RerankConfig(repeat_window=0, explain=False, category_cap=1), None, top_k=3, categories=m.rows)
    items, scores = np.array([1, 2, 5, 3, 4]), np.array([5.0, 4.0, 3.0, 2.0, 1.0])
    out = r.rerank(items, scores, np.arange(5, dtype=np.uint32), ShownHistory.empty(), np.array([], np.int64))
    # a1 (A), then a2 and ab are capped (A full), b1 (B); nothing else fits: the best skipped fills the list
    assert items[out.order].tolist() == [1, 3, 2]
    plain = Reranker(RerankConfig(repeat_window=0, explain=False), None, top_k=2)
    trend = np.array([0, 0, 0, 3.5, 0, 0], np.float32)  # by catalog index: b1 (3) trends
    out = plain.rerank(items, scores, np.arange(5, dtype=np.uint32), ShownHistory.empty(), np.array([], np.int64),
                       trend=trend)
    assert items[out.order].tolist() == [3, 1] and out.scores == [5.5, 5.0]


# ---------------------------------------------------------------- through the serving core


@pytest.fixture(scope="module")
def model(trained_bundle):
    return OnnxModel(load_bundle(trained_bundle), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def world_catalog(model):
    from deploy.harness.generator import item_categories
    from tests.conftest import WORLD

    return {i: frozenset({c}) for i, c in item_categories(WORLD).items()}


def event(user, item, ts, event_type="view", **extra):
    return json.dumps({"user_id": user, "item_id": item, "event_type": event_type, "ts": ts, **extra}).encode()


def run(core, events, store=None):
    store = {} if store is None else store
    outs = []
    for n, (user, item, kind, ts, *value) in enumerate(events):
        extra = {"value": value[0]} if value else {}
        out = core.process(user, event(user, item, ts, kind, **extra), 0, n, ts, store.get(user), now_ms=TS + 10**9)
        if out.state is not None:
            store[user] = out.state
        outs.append(out)
    return outs, store


def items_of(out):
    assert out.kind == LIST
    return [i["item_id"] for i in json.loads(out.value)["items"]]


def test_lists_follow_the_users_switch_of_category(model, world_catalog):
    vocab = model.bundle.item_vocab
    by_cat: dict[str, list[str]] = {}
    for item in vocab:
        by_cat.setdefault(next(iter(world_catalog[item])), []).append(item)
    a, b = sorted(by_cat, key=lambda c: -len(by_cat[c]))[:2]
    plain = RerankConfig(repeat_window=0, neighbor_cold_start=0, explain=False)
    strong = InterestConfig(short_term_boost=3.0, long_term_boost=0.5)
    core = ServingCore(model, top_k=10, history_len=50, input_topic="e", rerank=plain, catalog=world_catalog,
                       interests=strong)
    off = ServingCore(model, top_k=10, history_len=50, input_topic="e", rerank=plain)
    history = [("u", item, "click", TS + n * MIN) for n, item in enumerate(by_cat[a][:8])]
    switch = [("u", item, "click", TS + (8 + n) * MIN) for n, item in enumerate(by_cat[b][:4])]

    def share(out, cat):
        return sum(next(iter(world_catalog[i])) == cat for i in items_of(out)) / 10

    outs, store = run(core, history + switch)
    base, _ = run(off, history + switch)
    assert share(outs[7], a) >= share(base[7], a) and share(outs[7], a) >= 0.5  # the interest shows
    # after the switch the lists move to B within a few events, and further than the model alone moves them
    assert share(outs[-1], b) >= 0.5 and share(outs[-1], b) > share(outs[7], b)
    assert share(outs[-1], b) >= share(base[-1], b)
    state = decode_state(store["u"])
    assert state.affinity is not None and state.affinity.size == len({c for s in world_catalog.values() for c in s})


def test_purchased_items_never_come_back_and_viewed_items_may(model):
    vocab = model.bundle.item_vocab
    cfg = RerankConfig(repeat_window=0, neighbor_cold_start=0, explain=False)
    core = ServingCore(model, top_k=10, history_len=3, input_topic="e", rerank=cfg)
    # the user buys an item, then 5 more events push it out of the 3-event window
    events = [("p", vocab[0], "purchase", TS)] + [("p", vocab[n], "view", TS + n * MIN) for n in range(1, 6)]
    outs, store = run(core, events)
    assert vocab[0] not in decode_state(store["p"]).keys.tolist()  # left the window
    assert all(vocab[0] not in items_of(o) for o in outs)
    assert decode_state(store["p"]).purchased.size == 1
    forgetful = ServingCore(model, top_k=10, history_len=3, input_topic="e",
                            rerank=cfg.model_copy(update={"never_repeat_purchased": False}))
    outs2, store2 = run(forgetful, events)
    assert decode_state(store2["p"]).purchased is None
    # viewed-only items: excluded by default; with viewed_penalty they are candidates, demoted by the penalty
    views = [("v", vocab[n], "view", TS + n * MIN) for n in range(6)] + [("v", vocab[0], "click", TS + 7 * MIN)]
    strict, _s = run(ServingCore(model, top_k=20, history_len=50, input_topic="e", rerank=cfg), views)
    shown = set(vocab[1:6])
    assert not shown & set(items_of(strict[-1]))
    lenient = cfg.model_copy(update={"viewed_penalty": 0.0})
    loose, _l = run(ServingCore(model, top_k=100, history_len=50, input_topic="e", rerank=lenient), views)
    got = items_of(loose[-1])
    assert shown & set(got) and vocab[0] not in got  # clicked: not viewed-only, excluded
    heavy = cfg.model_copy(update={"viewed_penalty": 1000.0})
    demoted, _h = run(ServingCore(model, top_k=100, history_len=50, input_topic="e", rerank=heavy), views)
    got = items_of(demoted[-1])
    assert all(got.index(i) >= len(got) - len(shown) for i in shown if i in got)  # at the very end


def test_a_bad_rating_turns_the_category_down(model, world_catalog):
    vocab = model.bundle.item_vocab
    cfg = RerankConfig(repeat_window=0, neighbor_cold_start=0, explain=False)
    core = ServingCore(model, top_k=10, history_len=50, input_topic="e", rerank=cfg, catalog=world_catalog)
    cat = next(iter(world_catalog[vocab[0]]))
    good, store_good = run(core, [("g", vocab[0], "rating", TS, 5.0)])
    bad, store_bad = run(core, [("b", vocab[0], "rating", TS, 1.0)])
    names = core.categories.names
    good_aff, bad_aff = decode_state(store_good["g"]).affinity, decode_state(store_bad["b"]).affinity
    assert good_aff[names.index(cat)] > 0 > bad_aff[names.index(cat)]
    assert decode_state(store_bad["b"]).types.tolist() == [4 | NEGATIVE]
