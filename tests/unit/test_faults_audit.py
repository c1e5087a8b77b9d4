"""The fault suite's delivery audit (pure) and the one-job-per-checkpoint-dir lock."""

import json

import pytest

from deploy.faults import audit
from operators.errors import ConfigError


def lst(event_id, history_len):
    return {"event_id": event_id, "history_len": history_len}


SENT = {"e1": "u1", "e2": "u1", "e3": "u2", "e4": "u1"}


def test_a_clean_run_passes():
    found = audit(SENT, [lst("e1", 1), lst("e2", 2), lst("e3", 1), lst("e4", 3)], [])
    assert (found.missing, found.duplicates, found.history_mismatch, found.lists) == ([], 0, [], 4)


def test_replayed_events_are_duplicates_and_a_restored_state_continues():
    lists = [lst("e1", 1), lst("e2", 2), lst("e2", 2), lst("e3", 1), lst("e4", 3), lst("e4", 3)]
    found = audit(SENT, lists, [])
    assert found.duplicates == 2 and not found.missing and not found.history_mismatch


def test_a_lost_state_shows_as_a_history_that_does_not_continue():
    """After a restart without restore, u1's last list counts only the events since the restart."""
    found = audit(SENT, [lst("e1", 1), lst("e2", 2), lst("e3", 1), lst("e4", 1)], [])
    assert found.history_mismatch == ["u1"]


def test_a_replayed_event_applied_twice_to_the_state_shows_too():
    found = audit(SENT, [lst("e1", 1), lst("e2", 2), lst("e3", 1), lst("e4", 3), lst("e4", 4)], [])
    assert found.history_mismatch == ["u1"]


def test_dead_letters_answer_their_event_and_missing_events_are_named():
    dead = [{"raw_encoding": "utf-8", "raw": json.dumps({"event_id": "e3", "user_id": "u2"})},
            {"raw_encoding": "utf-8", "raw": "[" * 5000}, {"raw_encoding": "base64", "raw": "AAA="}]
    found = audit(SENT, [lst("e1", 1), lst("e2", 2)], dead)
    assert found.missing == ["e4"] and found.dead == 3 and found.answered == 3


def test_history_is_capped_at_the_window():
    sent = {f"e{i}": "u" for i in range(5)}
    assert not audit(sent, [lst(f"e{i}", min(i + 1, 3)) for i in range(5)], [], history_cap=3).history_mismatch


def test_one_job_per_checkpoint_dir(tmp_path):
    from flink_jobs import recommend_job

    recommend_job.acquire_job_lock(tmp_path, wait=False)
    try:
        with pytest.raises(ConfigError, match="another job already runs on --checkpoint-dir .*--standby"):
            recommend_job.acquire_job_lock(tmp_path, wait=False)
    finally:
        for fh in recommend_job._held_locks:
            fh.close()
        recommend_job._held_locks.clear()
    recommend_job.acquire_job_lock(tmp_path, wait=False)  # released with its holder
    recommend_job._held_locks.pop().close()


def test_last_lists_are_compared_with_the_uninterrupted_run():
    from deploy.faults import compare_with_reference

    def doc(event_id, items, history_len=2, strategy="model"):
        return {"event_id": event_id, "items": [{"item_id": i, "score": s} for i, s in items],
                "strategy": strategy, "history_len": history_len}

    reference = {"u1": doc("e2", [("a", 2.0), ("b", 1.0)]), "u2": doc("e3", [("c", 1.0)], 1)}
    same = [doc("e1", [("x", 1.0)], 1), doc("e2", [("a", 2.0), ("b", 1.00001)]), doc("e3", [("c", 1.0)], 1)]
    assert compare_with_reference(reference, same) == []
    reordered = [doc("e2", [("b", 2.0), ("a", 1.0)]), doc("e3", [("c", 1.0)], 1)]
    assert compare_with_reference(reference, reordered) == ["u1"]
    one_bad_copy = [*same, doc("e3", [("c", 1.5)], 1)]  # a replayed copy scored from a different state
    assert compare_with_reference(reference, one_bad_copy) == ["u2"]
    assert compare_with_reference(reference, same[:2]) == ["u2"]  # no list at all
