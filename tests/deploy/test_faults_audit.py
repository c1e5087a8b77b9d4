"""The fault suite's delivery audit (pure) and the one-job-per-checkpoint-dir lock."""

import json

import pytest

from deploy.faults import _pace, audit, completed_checkpoints, duplicate_bound
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


LOG = """2026-12-03 17:41:30,100 INFO  org.apache.flink.runtime.checkpoint.CheckpointCoordinator    [] - Triggering checkpoint 3 (type=CheckpointType{name='Checkpoint', sharingFilesStrategy=FORWARD_BACKWARD}) @ 1796319690000 for job 3a07.
2026-12-03 17:41:31,818 INFO  org.apache.flink.runtime.checkpoint.CheckpointCoordinator    [] - Completed checkpoint 3 for job 3a07 (61791 bytes, checkpointDuration=565 ms, finalizationTime=92 ms).
2026-12-03 17:41:32,100 INFO  org.apache.flink.runtime.checkpoint.CheckpointCoordinator    [] - Triggering checkpoint 4 (type=CheckpointType{name='Checkpoint', sharingFilesStrategy=FORWARD_BACKWARD}) @ 1796319692000 for job 3a07.
"""  # noqa: E501 - Flink's own lines


def test_checkpoints_are_read_from_the_jobs_log_and_bound_the_duplicates_of_each_kill():
    """Only completed checkpoints count (4 was triggered, never completed); a kill may repeat the lists the job
    emitted after the last completed checkpoint's barrier and before the kill, nothing earlier."""
    done = completed_checkpoints(LOG)
    assert [t for t, _ in done] == [1796319690000]
    completed_ms = done[0][1]
    emitted = [1796319689000 + 100 * k for k in range(60)]  # one list every 100 ms from 1 s before the barrier
    kill = completed_ms + 1000
    expected = sum(1796319690000 - 250 <= e <= kill for e in emitted)
    assert duplicate_bound([kill], done, emitted) == expected < len(emitted)
    assert duplicate_bound([1796319680000], done, emitted) == 0, "before any checkpoint: what was emitted so far"
    assert duplicate_bound([kill, kill], done, emitted) == 2 * expected
    # a TaskManager's loss: the other subtasks emit until the job runs again, and those lists count too
    running_again = kill + 1500
    assert duplicate_bound([kill], done, emitted, ends_ms=[running_again]) == \
        sum(1796319690000 - 250 <= e <= running_again for e in emitted) > expected


RUNNING_LOG = """2026-12-07 03:39:21,102 INFO  org.apache.flink.runtime.executiongraph.ExecutionGraph       [] - Job streamrec-recommend (9f556192742595af1a41a660ce5862d9) switched from state CREATED to RUNNING.
2026-12-07 03:40:01,000 INFO  org.apache.flink.runtime.executiongraph.ExecutionGraph       [] - Job streamrec-recommend (9f556192742595af1a41a660ce5862d9) switched from state RUNNING to RESTARTING.
2026-12-07 03:40:11,005 INFO  org.apache.flink.runtime.executiongraph.ExecutionGraph       [] - Job streamrec-recommend (9f556192742595af1a41a660ce5862d9) switched from state RESTARTING to RUNNING.
2026-12-07 03:40:11,006 INFO  org.apache.flink.runtime.executiongraph.Execution            [] - Source: kafka (1/2) switched from CREATED to SCHEDULED.
"""  # noqa: E501 - Flink's own lines


def test_the_jobmanagers_log_gives_restarts_and_switches_to_running():
    from deploy.harness.flink_log import RESTART, RUNNING, log_time_ms

    assert len(RESTART.findall(RUNNING_LOG)) == 1
    times = [log_time_ms(m[1]) for m in RUNNING.finditer(RUNNING_LOG)]  # a start (or recovery), then a restart
    assert times == [log_time_ms("2026-12-07 03:39:21,102"), log_time_ms("2026-12-07 03:40:11,005")]
    assert times[1] - times[0] == 49_903


def test_a_fault_that_outlasts_the_stream_still_lands_mid_stream():
    """The next fault's record waits for the previous fault to end, so each fault starts with records to come."""
    import time

    sent: list[float] = []
    faults: list[float] = []

    class Producer:
        def send(self, *_: object, **__: object) -> None:
            sent.append(time.monotonic())

        def flush(self) -> None:
            pass

    def slow_fault() -> None:
        faults.append(time.monotonic())
        time.sleep(0.3)  # longer than the rest of the stream

    records = [(b"k", b"v")] * 40
    _pace(records, Producer(), "t", 400.0, {5: slow_fault, 10: slow_fault, 15: slow_fault})
    assert len(faults) == 3 and all(f < sent[-1] for f in faults), "every fault with records still to come"
    assert all(b - a >= 0.3 for a, b in zip(faults, faults[1:], strict=False)), "one fault at a time"
