"""The job on a local standalone cluster, timed the way users meet it: ``streamrec cluster up``, ``streamrec
deploy`` (submit to first list), a savepoint of 10k users (``streamrec stop``) and the resume, a model swap
(``streamrec model publish``: publish to first list from the new version), and latency at a fixed rate next to
a bare Kafka relay (produce -> consume) on the same broker in the same run.

    python -m perf.bench_cluster --bundle DIR [--users 10000] [--rate 1000] [--seconds 30] [--out FILE.json]

``--taskmanagers N --slots S --parallelism P --load-only`` compares layouts: only the submit and the load phase
(``--events-per-user`` events per user, sent as fast as the producer goes, lists counted as they come) run,
which is the job's saturation throughput on that layout (``perf/README.md``, "Every core").
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from kafka import KafkaProducer
from tqdm import tqdm

from deploy.harness.kafka_clients import assigned_consumer
from deploy.harness.local_kafka import LocalKafka, free_port
from operators.bundle import load_bundle

STREAMREC = str(Path(sys.executable).parent / "streamrec")


def run(*args: str, timeout_s: float = 600) -> tuple[str, float]:
    t0 = time.monotonic()
    proc = subprocess.run([STREAMREC, *args], capture_output=True, text=True, timeout=timeout_s, check=False)
    if proc.returncode != 0:
        msg = f"streamrec {args[0]} failed:\n{proc.stderr[-3000:]}"
        raise SystemExit(msg)
    return proc.stdout.strip(), time.monotonic() - t0


def quantiles(ms: list[float]) -> dict:
    a = np.asarray(ms)
    if not len(a):
        return {"n": 0}
    return {"n": len(a), "p50_ms": round(float(np.percentile(a, 50)), 1),
            "p99_ms": round(float(np.percentile(a, 99)), 1), "max_ms": round(float(a.max()), 1)}


def paced(producer: KafkaProducer, topic: str, docs: list[dict], rate: float, sent_at: dict) -> float:
    """Send at ``rate`` per second; returns the achieved rate."""
    t0 = time.monotonic()
    for n, doc in enumerate(docs):
        wait = t0 + n / rate - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        sent_at[doc["event_id"]] = time.time() * 1000
        producer.send(topic, key=doc["user_id"].encode(), value=json.dumps(doc).encode())
    producer.flush()
    return len(docs) / max(time.monotonic() - t0, 1e-9)


def paced_while_collecting(producer, topic, docs, rate, sent_at, consumer, received, timeout_s) -> float:
    """Send at ``rate`` on a thread while this one consumes (latency is not inflated by a late poll)."""
    achieved = [0.0]
    sender = threading.Thread(target=lambda: achieved.__setitem__(0, paced(producer, topic, docs, rate, sent_at)))
    sender.start()
    collect(consumer, {d["event_id"] for d in docs}, timeout_s, received)
    sender.join()
    return achieved[0]


def collect(consumer, want: set[str], timeout_s: float, received: dict, key: str = "event_id") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not want <= set(received):
        for records in consumer.poll(timeout_ms=200).values():
            now = time.time() * 1000
            for r in records:
                doc = json.loads(r.value)
                received.setdefault(doc.get(key), (now, doc))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m perf.bench_cluster", description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", required=True)
    p.add_argument("--users", type=int, default=10_000)
    p.add_argument("--rate", type=float, default=1_000.0)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--taskmanagers", type=int, default=1)
    p.add_argument("--slots", type=int, default=2, help="task slots per TaskManager")
    p.add_argument("--parallelism", type=int, default=2)
    p.add_argument("--events-per-user", type=int, default=1, help="load phase: events per user")
    p.add_argument("--load-only", action="store_true",
                   help="submit and the load phase only (no savepoint, resume, rate or swap phases)")
    p.add_argument("--out", default="perf/results/cluster.json")
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="streamrec-bench-cluster-"))
    vocab = load_bundle(args.bundle).item_vocab
    v2 = work / "bundle-v2"
    shutil.copytree(args.bundle, v2)
    manifest = json.loads((v2 / "manifest.json").read_text())
    manifest["version"] = "bench-v2"
    (v2 / "manifest.json").write_text(json.dumps(manifest))
    out: dict = {"users": args.users, "rate": args.rate, "seconds": args.seconds, "taskmanagers": args.taskmanagers,
                 "slots": args.slots, "parallelism": args.parallelism, "events_per_user": args.events_per_user}
    rest = f"127.0.0.1:{free_port()}"
    base = free_port()
    with LocalKafka(work / "kafka") as kafka:
        kafka.create_topics({"b.events": 2, "b.recs": 2, "b.dead": 1, "b.relay": 2})
        up, out["cluster_up_s"] = run("cluster", "up", "--dir", str(work / "cluster"), "--rest-port",
                                      rest.split(":")[1], "--metrics-ports", f"{base}-{base + 3}",
                                      "--taskmanagers", str(args.taskmanagers), "--slots", str(args.slots))
        try:
            job = ["--bootstrap-servers", kafka.bootstrap, "--bundle", str(Path(args.bundle).resolve()),
                   "--checkpoint-dir", str(work / "ck"), "--input-topic", "b.events", "--output-topic", "b.recs",
                   "--dead-letter-topic", "b.dead", "--control-topic", "b.control", "--control-result-topic",
                   "b.results", "--shadow-topic", "b.shadow", "--parallelism", str(args.parallelism),
                   "--group-id", "bench-cluster",
                   "--trending", "enabled=false"]
            producer = KafkaProducer(bootstrap_servers=kafka.bootstrap, acks=1, linger_ms=1)
            recs = assigned_consumer(kafka.bootstrap, ["b.recs"], from_beginning=True)
            t_submit = time.monotonic()
            job_id, out["deploy_s"] = run("deploy", "--jobmanager", rest, *job)
            job_id = job_id.split()[0]
            got: dict = {}
            n = 0
            while "probe" not in {d["user_id"] for _, d in got.values()} and time.monotonic() - t_submit < 300:
                n += 1
                paced(producer, "b.events", [{"user_id": "probe", "item_id": vocab[0], "event_type": "view",
                                              "ts": int(time.time() * 1000), "event_id": f"probe-{n}"}], 1e9, {})
                collect(recs, {f"probe-{n}"}, 1.0, got)
            out["submit_to_first_list_s"] = round(time.monotonic() - t_submit, 1)
            # every user's events (one each by default), as fast as the job takes them
            docs = [{"user_id": f"u{u}", "item_id": vocab[(u * 7 + k * 31) % len(vocab)], "event_type": "view",
                     "ts": int(time.time() * 1000) + k, "event_id": f"load-{u}-{k}"}
                    for k in range(args.events_per_user) for u in range(args.users)]
            t0 = time.monotonic()
            for doc in tqdm(docs, desc="load", unit="ev"):
                producer.send("b.events", key=doc["user_id"].encode(), value=json.dumps(doc).encode())
            producer.flush()
            collect(recs, {d["event_id"] for d in docs}, 900, got)
            out["load_lists"] = sum(1 for d in docs if d["event_id"] in got)
            out["load_throughput_per_s"] = round(out["load_lists"] / (time.monotonic() - t0), 1)
            load_checks: dict = {}
            if args.load_only:
                load_checks = {"all_load_lists": out["load_lists"] == len(docs)}
            else:
                stopped, out["stop_with_savepoint_s"] = run("stop", "--jobmanager", rest, "--savepoint",
                                                            str(work / "sp"), job_id)
                savepoint = stopped.split()[0]
                local = Path(savepoint.removeprefix("file:"))
                out["savepoint_bytes"] = sum(f.stat().st_size for f in local.rglob("*") if f.is_file())
                t_resume = time.monotonic()
                job_id, _ = run("deploy", "--jobmanager", rest, "--from-savepoint", savepoint, *job)
                check = [{"user_id": f"u{u}", "item_id": vocab[3], "event_type": "view", "ts": int(time.time() * 1000),
                          "event_id": f"resume-{u}"} for u in range(0, args.users, max(args.users // 50, 1))]
                paced(producer, "b.events", check, 100, {})
                collect(recs, {d["event_id"] for d in check}, 300, got)
                out["resume_to_lists_s"] = round(time.monotonic() - t_resume, 1)
                out["history_kept"] = all(got[d["event_id"]][1]["history_len"] == 2 for d in check
                                          if d["event_id"] in got) and all(d["event_id"] in got for d in check)
                # latency at the rate, beside a bare relay through the same broker
                sent: dict = {}
                steady = [{"user_id": f"u{i % args.users}", "item_id": vocab[(i * 13) % len(vocab)],
                           "event_type": "view", "ts": int(time.time() * 1000), "event_id": f"rate-{i}"}
                          for i in range(int(args.rate * args.seconds))]
                out["achieved_send_rate"] = round(paced_while_collecting(producer, "b.events", steady, args.rate, sent,
                                                                         recs, got, 600), 1)
                # sent (wall clock) -> the list's emit_ts (the job's wall clock, same machine)
                out["job_latency"] = quantiles([got[e][1]["emit_ts"] - t for e, t in sent.items() if e in got])
                out["job_latency"]["missing"] = sum(1 for e in sent if e not in got)
                relay_in = assigned_consumer(kafka.bootstrap, ["b.relay"], from_beginning=True)
                relay_sent: dict = {}
                relayed: dict = {}
                relay_docs = [{**d, "event_id": "relay-" + d["event_id"]} for d in steady[: int(args.rate * 10)]]
                relay_in.poll(timeout_ms=500)  # assigned and positioned before the first record
                paced_while_collecting(producer, "b.relay", relay_docs, args.rate, relay_sent, relay_in, relayed, 60)
                out["relay_latency"] = quantiles([relayed[e][0] - t for e, t in relay_sent.items() if e in relayed])
                # a model swap: publish -> first list from the new version, events flowing
                t_pub = time.time() * 1000
                run("model", "publish", str(v2), "--uri", v2.as_uri(), "--bootstrap-servers", kafka.bootstrap,
                    "--control-topic", "b.control")
                first_new = None
                i = 0
                while first_new is None and time.time() * 1000 - t_pub < 120_000:
                    batch = [{"user_id": f"u{(i + k) % args.users}", "item_id": vocab[k % len(vocab)],
                              "event_type": "view", "ts": int(time.time() * 1000), "event_id": f"swap-{i + k}"}
                             for k in range(20)]
                    i += 20
                    paced(producer, "b.events", batch, 200, {})
                    collect(recs, {d["event_id"] for d in batch}, 5, got)
                    new = [at for at, d in got.values() if d.get("model_version") == "bench-v2"]
                    first_new = min(new) if new else None
                out["swap_publish_to_first_new_list_s"] = (None if first_new is None
                                                           else round((first_new - t_pub) / 1000, 2))
        finally:
            run("cluster", "down", "--dir", str(work / "cluster"))
    if args.load_only:
        return _finish(out, args, work, load_checks)
    return _finish(out, args, work, {"all_load_lists": out.get("load_lists") == args.users,
                                     "history_kept": out.get("history_kept"),
                                     "swapped": out.get("swap_publish_to_first_new_list_s") is not None})


def _finish(out: dict, args: argparse.Namespace, work: Path, checks: dict) -> int:
    out["checks"] = checks
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))
    shutil.rmtree(work, ignore_errors=True)
    return 0 if all(out["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
