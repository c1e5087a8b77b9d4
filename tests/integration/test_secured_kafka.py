"""The job against a broker that only speaks SASL_SSL (SCRAM-SHA-512 over TLS, certificates generated for the
test): lists flow, the password appears in no log, and a wrong password fails fast with what to fix."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest
from kafka import KafkaProducer

from deploy.harness.job_process import PROBE_USER, JobProcess, wait_until_serving
from deploy.harness.kafka_clients import assigned_consumer
from deploy.harness.local_kafka import LocalKafka
from deploy.harness.paths import streamrec_executable

pytestmark = pytest.mark.integration

USER, PASSWORD = "streamrec-job", "correct horse battery staple 42"


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    broker = LocalKafka(tmp_path_factory.mktemp("kafka-sasl"), sasl_ssl=(USER, PASSWORD))
    broker.start()
    try:
        broker.create_topics({"sec.in": 2, "sec.out": 2, "sec.dead": 1})
        yield broker
    finally:
        broker.stop()


def job_args(kafka, bundle, work):
    return ["--bootstrap-servers", kafka.bootstrap, "--bundle", str(bundle), "--checkpoint-dir", str(work / "ck"),
            "--input-topic", "sec.in", "--output-topic", "sec.out", "--dead-letter-topic", "sec.dead",
            "--group-id", "sec", "--kafka", "security_protocol=SASL_SSL", "--kafka", f"username={USER}",
            "--kafka", f"ssl_ca_file={kafka.ca_file}"]


def test_plaintext_clients_are_refused(secured):
    from kafka.errors import KafkaError

    with pytest.raises(KafkaError):
        KafkaProducer(bootstrap_servers=secured.bootstrap, request_timeout_ms=3000, max_block_ms=3000).close()


def test_lists_flow_over_sasl_ssl_and_the_password_is_never_logged(secured, trained_bundle, tmp_path, monkeypatch):
    monkeypatch.setenv("STREAMREC_KAFKA_PASSWORD", PASSWORD)
    client = secured.client_config()
    with JobProcess(job_args(secured, trained_bundle, tmp_path), tmp_path / "logs") as job:
        wait_until_serving(job, secured.bootstrap, "sec.in", "sec.out", timeout_s=240, client_config=client)
        producer = KafkaProducer(bootstrap_servers=secured.bootstrap, acks="all", **client)
        for i in range(20):
            event = {"user_id": f"s{i % 4}", "item_id": f"i{i}", "event_type": "view",
                     "ts": 1_767_225_600_000 + i, "event_id": f"sec-{i}"}
            producer.send("sec.in", key=event["user_id"].encode(), value=json.dumps(event).encode())
        producer.flush()
        producer.close()
        consumer = assigned_consumer(secured.bootstrap, ["sec.out"], from_beginning=True, **client)
        want = {f"sec-{i}" for i in range(20)}
        got, deadline = set(), time.monotonic() + 120
        while not want <= got and time.monotonic() < deadline:  # (the probe's lists are in `got` too)
            for records in consumer.poll(timeout_ms=500).values():
                got |= {json.loads(r.value)["event_id"] for r in records} - {None}
        consumer.close()
        assert want <= {e for e in got if not e.startswith(PROBE_USER)}
        assert job.alive()
        assert "Kafka SASL_SSL as 'streamrec-job' (SCRAM-SHA-512)" in job.log_file.read_text()
    logs = [p for p in (tmp_path / "logs").rglob("*") if p.is_file()]
    assert len(logs) >= 3
    for path in logs:
        assert PASSWORD.encode() not in path.read_bytes(), path


def test_a_wrong_password_fails_fast_with_what_to_fix(secured, trained_bundle, tmp_path):
    env = {**os.environ, "STREAMREC_KAFKA_PASSWORD": "not the password"}
    t0 = time.monotonic()
    done = subprocess.run([streamrec_executable(), "run", *job_args(secured, trained_bundle, tmp_path)],  # noqa: S603
                          env=env, capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path)
    took = time.monotonic() - t0
    assert done.returncode == 2, done.stderr[-2000:]
    assert "cannot log in to Kafka" in done.stderr and "STREAMREC_KAFKA_PASSWORD" in done.stderr
    assert "invalid credentials" in done.stderr
    assert "not the password" not in done.stderr + done.stdout
    assert took < 60  # no JVM was started: fails in seconds, not after a restart loop


def test_the_password_cannot_be_given_on_the_command_line(secured, trained_bundle, tmp_path):
    done = subprocess.run([streamrec_executable(), "run", *job_args(secured, trained_bundle, tmp_path),  # noqa: S603
                           "--kafka", "password=hunter2"], capture_output=True, text=True, timeout=120,
                          check=False, cwd=tmp_path)
    assert done.returncode == 2 and "STREAMREC_KAFKA_PASSWORD" in done.stderr and "hunter2" not in done.stderr
