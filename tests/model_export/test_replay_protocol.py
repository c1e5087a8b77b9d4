"""The replay protocol (model_export.replay) on hand-made logs and lists: what is scored against what."""

import math

import numpy as np
import pandas as pd
import pytest

from model_export.replay import EmittedList, evaluate, paired_bootstrap, plan_replay
from operators.errors import ConfigError


def log(rows):
    return pd.DataFrame(rows, columns=["user_id", "item_id", "ts", "event_type"])


ROWS = [  # user, item, ts
    ("a", "x", 1, "view"), ("b", "y", 2, "view"), ("a", "y", 3, "view"), ("b", "z", 4, "view"),
    # cut here (cutoff 0.5 -> the 5th event by time)
    ("a", "z", 5, "view"), ("b", "x", 6, "view"), ("a", "y", 7, "click"), ("c", "x", 8, "view"),
    ("c", "w", 9, "view"), ("b", "w", 10, "view"),
]


def test_plan_orders_by_time_and_cuts_by_event_share():
    plan = plan_replay(log(list(reversed(ROWS))), 0.4)
    assert plan.ts.tolist() == sorted(plan.ts.tolist())
    assert plan.n_prefill == 4 and plan.cutoff_ts == 5 and plan.n_replayed == 6
    assert len(plan.train) == 4 and plan.train["ts"].max() < plan.cutoff_ts
    assert plan.records[0].key == "a" and b'"event_id":"r0"' in plan.records[0].payload
    with pytest.raises(ConfigError, match="cutoff"):
        plan_replay(log(ROWS), 1.0)


def test_each_event_is_scored_against_its_users_previous_list():
    plan = plan_replay(log(ROWS), 0.4)
    ids = dict(zip(zip(plan.users, plan.items, plan.ts.tolist(), strict=True), plan.event_ids, strict=True))
    lists = {e: EmittedList(["q"], [1.0], "model") for e in plan.event_ids}
    lists[ids[("a", "y", 3)]] = EmittedList(["q", "z", "w"], [3, 2, 1], "model")  # a's last list before the cut
    lists[ids[("b", "z", 4)]] = EmittedList(["w", "x"], [2, 1], "model")  # b: x at rank 1
    lists[ids[("b", "x", 6)]] = EmittedList(["w"], [1], "popular")  # b: w at rank 0 (event at ts 10)
    result = evaluate(plan, lists, k=10, catalog=["w", "x", "y", "z", "q"])
    counts = result["counts"]
    # a@5 z: hit rank 1; b@6 x: hit rank 1; a@7 y: a repeat (not scored); c@8: no list yet; c@9 w: miss (q);
    # b@10 w: hit rank 0
    assert counts == {"no_list_yet": 1, "repeat_events": 1, "scored": 4, "lists": 6, "cold_start": 1, "missing": 0,
                      "rejected": 0}
    m = result["metrics"]
    assert m["hr@10"] == pytest.approx(3 / 4)
    assert m["ndcg@10"] == pytest.approx((2 / math.log2(3) + 1) / 4)
    assert m["mrr@10"] == pytest.approx((0.5 + 0.5 + 1) / 4)
    assert m["cold_start_share"] == pytest.approx(1 / 6)
    assert m["coverage"] == pytest.approx(2 / 5)  # q and w were recommended after the cut
    # a's lists after the cut: [q] then [q] -> the second re-shows q
    assert m["repeat_rate"] > 0


def test_missing_lists_are_counted():
    plan = plan_replay(log(ROWS), 0.4)
    lists = {e: EmittedList(["q"], [1.0], "model") for e in plan.event_ids[:-2]}
    assert evaluate(plan, lists, catalog=["q"])["counts"]["missing"] == 2
    # an event answered with a dead letter or a quarantine record is rejected, not missing
    counts = evaluate(plan, lists, catalog=["q"], rejected={plan.event_ids[-1]})["counts"]
    assert counts["missing"] == 1 and counts["rejected"] == 1


def test_paired_bootstrap_interval_holds_the_difference_and_excludes_zero_for_a_clear_gap():
    rng = np.random.default_rng(0)
    a = {f"u{i}": [0.0, float(rng.random() * 0.5 + 0.4), 0.0, 1.0] for i in range(300)}
    b = {f"u{i}": [0.0, float(rng.random() * 0.5), 0.0, 1.0] for i in range(300)}
    diff, lo, hi = paired_bootstrap(a, b, column=1)
    assert lo < diff < hi and lo > 0
    # its interval is the paired one: its width follows the spread of the per-user differences (the normal
    # approximation, +-1.96 standard errors), far narrower than two unpaired intervals would be
    d = np.array([a[u][1] - b[u][1] for u in a])
    assert hi - lo == pytest.approx(2 * 1.96 * d.std(ddof=1) / np.sqrt(len(d)), rel=0.15)


def test_paired_bootstrap_interval_covers_zero_when_two_systems_are_equally_good():
    """No difference in truth: over 40 independent logs the 95 % interval holds zero about 95 % of the time."""
    covered, widths, expected = 0, [], []
    for seed in range(40):
        rng = np.random.default_rng(100 + seed)
        base = rng.random(200)  # per-user difficulty, shared: the pairing removes it
        a = {f"u{i}": [0.0, float(base[i] + rng.normal(0, 0.1)), 0.0, 1.0] for i in range(200)}
        b = {f"u{i}": [0.0, float(base[i] + rng.normal(0, 0.1)), 0.0, 1.0] for i in range(200)}
        _, lo, hi = paired_bootstrap(a, b, column=1, samples=500, seed=seed)
        covered += lo <= 0 <= hi
        widths.append(hi - lo)
        d = np.array([a[u][1] - b[u][1] for u in a])
        expected.append(2 * 1.96 * d.std(ddof=1) / np.sqrt(len(d)))
    assert 33 <= covered <= 40, covered
    # paired: the shared per-user difficulty cancels (an unpaired interval would be ~3x wider here)
    assert np.mean(widths) == pytest.approx(np.mean(expected), rel=0.1)
