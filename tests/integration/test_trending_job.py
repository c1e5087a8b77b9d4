"""In-stream trending and the control topic through the real job (``streamrec run``, real broker): accepted
events reach the item counts (keyed by item, in Flink state) and their boards come back to every recommender
subtask through the control topic; a user with no history gets the trending list with its reasons; an abuser's
quarantined events move no count; item rules published with ``streamrec rules`` take effect without a restart;
interests by category (``--catalog``) are on."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kafka import KafkaProducer

from deploy.harness.generator import write_catalog
from deploy.harness.job_process import JobProcess, wait_until_serving
from deploy.harness.kafka_clients import assigned_consumer
from operators.bundle import load_bundle
from tests.conftest import WORLD

pytestmark = pytest.mark.integration

STREAMREC = str(Path(sys.executable).parent / "streamrec")
TS = int(time.time() * 1000) - 600_000  # the boards decay to their newest event time: the readiness probe's (now)


def test_trending_feedback_control_rules_and_quarantine_in_the_job(kafka, trained_bundle, tmp_path):
    vocab = load_bundle(trained_bundle).item_vocab
    topics = {"input": "tr.events", "output": "tr.recs", "dead": "tr.dead", "control": "tr.control"}
    kafka.create_topics({topics["input"]: 2, topics["output"]: 2, topics["dead"]: 1})  # the job makes the control
    catalog = write_catalog(WORLD, tmp_path / "catalog.csv")
    args = ["--bootstrap-servers", kafka.bootstrap, "--bundle", str(trained_bundle), "--checkpoint-dir",
            str(tmp_path / "ck"), "--input-topic", topics["input"], "--output-topic", topics["output"],
            "--dead-letter-topic", topics["dead"], "--control-topic", topics["control"], "--top-k", "10",
            "--group-id", "it-trending", "--parallelism", "2", "--catalog", str(catalog),
            "--trending", "min_count=1", "--trending", "publish_every_ms=200", "--trending", "half_life_minutes=1440",
            "--abuse", "max_events_per_minute=5"]
    hot = vocab[40:52]
    with JobProcess(args, tmp_path / "logs") as job:
        wait_until_serving(job, kafka.bootstrap, topics["input"], topics["output"], timeout_s=240)
        consumer = assigned_consumer(kafka.bootstrap, [topics["output"], topics["dead"]], from_beginning=False)
        producer = KafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
        sent = [0]

        def send(user, item, kind, ts):
            sent[0] += 1
            doc = {"user_id": user, "item_id": item, "event_type": kind, "ts": ts, "event_id": f"tr-{sent[0]}"}
            producer.send(topics["input"], key=user.encode(), value=json.dumps(doc).encode())
            return doc["event_id"]

        got: dict[str, dict] = {}
        dead: list[dict] = []

        def poll(until, timeout_s=60):
            deadline = time.monotonic() + timeout_s
            while not until() and time.monotonic() < deadline:
                for records in consumer.poll(timeout_ms=200).values():
                    for r in records:
                        if b"__streamrec_probe__" in r.value:
                            continue
                        doc = json.loads(r.value)
                        if r.topic == topics["dead"]:
                            dead.append(doc)
                        else:
                            got[doc["event_id"]] = doc
            return until()

        for u in range(20):  # 20 users buy the same 12 items, 15 s apart in event time (under the rate limit)
            for j, item in enumerate(hot):
                send(f"buyer{u}", item, "purchase", TS + u * 1000 + j * 15_000)
        for n in range(30):  # an abuser: 30 views of one item within a second; from the 6th on, quarantined
            send("bot", vocab[7], "view", TS + n)
        producer.flush()
        assert poll(lambda: len(got) + len(dead) >= 270), (len(got), len(dead), job.log_tail())
        assert len(dead) == 25 and all(d["code"] == "quarantined" for d in dead)

        cold: dict = {}

        def trending_cold_list() -> bool:
            event_id = send(f"cold{sent[0]}", "not-in-the-catalog", "view", TS + 10**6)
            producer.flush()
            poll(lambda: event_id in got, timeout_s=10)
            doc = got.get(event_id)
            if doc and doc["strategy"] == "trending":
                cold.update(doc)
                return True
            time.sleep(0.5)
            return False

        deadline = time.monotonic() + 60
        while not trending_cold_list() and time.monotonic() < deadline:
            pass
        assert cold, "no trending list for a user without history within 60 s: " + job.log_tail()
        items = [i["item_id"] for i in cold["items"]]
        assert set(items) <= set(hot) and [i["reason"] for i in cold["items"]] == [{"trending": r}
                                                                                   for r in range(1, 11)]
        # the boards on the control topic: the quarantined views did not count (5 accepted views of 0.5 each)
        control = assigned_consumer(kafka.bootstrap, [topics["control"]], from_beginning=True)
        boards: dict[str, dict] = {}
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            for records in control.poll(timeout_ms=200).values():
                boards.update({r.key.decode(): json.loads(r.value) for r in records})
        control.close()
        counts = {item: count for b in boards.values() for item, count, _ in b["items"]}
        assert set(hot) <= set(counts) and min(counts[i] for i in hot) > 78  # 20 purchases of weight 4, none lost
        # (a subtask whose events stop still sends its combined counts), decayed < 1 % (half-life a day)
        assert counts.get(vocab[7], 0) < 3
        assert {b["of"] for b in boards.values()} == {2} and len(boards) >= 1

        # item rules through the control topic: the top trending item is blocked, without a restart
        proc = subprocess.run([STREAMREC, "rules", "--bootstrap-servers", kafka.bootstrap, "--control-topic",
                               topics["control"], "--blocked", items[0]], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        blocked: dict = {}

        def blocked_list() -> bool:
            event_id = send(f"cold{sent[0]}", "not-in-the-catalog", "view", TS + 10**6)
            producer.flush()
            poll(lambda: event_id in got, timeout_s=10)
            doc = got.get(event_id)
            if doc and items[0] not in [i["item_id"] for i in doc["items"]]:
                blocked.update(doc)
                return True
            time.sleep(0.5)
            return False

        deadline = time.monotonic() + 30
        while not blocked_list() and time.monotonic() < deadline:
            pass
        assert blocked, "the blocklist from the control topic did not take effect within 30 s"
        after = [i["item_id"] for i in blocked["items"]]
        assert blocked["strategy"] == "trending" and set(after) <= set(hot) - {items[0]} and len(after) == 10
        producer.close()
        consumer.close()
        assert job.alive(), job.log_tail()
    task_log = (tmp_path / "logs" / "streamrec-job.log").read_text("utf-8")
    assert '"msg": "trending open"' in task_log and '"source": "control topic"' in task_log
