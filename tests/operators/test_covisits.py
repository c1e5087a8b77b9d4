"""In-stream refresh of the item-to-item neighbours (operators.covisits), step by step and through the core."""

import json

import numpy as np
import pytest

from operators.bundle import load_bundle
from operators.covisits import StreamNeighbors
from operators.inference import OnnxModel
from operators.rerank import RerankConfig
from operators.serving import ServingCore

TS = 1_767_225_600_000
HOUR = 3_600_000


def test_pairs_with_the_previous_items_both_ways_decayed_in_event_time():
    s = StreamNeighbors(half_life_minutes=60, window=2)
    s.observe([0, 5, 7], 9, TS)  # 9 pairs with 7 and 5 (0: not in the catalog)
    assert s.row(9, TS) == {7: 1.0, 5: 1.0} and s.row(5, TS) == {9: 1.0}
    s.observe([3, 5, 7, 9, 7], 7, TS)  # the event's own item is skipped; 3 is beyond the window of two
    assert s.row(7, TS) == {9: 2.0, 5: 1.0} and 3 not in s.rows
    assert s.row(9, TS + HOUR) == {7: 1.0, 5: 0.5}  # one half-life later
    s.observe([9, 5], 5, TS + HOUR)
    assert s.row(9, TS + HOUR)[5] == pytest.approx(1.5)  # decayed to 0.5, plus 1


def test_bounded_rows_and_items():
    s = StreamNeighbors(half_life_minutes=60, window=1, per_item=2, max_items=3)
    for other in (2, 2, 3):
        s.observe([other, 1], 1, TS)
    s.observe([4, 1], 1, TS)  # row 1 full (2: 2.0, 3: 1.0): the new pair does not beat the weakest
    assert set(s.row(1, TS)) == {2, 3}
    s.observe([1, 4], 4, TS + 10 * HOUR)  # ten half-lives later every old pair is weaker than a new one
    assert 4 in s.row(1, TS + 10 * HOUR) and len(s.row(1, TS + 10 * HOUR)) == 2
    for item in range(10, 20):
        s.observe([item - 1, item], item, TS + 11 * HOUR)
    assert len(s) == 3  # the least recently updated items left


def test_blend_scales_the_stream_row_to_the_offline_row():
    s = StreamNeighbors(half_life_minutes=60)
    for _ in range(4):
        s.observe([3], 1, TS)
    s.observe([8], 1, TS)
    out = s.blend(1, [(2, 10.0), (3, 5.0)], TS, weight=0.5)
    # in-stream 3: 4 (the row's strongest -> 0.5 * 10), 8: 1 -> 1.25
    assert out == {2: 10.0, 3: 5.0 + 5.0, 8: 1.25}
    assert StreamNeighbors(half_life_minutes=60).blend(1, [(2, 1.0)], TS, 0.5) == {2: 1.0}
    # counts decayed to nothing (a user back after years: 0.5 ** 10,000 underflows) add nothing
    assert s.blend(1, [(2, 10.0)], TS + 10_000 * HOUR, weight=0.5) == {2: 10.0}


@pytest.fixture(scope="module")
def model(trained_bundle):
    return OnnxModel(load_bundle(trained_bundle), providers=["CPUExecutionProvider"])


def serve(core, store, user, item, ts):
    payload = json.dumps({"user_id": user, "item_id": item, "event_type": "click", "ts": ts}).encode()
    out = core.process(user, payload, 0, ts, ts, store.get(user), now_ms=TS + 10**9)
    store[user] = out.state
    return json.loads(out.value)


def test_what_users_do_now_reaches_a_new_users_neighbour_list(model):
    """Many users go from item a to item b, which is not among a's offline neighbours: a new user whose one
    item is a gets b in their cold-start list (and not without the refresh)."""
    neighbors, weights = model.bundle.item_neighbors()
    vocab = model.bundle.item_vocab
    a = int(np.argmax((weights > 0).sum(axis=1)))
    offline = set(neighbors[a][weights[a] > 0].tolist())
    b = next(j for j in range(len(vocab), 0, -1) if j not in offline and j != a)
    lists = {}
    for refresh, share in ((True, 0.5), (True, 2.0), (False, 0.5)):
        core = ServingCore(model, top_k=10, history_len=50, input_topic="e",
                           rerank=RerankConfig(repeat_window=0, explain=False, neighbor_refresh=refresh,
                                               neighbor_stream_weight=share))
        store: dict = {}
        for u in range(30):
            serve(core, store, f"u{u}", vocab[a - 1], TS + u * 1000)
            serve(core, store, f"u{u}", vocab[b - 1], TS + u * 1000 + 500)
        doc = serve(core, store, "new", vocab[a - 1], TS + 60_000)
        assert doc["strategy"] == "neighbors"
        lists[refresh, share] = [x["item_id"] for x in doc["items"]]
    assert vocab[b - 1] in lists[True, 0.5]  # half the offline best: among them
    assert lists[True, 2.0][0] == vocab[b - 1]  # twice the offline best: first
    assert vocab[b - 1] not in lists[False, 0.5]


def test_weakest_by_order_key_equals_weakest_by_decayed_weight():
    """The in-order fast path (order keys) evicts exactly what the decayed weights say (the slow path)."""
    import numpy as np

    rng = np.random.default_rng(3)
    fast = StreamNeighbors(half_life_minutes=1.0, per_item=4, max_items=50)
    slow = StreamNeighbors(half_life_minutes=1.0, per_item=4, max_items=50)
    ts = TS
    for _ in range(3000):
        ts += int(rng.integers(0, 20_000))
        window = rng.integers(1, 30, size=4).tolist()
        fast.observe(window, window[-1], ts)
        slow._newest = 2**62  # every event looks late: the weakest is found from the decayed weights
        slow.observe(window, window[-1], ts)
    assert fast.rows.keys() == slow.rows.keys()
    for source in fast.rows:
        assert fast.row(source, ts) == slow.row(source, ts)
