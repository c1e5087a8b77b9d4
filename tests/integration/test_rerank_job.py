"""Re-ranking and privacy through the real job (``streamrec run``, real broker): repeat suppression, reasons,
``forget_user``, a runtime blocklist update, the abuse quarantine and pseudonymised user ids on the output
topic."""

from __future__ import annotations

import json
import time

import pytest
from kafka import KafkaProducer

from deploy.harness.job_process import JobProcess, wait_until_serving
from deploy.harness.kafka_clients import assigned_consumer
from operators.bundle import load_bundle
from operators.serving import pseudonym

pytestmark = pytest.mark.integration

SECRET = "integration-test-secret-0123456789"
TS = 1_767_225_600_000


def test_repeat_suppression_forget_user_and_pseudonyms_in_the_job(kafka, trained_bundle, tmp_path, monkeypatch):
    vocab = load_bundle(trained_bundle).item_vocab
    topics = {"input": "rr.events", "output": "rr.recs", "dead": "rr.dead", "quarantine": "rr.quarantine"}
    kafka.create_topics({topics["input"]: 2, topics["output"]: 2, topics["dead"]: 1, topics["quarantine"]: 1})
    monkeypatch.setenv("STREAMREC_USER_ID_SECRET", SECRET)  # the job process inherits the environment
    args = ["--bootstrap-servers", kafka.bootstrap, "--bundle", str(trained_bundle), "--checkpoint-dir",
            str(tmp_path / "ck"), "--input-topic", topics["input"], "--output-topic", topics["output"],
            "--dead-letter-topic", topics["dead"], "--top-k", "10", "--group-id", "it-rerank",
            "--rerank", "repeat_penalty=10", "--rerank", "neighbor_cold_start=0",  # the model's lists
            "--pseudonymize-users", "--item-rules", str(tmp_path / "rules.json"),
            "--quarantine-topic", topics["quarantine"], "--abuse", "max_events_per_minute=5"]
    events = [("ra", vocab[3], "view"), ("ra", vocab[5], "view"), ("ra", vocab[5], "click"), ("ra", vocab[5], "click"),
              ("rb", vocab[7], "view"), ("rb", vocab[8], "view"), ("rb", None, "forget_user"), ("rb", vocab[9], "view"),
              ("rc", "not-in-the-catalog", "view")] + [("rq", vocab[10 + n], "view") for n in range(8)]  # a burst
    with JobProcess(args, tmp_path / "logs") as job:
        wait_until_serving(job, kafka.bootstrap, topics["input"], topics["output"], timeout_s=240)
        consumer = assigned_consumer(kafka.bootstrap, [topics["output"], topics["dead"], topics["quarantine"]],
                                     from_beginning=False)
        producer = KafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all",
                                 max_in_flight_requests_per_connection=1)

        def send(batch, first):
            for n, (user, item, kind) in enumerate(batch, start=first):
                doc = {"user_id": user, "event_type": kind, "ts": TS + n, "event_id": f"rr-{n}"}
                if item is not None:
                    doc["item_id"] = item
                producer.send(topics["input"], key=user.encode(), value=json.dumps(doc).encode())
            producer.flush()

        def collect(n, got):
            deadline = time.monotonic() + 120
            while len(got) < n and time.monotonic() < deadline:
                for records in consumer.poll(timeout_ms=200).values():
                    got += [(r.topic, json.loads(r.value)) for r in records if b"__streamrec_probe__" not in r.value]
            return got

        send(events, 0)
        got = collect(16, [])
        popular = [i["item_id"] for _, d in got if d.get("event_id") == "rr-8" for i in d["items"]]
        # block the most popular item while the job runs: the next cold-start list goes without it
        rules = tmp_path / "rules.json"
        (tmp_path / "rules.tmp").write_text(json.dumps({"blocked": [popular[0]]}))
        (tmp_path / "rules.tmp").rename(rules)
        time.sleep(2.0)
        send([("rd", "not-in-the-catalog-either", "view")], 17)
        got = collect(17, got)
        time.sleep(2)  # anything extra (a list for the forget event, a dead letter) would show up now
        got += [(r.topic, json.loads(r.value)) for records in consumer.poll(timeout_ms=500).values()
                for r in records if b"__streamrec_probe__" not in r.value]
        producer.close()
        consumer.close()
        assert job.alive(), job.log_tail()
    assert not [doc for topic, doc in got if topic == topics["dead"]]  # nothing dead-lettered
    quarantined = [doc for topic, doc in got if topic == topics["quarantine"]]
    lists = {doc["event_id"]: doc for topic, doc in got if topic == topics["output"]}
    # one list per event, none for forget_user nor for the burst's 6th to 8th events, which are quarantined
    assert sorted(lists) == sorted(f"rr-{n}" for n in (0, 1, 2, 3, 4, 5, 7, 8, 9, 10, 11, 12, 13, 17))
    assert len(quarantined) == 3 and all(d["code"] == "quarantined" for d in quarantined)
    assert {json.loads(d["raw"])["event_id"] for d in quarantined} == {"rr-14", "rr-15", "rr-16"}
    # redacted (pseudonyms on): the payload and the reason carry the pseudonym, never the raw id
    rq = pseudonym(SECRET.encode(), "rq")
    assert all(json.loads(d["raw"])["user_id"] == rq and d["raw_encoding"] == "utf-8+redacted" for d in quarantined)
    assert all(rq in d["reason"] and "'rq'" not in d["reason"] for d in quarantined)
    # pseudonyms, never the raw ids
    assert lists["rr-0"]["user_id"] == pseudonym(SECRET.encode(), "ra")
    assert not {"ra", "rb"} & {d["user_id"] for d in lists.values()}
    # the clicks repeat an item already in the window: the model does not move, the lists still change
    first, second = ([i["item_id"] for i in lists[e]["items"]] for e in ("rr-1", "rr-2"))
    assert second != first and second[0] != first[0]
    assert all("because" in i["reason"] for i in lists["rr-2"]["items"])
    # forget_user: rb starts over
    assert lists["rr-5"]["history_len"] == 2 and lists["rr-7"]["history_len"] == 1
    # the blocklist took effect without a restart
    before = [i["item_id"] for i in lists["rr-8"]["items"]]
    after = [i["item_id"] for i in lists["rr-17"]["items"]]
    assert lists["rr-17"]["strategy"] == "popular" and before[0] not in after and after[:9] == before[1:10]
