"""In-stream popularity (operators.trending) step by step in event time, and through the serving core: the
trending cold start, the boost, reasons, and abusers moving no counts."""

import json

import numpy as np
import pytest

from operators.abuse import AbuseConfig
from operators.bundle import load_bundle
from operators.inference import OnnxModel
from operators.item_rules import CONTROL_ITEM_RULES
from operators.rerank import RerankConfig
from operators.serving import LIST, QUARANTINE, ServingCore
from operators.trending import ItemCount, TrendingBoard, TrendingConfig, TrendingTable, bump

TS = 1_767_225_600_000
MIN = 60_000


def test_counts_decay_with_event_time_and_late_events_do_not_move_them_back():
    hl = 10 * MIN
    c = bump(None, TS, 1.0, hl)
    c = bump(c, TS + 10 * MIN, 1.0, hl)  # the first one has halved
    assert c.count == pytest.approx(1.5) and c.ts == TS + 10 * MIN and c.first_seen == TS
    late = bump(c, TS, 2.0, hl)  # two units, ten minutes old: one
    assert late.count == pytest.approx(2.5) and late.ts == c.ts
    assert ItemCount.unpack(late.pack()) == late and ItemCount.unpack(b"junk") is None
    assert late.at(TS + 30 * MIN, hl) == pytest.approx(2.5 / 4)


def test_local_counts_combine_events_exactly_and_flush_on_time():
    from operators.trending import LocalCounts

    cfg = TrendingConfig(half_life_minutes=10)
    hl = 10 * MIN
    local = LocalCounts(cfg, every_ms=200)
    assert local.add("a", TS, 1.0, now_ms=1_000) == [(("a", TS, 1.0))]  # the first flush is due at once
    assert local.add("a", TS + 5 * MIN, 2.0, now_ms=1_050) == []
    assert local.add("b", TS + 6 * MIN, 1.0, now_ms=1_100) == []
    out = dict((i, (t, c)) for i, t, c in local.add("a", TS + 10 * MIN, 1.0, now_ms=1_300))
    single = bump(bump(bump(None, TS, 1.0, hl), TS + 5 * MIN, 2.0, hl), TS + 10 * MIN, 1.0, hl)
    combined = bump(bump(None, TS, 1.0, hl), out["a"][0], out["a"][1], hl)
    assert combined.count == pytest.approx(single.count) and combined.ts == single.ts
    assert out["b"] == (TS + 6 * MIN, 1.0) and local.items == {}
    # events stop: the timer's check sends what waits once every_ms have passed, and nothing twice
    assert local.add("c", TS, 1.0, now_ms=1_400) == []
    assert local.due(1_450) == [] and local.due(1_500) == [("c", TS, 1.0)] and local.due(2_000) == []
    # the timer's flush sends everything waiting, however recent the last flush
    assert local.add("d", TS, 1.0, now_ms=1_550) == []
    assert local.flush(1_560) == [("d", TS, 1.0)] and local.flush(1_570) == [] and local.items == {}


def test_board_publishes_its_top_items_and_forgets_faded_ones():
    cfg = TrendingConfig(half_life_minutes=10, min_count=1.0, top_n=2)
    board = TrendingBoard(cfg)
    hl = cfg.half_life_minutes * MIN
    counts = {}
    for n, item in enumerate(["a", "a", "a", "b", "b", "c"]):
        counts[item] = bump(counts.get(item), TS + n * 1000, 1.0, hl)
        board.observe(item, counts[item])
    snap = board.snapshot()
    assert [row[0] for row in snap] == ["a", "b"] and snap[0][2] == TS  # c is below the top 2
    # an hour later only a fresh item trends; the faded ones are forgotten
    board.observe("d", bump(None, TS + 60 * MIN, 3.0, hl))
    assert [row[0] for row in board.snapshot()] == ["d"] and set(board.items) == {"d"}
    msg = board.message(1, 2)
    assert msg["type"] == "trending" and msg["subtask"] == 1 and msg["of"] == 2 and msg["ts"] == TS + 60 * MIN


def test_table_merges_the_boards_of_every_subtask_exactly():
    cfg = TrendingConfig(top_n=3, boost=0.3, new_item_hours=1, new_item_boost=0.2)
    table = TrendingTable(cfg, {"a": 1, "b": 2, "c": 3, "d": 4}, 4)
    table.update({"type": "trending", "subtask": 0, "of": 2, "ts": TS, "items": [["a", 9.0, TS - 86_400_000],
                                                                                  ["c", 2.0, TS]]})
    table.update({"type": "trending", "subtask": 1, "of": 2, "ts": TS, "items": [["b", 5.0, TS - 86_400_000],
                                                                                  ["zz", 99.0, TS]]})
    assert table.items.tolist() == [1, 2, 3]  # zz is unknown to the model: left out
    assert table.rank.tolist() == [0, 1, 2, 3, 0]
    np.testing.assert_allclose(table.bonus, [0, 0.3, 0.2, 0.1 + 0.2, 0], atol=1e-6)  # c is new
    # rescaled down to one trending subtask: the other board goes
    table.update({"type": "trending", "subtask": 0, "of": 1, "ts": TS, "items": [["d", 1.0, TS - 86_400_000]]})
    assert table.items.tolist() == [4]
    assert table.cold_list(5, None).tolist() == [4] and table.cold_list(5, np.array([1, 1, 1, 1, 0], bool)).size == 0


