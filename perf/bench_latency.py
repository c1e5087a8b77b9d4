"""Event -> list latency through the real job (Kafka in, MiniCluster, Kafka out), and sustained throughput.

Phase 1 (latency): a producer process sends at ``--rate`` events/s for ``--seconds``; a consumer process
reads the output topic and records ``consume time - Kafka timestamp of the input`` per list.
Phase 2 (throughput): ``--burst`` events are produced as fast as possible; throughput = lists / time from
the first to the last list of the burst.

    python -m perf.bench_latency [--rate 200 --seconds 30 --burst 20000]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import tempfile
import time
from pathlib import Path

from deploy.job_process import JobProcess, wait_until_serving
from deploy.kafka_clients import assigned_consumer
from deploy.local_kafka import LocalKafka
from flink_jobs.demo import bundle_or_demo
from model_export.generator import GeneratorConfig, generate_events, split_by_time
from operators.bundle import load_bundle
from operators.stats import latency_summary

RESULTS = Path(__file__).resolve().parent / "results"
PROBE = b"__streamrec_probe__"


def _consume(bootstrap: str, topic: str, expected: int, timeout_s: float, queue: mp.Queue) -> None:
    consumer = assigned_consumer(bootstrap, [topic], from_beginning=False, fetch_max_wait_ms=5)
    queue.put("ready")
    latencies, arrivals, in_job = [], [], []
    deadline = time.monotonic() + timeout_s
    while len(latencies) < expected and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=50).values():
            now = time.time() * 1000
            for record in records:
                if record.key == PROBE:
                    continue
                doc = json.loads(record.value)
                latencies.append(now - doc["source_ts"])
                in_job.append(doc["emit_ts"] - doc["source_ts"])
                arrivals.append(now)
    consumer.close()
    queue.put((latencies, arrivals, in_job))


def _produce(bootstrap: str, topic: str, events: list[dict], rate: float | None) -> float:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=0 if rate else 5)
    t0 = time.monotonic()
    for n, event in enumerate(events):
        if rate:
            delay = t0 + n / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        producer.send(topic, key=event["user_id"].encode(), value=json.dumps(event).encode())
    producer.flush()
    producer.close()
    return time.monotonic() - t0


def _phase(bootstrap: str, topics: dict, events: list[dict], rate: float | None, timeout_s: float) -> dict:
    ctx = mp.get_context("spawn")
    queue: mp.Queue = ctx.Queue()
    consumer = ctx.Process(target=_consume, args=(bootstrap, topics["output"], len(events), timeout_s, queue))
    consumer.start()
    assert queue.get(timeout=60) == "ready"
    send_s = _produce(bootstrap, topics["input"], events, rate)
    latencies, arrivals, in_job = queue.get(timeout=timeout_s + 30)
    consumer.join(timeout=10)
    out = latency_summary(latencies)
    out["produce_to_emit"] = latency_summary(in_job)
    out["events"] = len(events)
    out["lists"] = len(latencies)
    out["send_seconds"] = send_s
    if len(arrivals) > 1:
        out["lists_per_s"] = (len(arrivals) - 1) / ((max(arrivals) - min(arrivals)) / 1000)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--bundle", default=None, help="default: the demo bundle (trained if missing)")
    p.add_argument("--rate", type=float, default=200.0)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--burst", type=int, default=20_000)
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--out", default=str(RESULTS / "latency.json"))
    p.add_argument("--conf", action="append", default=[], help="extra Flink KEY=VALUE for the job")
    p.add_argument("--delivery-guarantee", default="at-least-once", choices=["at-least-once", "exactly-once", "none"])
    args = p.parse_args(argv)
    bundle = load_bundle(bundle_or_demo(args.bundle))
    world = GeneratorConfig(n_users=3_000, n_items=1_000)
    _, replay = split_by_time(generate_events(world), 0.5)
    n_rate = int(args.rate * args.seconds)
    paced, burst = replay[:n_rate], replay[n_rate : n_rate + args.burst]
    topics = {"input": "bench.events", "output": "bench.recs", "dead": "bench.dead"}
    work = Path(tempfile.mkdtemp(prefix="streamrec-bench-"))
    print(f"job logs: {work / 'logs'}")
    result: dict = {"bundle": bundle.version, "n_items": bundle.n_items, "partitions": args.partitions,
                    "conf": args.conf, "delivery_guarantee": args.delivery_guarantee}
    with LocalKafka(work / "kafka") as kafka:
        kafka.create_topics({topics["input"]: args.partitions, topics["output"]: args.partitions, topics["dead"]: 1})
        job_args = ["--bootstrap-servers", kafka.bootstrap, "--bundle", str(bundle.path), "--checkpoint-dir",
                    str(work / "ck"), "--input-topic", topics["input"], "--output-topic", topics["output"],
                    "--dead-letter-topic", topics["dead"], "--top-k", "10",
                    "--delivery-guarantee", args.delivery_guarantee]
        for pair in args.conf:
            job_args += ["--conf", pair]
        with JobProcess(job_args, work / "logs") as job:
            result["job_startup_s"] = wait_until_serving(job, kafka.bootstrap, topics["input"], topics["output"])
            paced_result = _phase(kafka.bootstrap, topics, paced, args.rate, args.seconds + 120)
            result["paced"] = {"rate": args.rate, **paced_result}
            print("paced:", json.dumps(result["paced"]))
            if burst:
                result["burst"] = _phase(kafka.bootstrap, topics, burst, None, 600)
                print("burst:", json.dumps(result["burst"]))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
