"""``streamrec demo``: the whole path on an embedded default, end to end, then a one-line summary.

local Kafka broker -> topics -> (train a bundle if none) -> job on the Flink MiniCluster -> replay a
generated stream (with malformed records) at a fixed rate -> print lists as they come out -> summary ->
shut everything down (also on Ctrl-C).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import ClassVar

from pydantic import Field

from deploy.harness.collect import Collector
from deploy.harness.demo_bundle import DEMO_WORLD, ensure_demo_bundle
from deploy.harness.generator import GeneratorConfig, generate_events, split_by_time, to_records, write_catalog
from deploy.harness.job_process import JobProcess, wait_until_serving
from deploy.harness.kafka_clients import assigned_consumer
from deploy.harness.local_kafka import LocalKafka
from deploy.harness.paths import runtime_dir
from operators.config import JobConfig
from operators.settings import ModelOptions, Option, Settings
from operators.stats import latency_summary

__all__ = ["DemoConfig", "DEMO_OPTIONS", "DemoResult", "run_demo"]

log = logging.getLogger("streamrec.demo")


class DemoConfig(Settings):
    """Knobs of the demo (defaults: ~1,000 events at 200 events/s); ``streamrec demo``'s options and the ``[demo]``
    table of a config file come from here."""

    SECTION: ClassVar[str] = "demo"

    events: int = Field(1_000, ge=1, description="events replayed (and timed) after the warm-up")
    rate: float = Field(200.0, gt=0.0, description="events per second")
    malformed_share: float = Field(0.03, ge=0.0, lt=1.0, description="share of malformed records among them")
    top_k: int = Field(10, ge=1, description="length of each list")
    show: int = Field(5, ge=1, description="items printed per list")
    home: str | None = Field(None, description="runtime directory (default: .streamrec/ or $STREAMREC_HOME)")
    bundle: str | None = Field(None, description="serve this bundle instead of the demo's own")
    retrain: bool = Field(False, description="train the demo model even if one exists")
    print_lists: bool = Field(True, description="print every list and dead letter as it comes")
    drain_timeout_s: float = Field(60.0, gt=0.0, description="longest wait for the last lists")
    warmup_events: int = Field(3_000, ge=0, description=(
        "the newest events of the users' history (before the replay) sent first, untimed, as fast as the job "
        "takes them: users start with a history, and the JVM has compiled its hot paths before latency is "
        "measured"))
    world: GeneratorConfig = Field(DEMO_WORLD, description="the generated world (streamrec generate's knobs)")


DEMO_OPTIONS = ModelOptions(DemoConfig, "demo", [
    Option("print_lists", name="quiet", invert=True, help="print only the summary"),
])
"""``streamrec demo``'s options of :class:`DemoConfig` (``[demo]`` in ``--config``, ``STREAMREC_DEMO_*``)."""


@dataclass
class DemoResult:
    """What the summary line reports, plus details for the closing note."""

    events: int
    valid: int
    lists: int
    dead_letter: int
    latency: dict[str, float]
    startup_s: float
    wall_s: float
    provider: str | None
    model_version: str | None

    def summary_line(self) -> str:
        """``demo summary: events=.. valid=.. lists=.. dead_letter=.. p50_ms=.. p99_ms=..``."""
        return (
            f"demo summary: events={self.events} valid={self.valid} lists={self.lists} "
            f"dead_letter={self.dead_letter} p50_ms={self.latency['p50_ms']:.1f} p99_ms={self.latency['p99_ms']:.1f}"
        )


class _Collector(Collector):
    """Counts lists and dead letters from now on (the warm-up's lists are already out), with latencies; prints
    them as they come."""

    def __init__(self, bootstrap: str, output_topic: str, dead_letter_topic: str, cfg: DemoConfig) -> None:
        super().__init__(bootstrap, output_topic, dead_letter_topic, from_beginning=False, poll_ms=100,
                         name="demo-consumer", fetch_max_wait_ms=5)
        self.cfg = cfg
        self.n_lists = 0
        self.n_dead = 0
        self.latencies: list[float] = []
        self.provider: str | None = None
        self.model_version: str | None = None

    def on_dead(self, value: bytes, now_ms: float) -> None:  # noqa: ARG002
        with self.lock:
            self.n_dead += 1
        if self.cfg.print_lists:
            doc = json.loads(value)
            src = doc["source"]
            print(f"  dead-letter  {src['topic']}/{src['partition']}@{src['offset']}: [{doc['code']}] "
                  f"{doc['reason'][:90]}", flush=True)

    def on_list(self, value: bytes, now_ms: float, *, probe: bool) -> None:
        if probe:
            return
        doc = json.loads(value)
        latency = now_ms - doc["source_ts"] if doc.get("source_ts") else float("nan")
        with self.lock:
            self.n_lists += 1
            self.latencies.append(latency)
            self.provider = doc.get("provider")
            self.model_version = doc["model_version"]
        if self.cfg.print_lists:
            top = ", ".join(f"{i['item_id']}:{i['score']:.2f}" for i in doc["items"][: self.cfg.show])
            why = doc["items"][0].get("reason") if doc["items"] else None
            why = ",".join(f"{k}={v}" for k, v in why.items()) if why else "-"
            print(f"  {doc['user_id']:>6} <- {doc['event_id']:<10} {doc['strategy']:<8} [{top}] ({why}) "
                  f"{doc['model_version']} {latency:.0f} ms", flush=True)


