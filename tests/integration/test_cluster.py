"""The job on a real Flink standalone cluster, the way users run it: ``streamrec cluster up`` (1 JobManager, 1
TaskManager with 2 slots), ``streamrec deploy`` at parallelism 2, lists for users on both subtasks (seen in the
Prometheus endpoint), ``streamrec stop --savepoint`` and ``deploy --from-savepoint`` at a new parallelism
keep every user's history, ``streamrec model publish`` swaps the model mid-stream without losing a list (read
through Flink's filesystems from a ``file://`` URI), a tampered bundle is refused on the control-result topic
while serving goes on, ``streamrec model shadow`` scores beside the served model, and ``cluster down`` leaves
nothing running."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from kafka import KafkaProducer

from deploy.harness.kafka_clients import assigned_consumer
from deploy.harness.local_kafka import free_port
from operators.bundle import load_bundle

pytestmark = pytest.mark.integration

STREAMREC = str(Path(sys.executable).parent / "streamrec")


def streamrec(*args: str, timeout_s: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([STREAMREC, *args], capture_output=True, text=True, timeout=timeout_s, check=False)
    assert proc.returncode == 0, f"streamrec {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr[-4000:]}"
    return proc


def retag(bundle: Path, into: Path, version: str) -> Path:
    """The same weights as a new bundle version (what a retrained model looks like to the job)."""
    shutil.copytree(bundle, into)
    manifest = json.loads((into / "manifest.json").read_text())
    manifest["version"] = version
    (into / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return into


def scrape(ports: range) -> str:
    text = []
    for port in ports:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:  # noqa: S310
                text.append(r.read().decode())
        except OSError:
            continue
    return "\n".join(text)


def gauge(text: str, name: str) -> dict[str, float]:
    """``{subtask_index: value}`` of a streamrec gauge of the recommend operator."""
    out = {}
    for line in text.splitlines():
        if line.startswith(f"flink_taskmanager_job_task_operator_streamrec_{name}{{"):
            labels, value = line.rsplit(" ", 1)
            subtask = labels.split('subtask_index="', 1)[1].split('"', 1)[0]
            out[subtask] = float(value)
    return out


def test_cluster_deploy_savepoint_resume_hot_swap_shadow_and_metrics(kafka, trained_bundle, tmp_path):
    v1 = load_bundle(trained_bundle).version
    v2 = retag(trained_bundle, tmp_path / "bundle-v2", "cluster-test-v2")
    rest_port, metrics_base = free_port(), free_port()
    metrics = range(metrics_base, metrics_base + 4)
    cluster_dir = tmp_path / "cluster"
    topics = {"input": "cl.events", "output": "cl.recs", "dead": "cl.dead", "control": "cl.control",
              "results": "cl.results", "shadow": "cl.shadow"}
    kafka.create_topics({topics["input"]: 2, topics["output"]: 2, topics["dead"]: 1})
    rest = f"127.0.0.1:{rest_port}"
    job_args = ["--bootstrap-servers", kafka.bootstrap, "--bundle", str(trained_bundle), "--checkpoint-dir",
                str(tmp_path / "ck"), "--input-topic", topics["input"], "--output-topic", topics["output"],
                "--dead-letter-topic", topics["dead"], "--control-topic", topics["control"],
                "--control-result-topic", topics["results"], "--shadow-topic", topics["shadow"],
                "--group-id", "it-cluster", "--trending", "enabled=false", "--top-k", "10"]
    up = json.loads(streamrec("cluster", "up", "--dir", str(cluster_dir), "--taskmanagers", "1", "--slots", "2",
                              "--rest-port", str(rest_port), "--metrics-ports",
                              f"{metrics.start}-{metrics.stop - 1}").stdout)
    state = json.loads((cluster_dir / "cluster.json").read_text())
    try:
        assert up["rest"] == rest and up["slots"] == 2
        job_id = streamrec("deploy", "--jobmanager", rest, *job_args, "--parallelism", "2").stdout.split()[0]
        producer = KafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
        consumer = assigned_consumer(kafka.bootstrap, [topics["output"]], from_beginning=True)
        got: dict[str, dict] = {}
        sent = [0]
        users = [f"cu{n}" for n in range(24)]
        vocab = load_bundle(trained_bundle).item_vocab

        def send_round(tag: str, to: list[str] | None = None) -> list[str]:
            ids = []
            for n, user in enumerate(to or users):
                sent[0] += 1
                doc = {"user_id": user, "item_id": vocab[(sent[0] * 7 + n) % len(vocab)], "event_type": "view",
                       "ts": int(time.time() * 1000), "event_id": f"{tag}-{user}"}
                producer.send(topics["input"], key=user.encode(), value=json.dumps(doc).encode())
                ids.append(doc["event_id"])
            producer.flush()
            return ids

        def wait_for(ids: list[str], timeout_s: float = 240) -> None:
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline and not all(i in got for i in ids):
                for records in consumer.poll(timeout_ms=300).values():
                    for r in records:
                        doc = json.loads(r.value)
                        got[doc["event_id"]] = doc
            missing = [i for i in ids if i not in got]
            assert not missing, f"no list for {len(missing)} events, e.g. {missing[:3]}"

        # lists flow; both subtasks serve (Prometheus: lists_emitted per subtask of the recommend operator)
        wait_for(send_round("r0"))
        for k in range(1, 3):
            wait_for(send_round(f"r{k}"))
        time.sleep(1.5)  # the job pushes its metrics at most once a second, at an event
        wait_for(send_round("r3"))
        # the counters reach Prometheus at a subtask's next event a second after its last push: other users'
        # events (the users above keep their histories) until both subtasks have pushed what they served
        others, deadline = [f"cx{n}" for n in range(24)], time.monotonic() + 60
        while True:
            text = scrape(metrics)
            lists = gauge(text, "lists_emitted")
            if (set(lists) == {"0", "1"} and min(lists.values()) > 0 and sum(lists.values()) >= 96
                    or time.monotonic() > deadline):
                break
            time.sleep(1.2)
            wait_for(send_round(f"tick{time.monotonic():.1f}", others))
        assert set(lists) == {"0", "1"} and min(lists.values()) > 0 and sum(lists.values()) >= 96, lists
        assert max(gauge(text, "latency_p99_ms").values()) > 0 and gauge(text, "model_p50_us")
        served = [line for line in text.splitlines() if "streamrec_model_version_serving_model{" in line]
        assert served and all(line.endswith(" 1.0") for line in served), served  # label: the version as Flink
        assert any(re.sub(r"[^A-Za-z0-9:_]", "_", v1) in line or v1 in line for line in served)  # writes it
        before = {u: got[f"r3-{u}"]["history_len"] for u in users}
        assert set(before.values()) == {4}

        # stop with a savepoint; resume it at parallelism 1: every user's history continues
        savepoint = streamrec("stop", "--jobmanager", rest, "--savepoint", str(tmp_path / "sp"), job_id).stdout.strip()
        assert savepoint.startswith("file:")
        job_id = streamrec("deploy", "--jobmanager", rest, "--from-savepoint", savepoint, *job_args,
                           "--parallelism", "1").stdout.split()[0]
        wait_for(send_round("r4"))
        assert {u: got[f"r4-{u}"]["history_len"] for u in users} == {u: n + 1 for u, n in before.items()}

        # hot swap mid-stream, the bundle read through Flink's filesystems: no list lost, versions switch
        results = assigned_consumer(kafka.bootstrap, [topics["results"]], from_beginning=True)
        streamrec("model", "publish", str(v2), "--uri", v2.as_uri(), "--bootstrap-servers", kafka.bootstrap,
                  "--control-topic", topics["control"])
        rounds = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            rounds.append(send_round(f"s{len(rounds)}"))
            wait_for(rounds[-1])
            if {got[i]["model_version"] for i in rounds[-1]} == {"cluster-test-v2"}:
                break
        versions = [got[i]["model_version"] for ids in rounds for i in ids]
        assert versions[-1] == "cluster-test-v2" and set(versions) <= {v1, "cluster-test-v2"}

        # the copy the workers read differs from the bundle that was verified and published (a corrupted
        # upload): refused with the reason; v2 keeps serving
        v3 = retag(trained_bundle, tmp_path / "bundle-v3", "cluster-test-v3")
        corrupted = tmp_path / "uploaded-v3"
        shutil.copytree(v3, corrupted)
        onnx = corrupted / "model.onnx"
        onnx.write_bytes(onnx.read_bytes()[:-64] + bytes(64))
        streamrec("model", "publish", str(v3), "--uri", str(corrupted), "--bootstrap-servers", kafka.bootstrap,
                  "--control-topic", topics["control"])
        verdicts: list[dict] = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not any(v["version"] == "cluster-test-v3" for v in verdicts):
            wait_for(send_round(f"t{len(verdicts)}-{time.monotonic():.0f}"))
            for records in results.poll(timeout_ms=500).values():
                verdicts.extend(json.loads(r.value) for r in records)
        assert any(v["version"] == "cluster-test-v2" and v["ok"] for v in verdicts), verdicts
        refused = [v for v in verdicts if v["version"] == "cluster-test-v3"]
        assert refused and not refused[0]["ok"] and "sha256 of model.onnx" in refused[0]["reason"], verdicts
        last = send_round("after-tamper")
        wait_for(last)
        assert {got[i]["model_version"] for i in last} == {"cluster-test-v2"}

        # a shadow model scores the same events onto the shadow topic; agreement shows in the metrics
        shadow = assigned_consumer(kafka.bootstrap, [topics["shadow"]], from_beginning=True)
        streamrec("model", "shadow", str(trained_bundle), "--bootstrap-servers", kafka.bootstrap,
                  "--control-topic", topics["control"])
        shadowed: list[dict] = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and len(shadowed) < len(users):
            wait_for(send_round(f"sh{len(shadowed)}-{time.monotonic():.0f}"))
            for records in shadow.poll(timeout_ms=500).values():
                shadowed.extend(json.loads(r.value) for r in records)
        assert len(shadowed) >= len(users) and {d["model_version"] for d in shadowed} == {v1}
        deadline = time.monotonic() + 30
        overlap = {}
        while time.monotonic() < deadline and not (overlap and all(v > 0 for v in overlap.values())):
            time.sleep(1)
            wait_for(send_round(f"m{time.monotonic():.0f}"))
            overlap = gauge(scrape(metrics), "shadow_overlap_at_k_pct")
        assert overlap and all(0 < v <= 100 for v in overlap.values()), overlap
        for c in (consumer, results, shadow):
            c.close()
        producer.close()
    finally:
        down = subprocess.run([STREAMREC, "cluster", "down", "--dir", str(cluster_dir)], capture_output=True,
                              text=True, timeout=120, check=False)
    assert down.returncode == 0, down.stderr
    for proc in state["processes"]:  # nothing left running: neither the leaders nor anything in their groups
        assert not Path(f"/proc/{proc['pid']}").exists() or "Z" in Path(f"/proc/{proc['pid']}/stat").read_text()
    status = subprocess.run([STREAMREC, "cluster", "status", "--dir", str(cluster_dir)], capture_output=True,
                            text=True, timeout=60, check=False)
    assert status.returncode == 3 and json.loads(status.stdout)["running"] is False
