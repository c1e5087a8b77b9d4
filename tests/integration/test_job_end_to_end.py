"""Kafka -> Flink MiniCluster job -> Kafka, checked against the offline path with the same bundle."""

from __future__ import annotations

import json
import time
from collections import defaultdict

import pytest
from kafka import KafkaProducer

from deploy.harness.generator import MALFORMED_KINDS, split_by_time, to_records
from deploy.harness.job_process import PROBE_USER as PROBE
from deploy.harness.job_process import JobProcess, wait_until_serving
from deploy.harness.kafka_clients import assigned_consumer
from operators.bundle import load_bundle
from operators.inference import OnnxModel
from operators.rerank import RerankConfig
from operators.serving import LIST, ServingCore

pytestmark = pytest.mark.integration

TOPICS = {"input": "it.events", "output": "it.recs", "dead": "it.dead"}
TOP_K = 10


def send_all(bootstrap: str, topic: str, records: list) -> list:
    """Send every record in order (one request in flight); ``(record, its metadata)`` for each."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", max_in_flight_requests_per_connection=1)
    futures = [(rec, producer.send(topic, key=rec.key, value=rec.value)) for rec in records]
    producer.flush()
    sent = [(rec, fut.get(timeout=30)) for rec, fut in futures]
    producer.close()
    return sent


def consume_all(bootstrap: str, topics: list[str], want: dict[str, int], timeout_s: float) -> dict[str, list]:
    """Read until every topic has its expected count, then 2 s more so that duplicates would show up too."""
    consumer = assigned_consumer(bootstrap, topics, from_beginning=True)
    got: dict[str, list] = defaultdict(list)
    deadline = time.monotonic() + timeout_s
    drain_until = None
    try:
        while time.monotonic() < (drain_until or deadline):
            if drain_until is None and all(len(got[t]) >= n for t, n in want.items()):
                drain_until = time.monotonic() + 2.0
            for records in consumer.poll(timeout_ms=200).values():
                for record in records:
                    doc = json.loads(record.value)
                    if doc.get("user_id") != PROBE:
                        got[record.topic].append((record, doc))
    finally:
        consumer.close()
    return got


@pytest.fixture(scope="module", params=[1, 16], ids=["one-event-per-call", "micro-batch-16"])
def run(request, kafka, trained_bundle, world_events, tmp_path_factory):
    """Run the job (without, then with cross-key micro-batching), replay ~1,500 events of ~200 users with
    malformed records mixed in, collect outputs. Every test below holds in both modes."""
    batch = request.param
    topics = {name: f"{topic}.b{batch}" for name, topic in TOPICS.items()}
    kafka.create_topics({topics["input"]: 4, topics["output"]: 4, topics["dead"]: 1})
    _, replay = split_by_time(world_events)
    users = sorted({e["user_id"] for e in replay})[:200]
    chosen = [e for e in replay if e["user_id"] in set(users)][:1500]
    records = to_records(chosen, malformed_share=0.05, seed=3)
    work = tmp_path_factory.mktemp("job")
    args = ["--bootstrap-servers", kafka.bootstrap, "--bundle", str(trained_bundle),
            "--checkpoint-dir", str(work / "checkpoints"), "--input-topic", topics["input"],
            "--output-topic", topics["output"], "--dead-letter-topic", topics["dead"],
            "--top-k", str(TOP_K), "--group-id", f"it-job-{batch}", "--micro-batch", str(batch),
            # the in-stream neighbour counts depend on the order in which different users' events arrive (four
            # partitions here, one order in the offline loop): off, so lists compare list for list
            "--rerank", "neighbor_refresh=false"]
    with JobProcess(args, work / "logs") as job:
        wait_until_serving(job, kafka.bootstrap, topics["input"], topics["output"], timeout_s=240)
        sent = send_all(kafka.bootstrap, topics["input"], records)
        n_valid = sum(rec.valid for rec in records)
        got = consume_all(kafka.bootstrap, [topics["output"], topics["dead"]],
                          {topics["output"]: n_valid, topics["dead"]: len(records) - n_valid}, timeout_s=180)
        assert job.alive(), job.log_tail()
    return {"sent": sent, "lists": [d for _, d in got[topics["output"]]], "dead": got[topics["dead"]],
            "topics": topics, "batch": batch, "task_log": job.task_log}


def test_every_valid_event_yields_exactly_one_list(run):
    valid_ids = [rec.event["event_id"] for rec, _ in run["sent"] if rec.valid]
    list_ids = [doc["event_id"] for doc in run["lists"]]
    assert len(valid_ids) > 1000
    assert sorted(list_ids) == sorted(valid_ids)


def test_lists_are_well_formed(run, trained_bundle):
    version = load_bundle(trained_bundle).version
    for doc in run["lists"]:
        assert doc["model_version"] == version
        assert 0 < len(doc["items"]) <= TOP_K
        scores = [item["score"] for item in doc["items"]]
        assert scores == sorted(scores, reverse=True)
        assert doc["emit_ts"] >= doc["source_ts"] > 0
        assert doc["provider"] == "CPUExecutionProvider"
        assert doc["history_len"] >= 1


def test_no_list_contains_an_item_the_user_already_interacted_with(run):
    seen: dict[str, set[str]] = defaultdict(set)
    before: dict[str, set[str]] = {}
    for rec, _ in run["sent"]:
        if rec.valid:
            seen[rec.event["user_id"]].add(rec.event["item_id"])
            before[rec.event["event_id"]] = set(seen[rec.event["user_id"]])
    for doc in run["lists"]:
        shown = {item["item_id"] for item in doc["items"]}
        assert not shown & before[doc["event_id"]], doc


def test_malformed_events_all_reach_the_dead_letter_topic_with_reason_and_offset(run):
    bad = {(meta.topic, meta.partition, meta.offset): rec for rec, meta in run["sent"] if not rec.valid}
    assert len(bad) > 30
    dead = {}
    for record, doc in run["dead"]:
        src = doc["source"]
        dead[(src["topic"], src["partition"], src["offset"])] = doc
        assert record.key.decode() == f"{src['topic']}:{src['partition']}:{src['offset']}"
    assert set(dead) == set(bad)
    for position, rec in bad.items():
        doc = dead[position]
        assert doc["reason"] and doc["code"] == MALFORMED_KINDS[rec.kind], (rec.kind, doc)
        if doc["raw_encoding"] == "utf-8":
            assert doc["raw"] == rec.value.decode("utf-8")
    assert {rec.kind for rec in bad.values()} == set(MALFORMED_KINDS)


def test_poison_records_never_fail_a_task(run):
    """Poison (lone surrogates, float and 200-digit ids, control characters, NaN, deep nesting, 5,000-digit
    numbers) once passed validation and restarted every task; now each is a dead letter (above), every valid
    event around it got its list (above), and Flink never restarted anything."""
    flink_logs = sorted(run["task_log"].parent.glob("flink-*.log"))
    assert flink_logs, list(run["task_log"].parent.iterdir())
    text = "\n".join(path.read_text(errors="replace") for path in flink_logs)
    assert "switched from INITIALIZING to RUNNING" in text  # the log that would record a restart
    assert "to RESTARTING" not in text and "switched from RUNNING to FAILED" not in text
    assert not [line for line in run["task_log"].read_text().splitlines() if '"level": "ERROR"' in line]


def test_streamed_lists_equal_the_offline_core_for_the_same_events(run, trained_bundle):
    """The same serving core, driven without Flink and Kafka (state in a dict), gives the same lists."""
    bundle = load_bundle(trained_bundle)
    core = ServingCore(OnnxModel(bundle, providers=["CPUExecutionProvider"]), top_k=TOP_K, history_len=200,
                       input_topic=run["topics"]["input"], rerank=RerankConfig(neighbor_refresh=False))
    by_event = {doc["event_id"]: doc for doc in run["lists"]}
    store: dict[str, bytes] = {}
    compared = 0
    for rec, meta in run["sent"]:
        out = core.process(rec.key.decode(), rec.value, meta.partition, meta.offset, meta.timestamp, store.get(
            rec.key.decode()), now_ms=meta.timestamp)
        if out.kind != LIST:
            assert not rec.valid
            continue
        store[rec.key.decode()] = out.state
        expected = json.loads(out.value)
        streamed = by_event[expected["event_id"]]
        assert [i["item_id"] for i in streamed["items"]] == [i["item_id"] for i in expected["items"]]
        assert [i["score"] for i in streamed["items"]] == pytest.approx([i["score"] for i in expected["items"]],
                                                                        abs=1e-5)
        for field in ("strategy", "history_len", "trigger_item_id", "event_ts", "source_ts", "model_version"):
            assert streamed[field] == expected[field]
        compared += 1
    assert compared > 1000
    if run["batch"] > 1:  # the job really scored several users' events per model call
        assert '"first cross-key micro-batch"' in run["task_log"].read_text("utf-8")
    assert core.counts["steps"] > 1000  # the recurrent one-step path really ran


def test_a_job_whose_python_workers_cannot_start_exits_non_zero_with_the_cause(kafka, trained_bundle, tmp_path):
    """The failure users hit when workers cannot import pemja: the job must give up and say why, not loop.

    The workers' path starts with a directory whose ``pemja`` fails to import (a worker environment with a broken
    or mismatched pemja); the client's own check passes, so only the workers fail. (A path without site-packages
    no longer breaks them: the embedded interpreter finds the virtualenv's site-packages from
    ``python.executable``.)"""
    kafka.create_topics({"it.broken.in": 1, "it.broken.out": 1, "it.broken.dead": 1})
    broken = tmp_path / "broken" / "pemja"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text('raise ImportError("this pemja is broken (test)")\n', "utf-8")
    args = ["--bootstrap-servers", kafka.bootstrap, "--bundle", str(trained_bundle), "--checkpoint-dir",
            str(tmp_path / "ck"), "--input-topic", "it.broken.in", "--output-topic", "it.broken.out",
            "--dead-letter-topic", "it.broken.dead", "--group-id", "it-broken", "--max-restarts", "1",
            "--conf", f"python.pythonpath={broken.parent}"]
    job = JobProcess(args, tmp_path / "logs").start()
    proc = job.proc
    try:
        proc.wait(timeout=240)
    finally:
        job.stop()
    output = job.log_file.read_text("utf-8", errors="replace")
    assert proc.returncode == 1, output[-3000:]
    assert "streamrec: error: job streamrec-recommend failed after 1 restart attempts" in output
    assert "pemja" in output.split("streamrec: error:")[-1]


def _trending_touched(doc: dict) -> bool:
    return doc["strategy"] == "trending" or any("trending" in (i.get("reason") or {}) for i in doc["items"])


def test_with_every_default_on_the_lists_equal_the_offline_core_until_trending_touches_them(
        kafka, trained_bundle, world_events, tmp_path):
    """The comparison above switches the in-stream neighbour counts off (four partitions: another arrival order
    of different users' events than the offline loop's). With one partition the arrival order is fixed, so here
    every default is on: micro-batching (32), in-stream neighbour counts, trending, interests, explanations.
    Trending boards reach the job at processing-time moments; a list no board touched (no item with a trending
    reason, not a trending cold-start list) is the list without trending (a bonus lifts only the items it
    reasons on), so every user's lists are compared with the offline core, list for list, up to the first one a
    board touched (the lists shown feed the later ones)."""
    from operators.config import JobConfig
    from operators.trending import TrendingConfig

    topics = {name: f"{topic}.defaults" for name, topic in TOPICS.items()}
    kafka.create_topics({topics["input"]: 1, topics["output"]: 1, topics["dead"]: 1})
    _, replay = split_by_time(world_events)
    users = set(sorted({e["user_id"] for e in replay})[:200])
    records = to_records([e for e in replay if e["user_id"] in users][:1500], malformed_share=0.0, seed=4)
    args = ["--bootstrap-servers", kafka.bootstrap, "--bundle", str(trained_bundle),
            "--checkpoint-dir", str(tmp_path / "checkpoints"), "--input-topic", topics["input"],
            "--output-topic", topics["output"], "--dead-letter-topic", topics["dead"], "--top-k", str(TOP_K),
            "--group-id", "it-job-defaults"]
    with JobProcess(args, tmp_path / "logs") as job:
        wait_until_serving(job, kafka.bootstrap, topics["input"], topics["output"], timeout_s=240)
        sent = send_all(kafka.bootstrap, topics["input"], records)
        got = consume_all(kafka.bootstrap, [topics["output"]], {topics["output"]: len(records)}, timeout_s=180)
        assert job.alive(), job.log_tail()
    streamed = {doc["event_id"]: doc for _, doc in got[topics["output"]]}
    cfg = JobConfig(bootstrap_servers=kafka.bootstrap, bundle_path=str(trained_bundle), checkpoint_dir="-",
                    input_topic=topics["input"], top_k=TOP_K, onnx_providers=("CPUExecutionProvider",),
                    trending=TrendingConfig(enabled=False))
    core = ServingCore.from_config(cfg)
    assert core.stream_neighbors is not None  # the in-stream neighbour counts are on, as in the job
    store: dict[str, bytes] = {}
    touched: set[str] = set()
    compared = 0
    for rec, meta in sorted(sent, key=lambda s: s[1].offset):  # the one partition's order: the job's order
        user = rec.key.decode()
        out = core.process(user, rec.value, meta.partition, meta.offset, meta.timestamp, store.get(user),
                           now_ms=meta.timestamp)
        assert out.kind == LIST
        store[user] = out.state
        expected = json.loads(out.value)
        doc = streamed[expected["event_id"]]
        for field in ("history_len", "trigger_item_id", "event_ts", "model_version"):  # order-independent parts
            assert doc[field] == expected[field], field
        if user in touched or _trending_touched(doc):
            touched.add(user)
            continue
        assert [(i["item_id"], i.get("reason")) for i in doc["items"]] == \
            [(i["item_id"], i.get("reason")) for i in expected["items"]], expected["event_id"]
        assert [i["score"] for i in doc["items"]] == pytest.approx([i["score"] for i in expected["items"]], abs=1e-5)
        assert doc["strategy"] == expected["strategy"]
        compared += 1
    assert compared > 1000, (compared, len(touched))
    assert core.counts["steps"] > 1000
    assert sum(d["strategy"] == "neighbors" for d in streamed.values()) > 0  # the neighbour path was exercised
