import numpy as np
import pytest

from operators.errors import StateLayoutError
from operators.items import ItemIndex, item_key
from operators.rerank import ShownHistory, item_hash32
from operators.state import LAYOUT_VERSION, UserState, decode_state, encode_state, model_tag
from operators.window import advances_model, left_pad_row, model_input, model_sequence


def keys(*items):
    return [item_key(i) for i in items]


def test_window_grows_in_event_time_order_and_stays_bounded():
    s = UserState.empty()
    # An empty window takes the first interaction as is, in order.
    assert s.add(item_key("a"), "view", 100, max_len=3)
    # A newer event goes last.
    assert s.add(item_key("b"), "click", 200, max_len=3)
    assert s.keys.tolist() == keys("a", "b")
    # A late event (ts 150) is inserted at its event-time position and reported as out of order.
    assert not s.add(item_key("c"), "view", 150, max_len=3)
    assert s.keys.tolist() == keys("a", "c", "b")
    # Past max_len the oldest entry is dropped.
    assert s.add(item_key("d"), "purchase", 300, max_len=3)
    assert s.keys.tolist() == keys("c", "b", "d")
    assert s.ts.tolist() == [150, 200, 300]
    assert s.types.tolist() == [0, 1, 3]


def test_equal_timestamps_keep_arrival_order_and_repeats_are_kept():
    s = UserState.empty()
    for item in ("a", "b", "a"):
        assert s.add(item_key(item), "view", 100, max_len=5)
    assert s.keys.tolist() == keys("a", "b", "a")


def test_state_round_trips_through_bytes_and_is_small():
    s = UserState.empty()
    for t in range(250):
        s.add(item_key(f"i{t}"), "view", 1_767_225_600_000 + t * 1000, max_len=200)
    s.model, s.tag = np.arange(320, dtype=np.float32), model_tag("m1")
    data = encode_state(s)
    # 24-byte header + 13 bytes per event + 4 bytes per model float: under 4 KB at 200 events.
    assert len(data) == 24 + 13 * 200 + 4 * 320 == 3904
    back = decode_state(data)
    assert back.keys.tolist() == s.keys.tolist()
    assert back.ts.tolist() == s.ts.tolist()
    assert back.types.tolist() == s.types.tolist()
    assert back.model.tolist() == s.model.tolist() and back.tag == model_tag("m1")
    # A decoded state can be extended again (its arrays are read-only views of the bytes).
    back.add(item_key("x"), "click", back.newest + 1, max_len=200)
    assert decode_state(encode_state(back)).keys[-1] == item_key("x")


def test_missing_state_is_empty_and_unknown_layouts_are_refused():
    assert len(decode_state(None)) == 0
    data = bytearray(encode_state(UserState.empty()))
    data[0] = LAYOUT_VERSION + 1
    with pytest.raises(StateLayoutError, match=r"layout version 4; this job reads versions \(1, 2, 3\)"):
        decode_state(bytes(data))
    with pytest.raises(StateLayoutError, match="shorter than its 20-byte header"):
        decode_state(b"\x01\x00")


def test_the_shown_history_round_trips_and_version_1_state_still_reads():
    s = UserState.empty()
    for t in range(200):
        s.add(item_key(f"i{t}"), "view", 1_767_225_600_000 + t, max_len=200)
    s.model, s.tag = np.arange(320, dtype=np.float32), model_tag("m1")
    shown = ShownHistory.empty()
    for n in range(5):
        shown = shown.push(item_hash32(keys(*[f"s{n}-{j}" for j in range(10)])), window=3)
    s.shown = shown
    data = encode_state(s)
    # 3 remembered lists of 10: 5 bytes per shown item
    assert len(data) == 3904 + 5 * 30 == 4054
    back = decode_state(data)
    assert back.shown.hashes.tolist() == shown.hashes.tolist()
    assert back.shown.ages.tolist() == [2] * 10 + [1] * 10 + [0] * 10
    # layout 1 (written by the previous release, e.g. restored from its savepoint): the same bytes but the
    # version, and no shown section; it reads as nothing shown
    # layouts 1 and 2 had a 20-byte header (no affinity, no purchases): the sections that follow are the same
    import struct

    v3 = encode_state(s)
    _, flags, n, m, sh, c, p, tag, newest = struct.unpack_from("<BBHHHHHIq", v3)
    v2 = struct.pack("<BBHHHIq", 2, flags, n, m, sh, tag, newest) + v3[24:]
    old = decode_state(v2)
    assert old.shown.hashes.tolist() == shown.hashes.tolist() and old.affinity is None and old.purchased is None
    s.shown = None
    v3 = encode_state(s)
    v1 = struct.pack("<BBHHHIq", 1, flags, n, m, 0, tag, newest) + v3[24:]
    old = decode_state(v1)
    assert old.shown is None and old.keys.tolist() == s.keys.tolist() and old.model.tolist() == s.model.tolist()


def test_affinity_and_purchases_round_trip_and_purchases_stay_bounded():
    s = UserState.empty()
    s.add(item_key("a"), "purchase", 1_767_225_600_000, max_len=200)
    for n in range(10):
        s.remember_purchase(item_key(f"p{n}"), limit=4)
    s.remember_purchase(item_key("p7"), limit=4)  # a repeat moves to the end, once
    s.affinity = np.array([0.5, -1.0, 2.0], dtype=np.float32)
    back = decode_state(encode_state(s))
    assert back.purchased.tolist() == keys("p6", "p8", "p9", "p7")
    assert back.affinity.tolist() == [0.5, -1.0, 2.0]
    assert len(encode_state(s)) == 24 + 13 + 4 * 3 + 8 * 4


def test_ages_saturate_instead_of_wrapping():
    s = UserState.empty()
    s.add(item_key("old"), "view", 1_000_000_000_000, max_len=5)
    s.add(item_key("new"), "view", 1_000_000_000_000 + 60 * 86_400_000, max_len=5)
    back = decode_state(encode_state(s))
    assert back.ts[1] == s.ts[1]
    assert back.ts[0] == back.newest - (2**32 - 1)  # older than ~49.7 days: clamped, still the oldest


def test_item_index_maps_known_keys_and_zero_for_unknown():
    index = ItemIndex(["a", "b", "c"])
    assert index.lookup(keys("c", "zz", "a")).tolist() == [3, 0, 1]
    assert index.index(item_key("b")) == 2 and index.index(item_key("nope")) == 0
    assert index.lookup(np.zeros(0, np.uint64)).tolist() == []


def test_model_input_keeps_each_known_item_once_and_excludes_the_whole_window():
    inp = model_input(np.array([3, 0, 5, 3, 0, 7, 5]))
    assert inp.sequence.tolist() == [3, 5, 7]  # first occurrences, unknown items dropped
    assert inp.exclude.tolist() == [3, 0, 5, 3, 0, 7, 5]
    assert inp.newest == 5 and not inp.cold
    assert model_input(np.array([0, 0])).cold
    assert model_sequence(np.array([4, 2, 9])).tolist() == [4, 2, 9]
    # a repeat, or an unknown item, is no new entry of the sequence: the recurrent model does not advance
    assert advances_model(np.array([3, 5, 7]), 7)
    assert not advances_model(np.array([3, 5, 3]), 3)
    assert not advances_model(np.array([3, 0]), 0)
    assert left_pad_row(np.array([1, 2, 3]), 5).tolist() == [0, 0, 1, 2, 3]
    assert left_pad_row(np.array([1, 2, 3]), 2).tolist() == [2, 3]
