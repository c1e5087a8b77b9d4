"""How long a forgotten user survives in the job's checkpoints (the privacy promise of ``forget_user``).

Incremental RocksDB checkpoints share the state's files; a deleted key (and its tombstone, which holds the
key too) stays in a shared file until RocksDB compacts it away, so a forgotten user can outlive the forget in
every retained checkpoint: measured on this job, still there 80 s after the forget under steady writes, even
with a 20-s periodic compaction. With ``--full-checkpoints`` each checkpoint is written from the live keys:
the user's keyed state is in no retained checkpoint once two (``num-retained``) checkpoints completed after the
forget. Yet the raw id stays: measured, 60 s after the forget every retained full checkpoint still holds it,
in entries shaped like timer keys (sign-flipped timestamp, key), dated at the user's last events, while those
of users still active move on. Not understood yet, so this test is an expected failure; the day the id does
leave, the report says XPASS and the xfail goes (not strict: an unexplained change must not block the rest)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from kafka import KafkaProducer

from deploy.harness.job_process import JobProcess, wait_until_serving
from operators.bundle import load_bundle

pytestmark = pytest.mark.integration

TS = 1_767_225_600_000
USER = "forgotten-user-5d1c9b2e7a40f3"  # long and unique: RocksDB keys are the serialised user id


def _files_holding(root: Path, needle: bytes) -> list[str]:
    """Checkpoint files holding ``needle`` (Flink deletes old checkpoints while we read: retried)."""
    for _ in range(10):
        try:
            return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                          if p.is_file() and needle in p.read_bytes())
        except FileNotFoundError:
            time.sleep(0.2)
    raise AssertionError("the checkpoint directory kept changing under the reader")


@pytest.mark.xfail(strict=False, reason="the raw id stays in timer-like entries of every retained checkpoint "
                   "(measured 60 s after the forget); see the module doc")
def test_with_full_checkpoints_a_forgotten_user_leaves_every_retained_checkpoint(kafka, trained_bundle, tmp_path):
    vocab = load_bundle(trained_bundle).item_vocab
    interval_s = 1.0
    topic, out = "fg.events", "fg.recs"
    kafka.create_topics({topic: 1, out: 1, "fg.dead": 1})
    ck = tmp_path / "ck"
    args = ["--bootstrap-servers", kafka.bootstrap, "--bundle", str(trained_bundle), "--checkpoint-dir", str(ck),
            "--input-topic", topic, "--output-topic", out, "--dead-letter-topic", "fg.dead", "--group-id", "it-fg",
            "--checkpoint-interval-ms", str(int(interval_s * 1000)), "--full-checkpoints"]
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
    n = 0

    def send(user: str, kind: str = "view") -> None:
        nonlocal n
        doc = {"user_id": user, "event_type": kind, "ts": TS + n, "event_id": f"fg-{n}"}
        if kind != "forget_user":
            doc["item_id"] = vocab[n % len(vocab)]
        producer.send(topic, key=user.encode(), value=json.dumps(doc).encode())
        n += 1

    with JobProcess(args, tmp_path / "logs") as job:
        wait_until_serving(job, kafka.bootstrap, topic, out, timeout_s=240)
        for _ in range(5):
            send(USER)
        producer.flush()
        deadline = time.monotonic() + 60
        while not _files_holding(ck, USER.encode()) and time.monotonic() < deadline:
            time.sleep(1)
        assert _files_holding(ck, USER.encode()), "the user's state reached a checkpoint"
        send(USER, "forget_user")
        producer.flush()
        forgot = time.monotonic()
        gone_after = None
        while time.monotonic() - forgot < 40:
            for k in range(20):  # other users keep writing (and so flushing and compacting) as in production
                send(f"other-{k}")
            producer.flush()
            time.sleep(1)
            if not _files_holding(ck, USER.encode()):
                gone_after = time.monotonic() - forgot
                break
        assert job.alive(), job.log_tail()
    producer.close()
    print(json.dumps({"checkpoint_interval_s": interval_s, "gone_after_s": gone_after}))
    assert gone_after is not None, f"the forgotten user is still in {_files_holding(ck, USER.encode())}"
    # two checkpoints after the forget, each taking up to a few intervals on a loaded 2-core machine
    assert gone_after <= 2 * interval_s + 15, f"gone after {gone_after:.0f} s"