@pytest.fixture(scope="module")
def model(trained_bundle):
    return OnnxModel(load_bundle(trained_bundle), providers=["CPUExecutionProvider"])


def event(user, item, ts, event_type="view"):
    return json.dumps({"user_id": user, "item_id": item, "event_type": event_type, "ts": ts}).encode()


def test_the_serving_core_counts_accepted_events_and_serves_trending(model):
    """The offline loop the job closes through Kafka: accepted events -> board -> control message -> table."""
    vocab = model.bundle.item_vocab
    tcfg = TrendingConfig(min_count=1.0, top_n=20)
    core = ServingCore(model, top_k=10, history_len=50, input_topic="e", trending=tcfg,
                       rerank=RerankConfig(neighbor_cold_start=0), abuse=AbuseConfig(max_events_per_minute=5))
    store: dict[str, bytes] = {}
    board, hl = TrendingBoard(tcfg), tcfg.half_life_minutes * MIN
    counts: dict[str, ItemCount] = {}

    def send(user, item, ts, kind="view"):
        out = core.process(user, event(user, item, ts, kind), 0, ts, ts, store.get(user), now_ms=TS + 10**9)
        if out.state is not None:
            store[user] = out.state
        if out.accepted is not None:
            it, t, w = out.accepted
            counts[it] = bump(counts.get(it), t, w, hl)
            board.observe(it, counts[it])
        return out

    first = json.loads(send("new0", vocab[50], TS).value)
    assert first["strategy"] == "model"  # its item is known: the model path
    cold = json.loads(send("cold0", "unknown-item", TS).value)
    assert cold["strategy"] == "popular"  # nothing trends yet
    # many users buy vocab[40..51]; an abuser hammers vocab[7] and is quarantined: it moves no count
    for u in range(30):
        for j, item in enumerate(vocab[40:52]):
            send(f"u{u}", item, TS + u * 1000 + j * 15_000, "purchase")  # under the rate limit
    outs = [send("bot", vocab[7], TS + n) for n in range(20)]
    assert sum(o.kind == QUARANTINE for o in outs) == 15 and all(o.accepted is None for o in outs[5:])
    core.control(board.message(0, 1))
    assert core.counts["trending_updates"] == 1
    trend_items = [vocab[i - 1] for i in core.trending.items.tolist()]
    assert set(trend_items[:12]) == set(vocab[40:52]) and vocab[7] not in trend_items[:12]
    cold = json.loads(send("cold1", "unknown-item", TS + 10**6).value)
    assert cold["strategy"] == "trending" and [i["item_id"] for i in cold["items"]] == trend_items[:10]
    assert [i["reason"] for i in cold["items"]] == [{"trending": r} for r in range(1, 11)]
    # a known user's list: the boost lifts trending candidates, and says so (a strong boost, to be sure)
    boosted = ServingCore(model, top_k=10, history_len=50, input_topic="e", rerank=RerankConfig(neighbor_cold_start=0),
                          trending=tcfg.model_copy(update={"boost": 50.0}))
    boosted.control(board.message(0, 1))
    warm = json.loads(boosted.process("w", event("w", vocab[3], TS + 10**6), 0, 1, TS, None, TS + 10**9).value)
    plain = json.loads(core.process("w", event("w", vocab[3], TS + 10**6), 0, 1, TS, None, TS + 10**9).value)
    assert warm["strategy"] == plain["strategy"] == "model"
    lifted = [i for i in warm["items"] if "trending" in i["reason"]]
    assert len(lifted) > sum("trending" in i["reason"] for i in plain["items"])
    assert all("because" in i["reason"] for i in warm["items"])
    assert all(trend_items.index(i["item_id"]) + 1 == i["reason"]["trending"] for i in lifted)
    # control messages: item rules through the control topic; a broken one is refused, serving goes on
    core.control({"type": CONTROL_ITEM_RULES, "blocked": trend_items[:1]})
    again = json.loads(send("cold2", "unknown-item", TS + 10**6).value)
    assert trend_items[0] not in [i["item_id"] for i in again["items"]]
    core.control({"type": CONTROL_ITEM_RULES, "blocked": "not-a-list"})
    core.control({"type": "what"})
    assert core.counts["control_errors"] == 2
    assert send("cold3", "unknown-item", TS + 10**6).kind == LIST
