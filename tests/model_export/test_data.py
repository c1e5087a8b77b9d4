import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from model_export.data import build_sequences, k_core, load_event_log, load_movielens, loo_split
from operators.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
MOVIELENS = Path(os.environ.get("STREAMREC_MOVIELENS_DIR", REPO.parent / "shared" / "data" / "ml-latest-small"))


def frame(rows):
    return pd.DataFrame(rows, columns=["user_id", "item_id", "ts"]).assign(event_type="view")


def test_k_core_is_iterative():
    rows = [("a", "x", 1), ("a", "y", 2), ("b", "x", 3), ("b", "z", 4), ("c", "x", 5), ("c", "y", 6)]
    rows += [("b", "w", 7), ("d", "w", 8), ("d", "x", 9)]
    out = k_core(frame(rows), k=2)
    # Only z goes (1 event): b still has x and w, so every user stays.
    assert sorted(out["user_id"].unique()) == ["a", "b", "c", "d"]
    assert sorted(out["item_id"].unique()) == ["w", "x", "y"]
    # Without b's w the removals cascade.
    rows2 = [r for r in rows if r[:2] != ("b", "w")]
    out2 = k_core(frame(rows2), k=2)
    # z goes (1 event) -> b has only x and goes -> w has only d and goes -> d has only x and goes.
    assert sorted(out2["user_id"].unique()) == ["a", "c"]
    assert sorted(out2["item_id"].unique()) == ["x", "y"]


def test_sequences_order_by_timestamp_then_numeric_item():
    rows = [("u", "10", 5), ("u", "9", 5), ("u", "2", 1), ("v", "2", 3)]
    data = build_sequences(frame(rows))
    assert data.item_vocab == ["2", "9", "10"]  # numeric order, not "10" < "2"
    seq = [data.item_vocab[i - 1] for i in data.sequences[data.user_ids.index("u")]]
    assert seq == ["2", "9", "10"]  # tie at ts=5 broken by item id


def test_dedupe_keeps_first_interaction():
    rows = [("u", "a", 1), ("u", "b", 2), ("u", "a", 3), ("u", "c", 4)]
    data = build_sequences(frame(rows), dedupe=True)
    assert [data.item_vocab[i - 1] for i in data.sequences[0]] == ["a", "b", "c"]


def test_fingerprint_changes_with_data():
    a = build_sequences(frame([("u", "a", 1), ("u", "b", 2)]))
    b = build_sequences(frame([("u", "a", 1), ("u", "b", 3)]))
    assert a.fingerprint != b.fingerprint
    assert a.fingerprint == build_sequences(frame([("u", "b", 2), ("u", "a", 1)])).fingerprint


def test_leave_one_out_split():
    data = build_sequences(frame([("u", str(i), i) for i in range(1, 6)]))
    split = loo_split(data)
    assert split.train[0].tolist() == [1, 2, 3]
    assert split.valid_inputs[0].tolist() == [1, 2, 3] and split.valid_targets.tolist() == [4]
    assert split.test_inputs[0].tolist() == [1, 2, 3, 4] and split.test_targets.tolist() == [5]


def test_split_refuses_short_users():
    with pytest.raises(ConfigError, match="fewer than 3 events"):
        loo_split(build_sequences(frame([("u", "a", 1), ("u", "b", 2)])))


def test_event_log_skips_invalid_lines(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text(
        '{"user_id": "u", "item_id": "a", "event_type": "view", "ts": 1767225600000}\n'
        "not json\n\n"
        '{"user_id": "u", "item_id": "b", "event_type": "click", "ts": 1767225600001}\n'
    )
    df = load_event_log(path)
    assert df["item_id"].tolist() == ["a", "b"]
    assert df.attrs["invalid_lines"] == 1


def test_missing_data_fails_with_the_fix(tmp_path):
    with pytest.raises(ConfigError, match="pass --data DIR holding ratings.csv"):
        load_movielens(tmp_path)


@pytest.mark.skipif(not (MOVIELENS / "ratings.csv").is_file(),
                    reason=f"MovieLens not found at {MOVIELENS} (set STREAMREC_MOVIELENS_DIR)")
def test_movielens_loo_5core_statistics():
    data = build_sequences(k_core(load_movielens(MOVIELENS), 5))
    assert (data.n_users, data.n_items, data.n_events) == (610, 3650, 90_274)
    split = loo_split(data)
    assert len(split.test_targets) == 610
    assert all(len(s) >= 3 for s in split.test_inputs)
    assert np.all(split.test_targets > 0)


def test_training_sequences_are_what_the_job_feeds_the_model():
    """Zero skew: a log with repeats (views, then a purchase of the same item) gives the training sequence the
    job's window gives its model: each item once, at its first occurrence, in event-time order (ties in the
    order training sorts them, :func:`model_export.data.order_events`, which is the order the replay sends them)."""
    from operators.items import ItemIndex, item_key
    from operators.state import UserState
    from operators.window import model_sequence

    rng = np.random.default_rng(3)
    rows = [(f"u{u}", f"i{int(rng.integers(0, 12))}", int(t)) for u in range(5)
            for t in np.sort(rng.integers(0, 40, size=30))]
    data = build_sequences(frame(rows), dedupe=True)
    index = ItemIndex(data.item_vocab)
    for user, seq in zip(data.user_ids, data.sequences, strict=True):
        window = UserState.empty()
        for _user, item, ts in sorted((r for r in rows if r[0] == user), key=lambda r: (r[2], r[1])):
            window.add(item_key(item), "view", ts, max_len=1000)
        served = model_sequence(index.lookup(window.keys))
        assert served.tolist() == seq.tolist()
        # and both are the definition, written out here without first_occurrences (which both sides share)
        ordered = [item for _u, item, _t in sorted((r for r in rows if r[0] == user), key=lambda r: (r[2], r[1]))]
        assert seq.tolist() == [data.item_vocab.index(i) + 1 for i in dict.fromkeys(ordered)]
        assert len(seq) < sum(r[0] == user for r in rows)  # the log has repeats, and they were dropped