def _warm_up(bootstrap: str, topics: dict[str, str], events: list[dict], job: JobProcess,
             timeout_s: float = 180.0) -> None:
    """Send ``events`` as fast as possible and wait until each has its list (not timed, not counted)."""
    from kafka import KafkaProducer

    if not events:
        return
    print(f"warming up with the newest {len(events)} history events (untimed) ...", flush=True)
    consumer = assigned_consumer(bootstrap, [topics["output"]], from_beginning=False, fetch_max_wait_ms=5)
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=5)
    for rec in to_records(events):
        producer.send(topics["input"], key=rec.key, value=rec.value)
    producer.flush()
    producer.close()
    wanted = {str(e["event_id"]) for e in events}
    deadline = time.monotonic() + timeout_s
    try:
        while wanted and time.monotonic() < deadline and job.alive():
            for records in consumer.poll(timeout_ms=200).values():
                for record in records:
                    wanted.discard(json.loads(record.value).get("event_id"))
    finally:
        consumer.close()
    if wanted:
        log.warning("%d warm-up events got no list within %.0f s", len(wanted), timeout_s)


def run_demo(cfg: DemoConfig) -> DemoResult:
    """Run the demo; always tears down the broker and the job."""
    from kafka import KafkaProducer

    started = time.monotonic()
    home = runtime_dir(cfg.home)
    history, replay = split_by_time(generate_events(cfg.world))
    bundle = ensure_demo_bundle(home, bundle=cfg.bundle, retrain=cfg.retrain, world=cfg.world, history=history)
    job = JobConfig.model_fields  # the job's default topics
    topics = {"input": job["input_topic"].default, "output": job["output_topic"].default,
              "dead": job["dead_letter_topic"].default}
    records = to_records(replay[: cfg.events], malformed_share=cfg.malformed_share)
    run = home / "run" / "demo"
    catalog = write_catalog(cfg.world, run / "catalog.csv")  # the generator's taste clusters as categories
    with LocalKafka(run / "kafka") as kafka:
        kafka.create_topics({topics["input"]: 4, topics["output"]: 4, topics["dead"]: 1})
        args = ["--bootstrap-servers", kafka.bootstrap, "--bundle", str(bundle),
                "--checkpoint-dir", str(run / "checkpoints"), "--input-topic", topics["input"],
                "--output-topic", topics["output"], "--dead-letter-topic", topics["dead"],
                "--top-k", str(cfg.top_k), "--group-id", "streamrec-demo", "--catalog", str(catalog)]
        with JobProcess(args, run / "logs") as job:
            print("starting the recommendation job on the Flink MiniCluster ...", flush=True)
            startup = wait_until_serving(job, kafka.bootstrap, topics["input"], topics["output"])
            _warm_up(kafka.bootstrap, topics, history[-cfg.warmup_events :] if cfg.warmup_events else [], job)
            print(f"job serving after {startup:.1f}s; replaying {len(records)} records at "
                  f"{cfg.rate:.0f}/s into {topics['input']}", flush=True)
            collector = _Collector(kafka.bootstrap, topics["output"], topics["dead"], cfg)
            collector.start()
            producer = KafkaProducer(bootstrap_servers=kafka.bootstrap, acks=1, linger_ms=0)
            t0 = time.monotonic()
            for n, rec in enumerate(records):
                delay = t0 + n / cfg.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                producer.send(topics["input"], key=rec.key, value=rec.value)
            producer.flush()
            producer.close()
            valid = sum(r.valid for r in records)
            deadline = time.monotonic() + cfg.drain_timeout_s
            while time.monotonic() < deadline and (
                    collector.n_lists < valid or collector.n_dead < len(records) - valid):
                if not job.alive():
                    break
                time.sleep(0.1)
            collector.stop(timeout_s=5)
    with collector.lock:
        result = DemoResult(
            events=len(records), valid=valid, lists=collector.n_lists, dead_letter=collector.n_dead,
            latency=latency_summary(collector.latencies), startup_s=startup,
            wall_s=time.monotonic() - started, provider=collector.provider, model_version=collector.model_version,
        )
    return result
