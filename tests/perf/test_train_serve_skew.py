"""The train/serve skew benchmark's two measurements on a log small enough to check by hand."""

from __future__ import annotations

import pandas as pd

from model_export.replay import plan_replay
from perf.train_serve_skew import late_arrivals, repeats_beyond_window


def _plan(rows):
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "ts"]).assign(event_type="view")
    return plan_replay(df, 0.5)


def test_repeats_are_split_by_whether_their_first_occurrence_is_in_the_window():
    # u1: a b c a (a 3 events back: in a window of 3, beyond a window of 2); u2: x x
    plan = _plan([("u1", "a", 1), ("u1", "b", 2), ("u1", "c", 3), ("u1", "a", 4), ("u2", "x", 5), ("u2", "x", 6)])
    assert repeats_beyond_window(plan, history_len=3) == {"events": 6, "repeats_in_window": 2,
                                                           "repeats_beyond_window": 0}
    assert repeats_beyond_window(plan, history_len=2) == {"events": 6, "repeats_in_window": 1,
                                                           "repeats_beyond_window": 1}


def test_late_arrivals_reorder_only_within_a_user_and_only_after_the_cut():
    rows = [(f"u{u}", f"i{n}", 10 * n + u) for n in range(40) for u in range(3)]
    plan = _plan(rows)
    late_plan, late = late_arrivals(plan, share=0.5, late_by=(1, 2), seed=3)
    assert late > 0
    assert late_plan.event_ids[: plan.n_prefill] == plan.event_ids[: plan.n_prefill]  # the prefill is untouched
    assert sorted(late_plan.event_ids) == sorted(plan.event_ids)
    assert late_plan.users == plan.users  # every user keeps the slots they had in the stream
    assert [r.offset for r in late_plan.records] == list(range(len(plan.records)))
    by_id = {e: (r.payload, t) for e, r, t in zip(plan.event_ids, plan.records, plan.ts, strict=True)}
    for e, r, t in zip(late_plan.event_ids, late_plan.records, late_plan.ts, strict=True):
        assert by_id[e] == (r.payload, t)  # records travel with their ids and event times
    # the count is the events that arrive after a newer event of their user
    newest, counted = {}, 0
    for user, t in zip(late_plan.users, late_plan.ts, strict=True):
        counted += t < newest.get(user, t)
        newest[user] = max(newest.get(user, t), t)
    assert counted == late
    assert late_arrivals(plan, share=0.0, late_by=(1,), seed=3)[1] == 0
