"""``streamrec faults``: a fault-injection suite users can rerun against the real job and broker.

Every scenario runs the job the way users do (``streamrec run`` in its own process group, a local broker on
127.0.0.1), injects one kind of fault, and then checks the delivery contract from the topics alone:

- ``kill9``: ``kill -9`` of the job at random points of a paced stream; a supervisor's restart
  (``streamrec run ... --restore-from latest``) restores the newest checkpoint. Every event answered at least
  once, duplicates bounded by the checkpoints (for each kill, the lists the killed job emitted after the barrier
  of its last completed checkpoint, read from the job's log), every kill mid-stream (the stream waits while a
  fault runs), every user's history continues
  (the ``history_len`` of their last list equals their lists so far, capped), seconds from each kill to the
  first list of the restarted job.
- ``kill9-exactly-once``: the same with ``--delivery-guarantee exactly-once`` read with ``read_committed``:
  every event answered exactly once.
- ``savepoint``: SIGTERM to ``streamrec run`` mid-stream (it stops the job with a savepoint) and a restart with
  ``--restore-from latest``: nothing lost, histories continue, duplicates at most one micro-batch (an event
  waiting at the barrier is pending in the savepoint and answered again on resume).
- ``broker``: ``kill -9`` of the broker, down for a while, restarted on its data; nothing lost, no job restart,
  duplicates only from records in flight at the outage.
- ``poison``: fuzzed malformed and poison records between canary events: each in the dead-letter topic with
  the code it deserves, every canary answered, no task restart.
- ``users``: many distinct users: RSS stays flat, checkpoint size and state bytes per user.
"""

from __future__ import annotations

import bisect
import json
import logging
import os
import random
import re
import shutil
import signal
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from deploy.harness import collect
from deploy.harness.flink_log import CHECKPOINT_BYTES, RESTART, completed_checkpoints
from deploy.harness.job_process import PROBE_USER, JobProcess, wait_until_serving
from deploy.harness.local_kafka import LocalKafka, free_port
from deploy.harness.process import group_rss_mb
from operators.config import DEFAULT_MICRO_BATCH, JobConfig

__all__ = ["ScenarioResult", "Audit", "audit", "run_faults", "SCENARIOS", "main"]

log = logging.getLogger(__name__)

HISTORY_LEN = JobConfig.model_fields["history_len"].default
CHECKPOINT_INTERVAL_S = JobConfig.model_fields["checkpoint_interval_ms"].default / 1000
"""The job's default ``--checkpoint-interval-ms`` (the scenarios run with it)."""


@dataclass
class ScenarioResult:
    """One row of the report (the keys the issue asks for, and the checks that decided ``ok``)."""

    name: str
    events: int = 0
    lists: int = 0
    dead_letters: int = 0
    missing: int = 0
    duplicates: int = 0
    kill_to_first_list_s: list[float] = field(default_factory=list)
    input_restarts: int = 0
    rss_mb: dict[str, float] = field(default_factory=dict)
    checkpoint_bytes: int | None = None
    wall_s: float = 0.0
    checks: dict[str, bool] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(self.checks.values())


@dataclass
class Audit:
    """What the output and dead-letter topics say about a set of sent events."""

    answered: int
    missing: list[str]
    duplicates: int
    lists: int
    dead: int
    history_mismatch: list[str]


def audit(sent: dict[str, str], lists: list[dict], dead: list[dict], *, history_cap: int = HISTORY_LEN) -> Audit:
    """Check the delivery contract.

    Args:
        sent: event id -> user id of every valid event sent (in sending order).
        lists: every recommendation record read (duplicates included).
        dead: every dead-letter record read.
        history_cap: the job's ``--history-len``.

    Every sent event must be answered by a list or a dead letter (e.g. quarantined); repeats of an answer are
    duplicates. A user's state continues across failures exactly when the ``history_len`` of every copy of
    the list for their last listed event equals the number of their distinct listed events (capped).
    """
    answers: Counter[str] = Counter()
    by_event: dict[str, list[int]] = defaultdict(list)
    for doc in lists:
        answers[doc["event_id"]] += 1
        by_event[doc["event_id"]].append(int(doc["history_len"]))
    for doc in dead:
        event_id = _dead_event_id(doc)
        if event_id is not None:
            answers[event_id] += 1
    missing = [e for e in sent if answers[e] == 0]
    duplicates = sum(n - 1 for e, n in answers.items() if e in sent and n > 1)
    listed_per_user: dict[str, list[str]] = defaultdict(list)
    for event_id, user in sent.items():
        if event_id in by_event:
            listed_per_user[user].append(event_id)
    mismatch = [user for user, events in listed_per_user.items()
                if set(by_event[events[-1]]) != {min(len(events), history_cap)}]
    return Audit(answered=len(sent) - len(missing), missing=missing, duplicates=duplicates,
                 lists=sum(answers[e] for e in by_event if e in sent), dead=len(dead), history_mismatch=mismatch)


def _dead_event_id(doc: dict) -> str | None:
    if doc.get("raw_encoding") != "utf-8":
        return None
    try:
        payload = json.loads(doc["raw"])
    except (ValueError, TypeError, RecursionError):
        return None
    return payload.get("event_id") if isinstance(payload, dict) else None


# ---------------------------------------------------------------------------------------------------- plumbing
class Collector(collect.Collector):
    """Every list and dead letter from the beginning, and the ``emit_ts`` of every list, the probe's included
    (what "lists flow again" is measured on)."""

    def __init__(self, bootstrap: str, output: str, dead: str, *, read_committed: bool = False) -> None:
        super().__init__(bootstrap, output, dead, from_beginning=True, read_committed=read_committed,
                         name="fault-collector")
        self.emits: list[int] = []

    def on_list(self, value: bytes, now_ms: float, *, probe: bool) -> None:  # noqa: ARG002
        doc = json.loads(value)
        with self.lock:
            self.emits.append(int(doc["emit_ts"]))
            if not probe:
                self.lists.append(doc)

    def first_list_since(self, since_ms: int, after_ms: int | None = None) -> float | None:
        """Seconds from ``since_ms`` to the first list emitted after ``after_ms`` (default: ``since_ms``)."""
        after_ms = since_ms if after_ms is None else after_ms
        with self.lock:
            emitted = [ts for ts in self.emits[-5000:] if ts > after_ms]
        return (min(emitted) - since_ms) / 1000 if emitted else None

    def wait_first_list(self, bootstrap: str, topic: str, since_ms: int, after_ms: int | None = None,
                        timeout_s: float = 180, alive: Any = None) -> float:
        """Seconds from ``since_ms`` to the first list emitted after ``after_ms``; sends a probe event every
        second meanwhile, so that the answer does not depend on whether the stream still flows."""
        producer = _producer(bootstrap)
        deadline, n = time.monotonic() + timeout_s, 0
        try:
            while (took := self.first_list_since(since_ms, after_ms)) is None and time.monotonic() < deadline:
                if alive is not None and not alive():
                    return float("inf")
                probe = {"user_id": PROBE_USER, "item_id": "__probe__", "event_type": "view",
                         "ts": int(time.time() * 1000), "event_id": f"{PROBE_USER}-fault-{since_ms}-{n}"}
                producer.send(topic, key=PROBE_USER.encode(), value=json.dumps(probe).encode())
                n += 1
                time.sleep(1.0)
        finally:
            producer.close(timeout=5)
        return round(took, 2) if took is not None else float("inf")


def _producer(bootstrap: str):  # noqa: ANN202 - kafka-python has no type hints
    from kafka import KafkaProducer

    # retries without end and one request in flight: a broker outage delays records, it never drops or reorders
    return KafkaProducer(bootstrap_servers=bootstrap, acks="all", retries=2**31 - 1,
                         max_in_flight_requests_per_connection=1, linger_ms=5, reconnect_backoff_max_ms=1000)


def _pace(records: list[tuple[bytes, bytes]], producer, topic: str, rate: float,  # noqa: ANN001
          hooks: dict[int, Any] | None = None) -> int:
    """Send ``records`` at ``rate`` per second; returns when the last one went (epoch ms). ``hooks[i]`` (a
    fault) starts in a thread when record ``i`` is due, and the stream goes on meanwhile, as a real one would.
    Faults never overlap: when the next fault's record comes while the previous fault is still running (a
    restart takes longer than a short stream), the stream pauses until it is over, so that every fault lands
    mid-stream, with records still to come."""
    hooks = hooks or {}
    running: threading.Thread | None = None
    start = time.monotonic()
    for i, (key, value) in enumerate(records):
        if i in hooks:
            if running is not None and running.is_alive():
                producer.flush()
                running.join()
                start = time.monotonic() - i / rate  # go on at the rate from here, no burst
            running = threading.Thread(target=hooks[i], daemon=True)
            running.start()
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        producer.send(topic, key=key, value=value)
    last_ms = time.time_ns() // 1_000_000
    if running is not None:
        running.join()
    producer.flush()
    return last_ms


def duplicate_bound(kills_ms: list[int], checkpoints: list[tuple[int, int]], emitted_ms: list[int],
                    slack_ms: int = 250, ends_ms: list[int] | None = None) -> int:
    """What at-least-once may repeat: for each kill, the lists emitted after the barrier of the last checkpoint
    completed before the kill (its trigger time, less ``slack_ms`` for clocks and a micro-batch's wait) and
    before the failed attempt ended: the kill itself when the whole job died with it, or ``ends_ms[i]`` when
    part of it ran on (a TaskManager's loss: the other subtasks serve until Flink has cancelled them, which it
    has when the job switches back to RUNNING). A restore replays exactly the events behind those lists
    (records before the barrier were answered before it)."""
    emitted = sorted(emitted_ms)
    bound = 0
    for i, kill in enumerate(kills_ms):
        before = [t for t, done in checkpoints if done < kill]
        since = (max(before) - slack_ms) if before else 0
        end = ends_ms[i] if ends_ms is not None else kill
        bound += bisect.bisect_right(emitted, end) - bisect.bisect_left(emitted, since)
    return bound


def _flink_logs(log_dirs: list[Path]) -> str:
    return "\n".join(p.read_text(errors="replace") for d in log_dirs for p in sorted(d.glob("flink-*.log")))


class Job:
    """The job under test, restartable: each incarnation logs to its own directory."""

    def __init__(self, kafka: LocalKafka, work: Path, topics: dict[str, str], bundle: str, extra: list[str]) -> None:
        self.kafka, self.work, self.topics = kafka, work, topics
        self.args = ["--bootstrap-servers", kafka.bootstrap, "--bundle", bundle,
                     "--checkpoint-dir", str(work / "checkpoints"), "--input-topic", topics["input"],
                     "--output-topic", topics["output"], "--dead-letter-topic", topics["dead"],
                     "--group-id", f"faults-{topics['input']}", "--history-len", str(HISTORY_LEN),
                     "--restore-from", "latest",
                     # trending boards reach the job at processing-time moments: with them on, no list could be
                     # compared with the uninterrupted run's (every user's state is, through their lists); the
                     # in-stream neighbour counts live in each subtask's memory (rebuilt after a restart, one
                     # table per subtask), so new users' lists would differ from the one-table reference too
                     "--trending", "enabled=false", "--rerank", "neighbor_refresh=false", *extra]
        self.proc: JobProcess | None = None
        self.spare: JobProcess | None = None
        self.log_dirs: list[Path] = []
        self.rss_peak = 0.0

    def _new(self, extra: list[str]) -> JobProcess:
        log_dir = self.work / f"job-{len(self.log_dirs)}"
        self.log_dirs.append(log_dir)
        return JobProcess([*self.args, *extra], log_dir).start()

    def start(self, *, wait: bool = True) -> float:
        self.proc = self._new([])
        if wait:
            return wait_until_serving(self.proc, self.kafka.bootstrap, self.topics["input"], self.topics["output"],
                                      timeout_s=240)
        return 0.0

    def start_spare(self, timeout_s: float = 120) -> None:
        """A hot standby (``streamrec run ... --standby``): JVM up and job built, waiting for the lock."""
        self.spare = self._new(["--standby"])
        deadline = time.monotonic() + timeout_s
        while "job built" not in self.spare.log_file.read_text(errors="replace"):
            if time.monotonic() > deadline or not self.spare.alive():
                msg = f"standby did not get ready: {self.spare.log_tail()}"
                raise RuntimeError(msg)
            time.sleep(0.2)

    def kill(self) -> None:
        """``kill -9`` of the job's whole process group (client and MiniCluster JVM); a spare takes over."""
        proc = self.proc.proc
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        self.proc.proc = None
        if self.spare is not None:
            self.proc, self.spare = self.spare, None

    def stop_gracefully(self, timeout_s: float = 180) -> tuple[int | None, float]:
        """SIGTERM to the ``streamrec run`` process alone (as systemd or Kubernetes stop a service): it stops the
        job with a savepoint and exits. Returns its exit code and the seconds it took."""
        proc = self.proc.proc
        t0 = time.monotonic()
        os.kill(proc.pid, signal.SIGTERM)
        try:
            code = proc.wait(timeout=timeout_s)
        except Exception:  # subprocess.TimeoutExpired: the group is stopped below
            code = None
        took = time.monotonic() - t0
        self.proc.stop()
        return code, took

    def rss(self) -> float:
        rss = group_rss_mb(self.proc.proc.pid) if self.proc and self.proc.alive() else 0.0
        self.rss_peak = max(self.rss_peak, rss)
        return rss

    def restarts(self) -> int:
        return len(RESTART.findall(_flink_logs(self.log_dirs)))

    def checkpoint_bytes(self) -> int | None:
        """The size of the last completed checkpoint (of the last incarnation that made one)."""
        for log_dir in reversed(self.log_dirs):
            sizes = CHECKPOINT_BYTES.findall(_flink_logs([log_dir]))
            if sizes:
                return int(sizes[-1])
        return None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.alive()

    def stop(self) -> None:
        for proc in (self.spare, self.proc):
            if proc is not None:
                proc.stop()


def _events(n: int, seed: int, tag: str) -> tuple[list[tuple[bytes, bytes]], dict[str, str]]:
    """``n`` generated events (the demo's world, so the demo bundle knows the items), unique event ids."""
    from deploy.harness.generator import GeneratorConfig, generate_events

    events = generate_events(GeneratorConfig(n_users=max(50, n // 20), seed=seed))[:n]
    records, sent = [], {}
    for i, event in enumerate(events):
        event = {**event, "event_id": f"{tag}-{i}"}
        records.append((event["user_id"].encode(), json.dumps(event).encode()))
        sent[event["event_id"]] = event["user_id"]
    return records, sent


def _await_answers(collector: Collector, sent: dict[str, str], timeout_s: float) -> None:
    """Wait until every sent event is answered (or the timeout), then 3 s more for late duplicates."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        lists, dead = collector.snapshot()
        if not audit(sent, lists, dead).missing:
            break
        time.sleep(1.0)
    time.sleep(3.0)


def reference_lists(bundle: str, input_topic: str, records: list[tuple[bytes, bytes]]) -> dict[str, dict]:
    """What an uninterrupted job serves: the same serving core (the job's defaults but trending and the in-stream
    neighbour refresh, as the jobs under test run; no Flink, no Kafka, no faults) over the same records in the
    same order; the last list of every user."""
    from operators.offline import MemoryStateStore, OfflineRecord, serve_offline
    from operators.rerank import RerankConfig
    from operators.serving import LIST, ServingCore
    from operators.trending import TrendingConfig

    cfg = JobConfig(bootstrap_servers="127.0.0.1:9", bundle_path=bundle, checkpoint_dir="unused",
                    input_topic=input_topic, history_len=HISTORY_LEN, onnx_providers=("CPUExecutionProvider",),
                    trending=TrendingConfig(enabled=False), rerank=RerankConfig(neighbor_refresh=False))
    core = ServingCore.from_config(cfg)
    last: dict[str, dict] = {}
    feed = (OfflineRecord(key.decode(), value, offset=i) for i, (key, value) in enumerate(records))
    for record, out, _ in serve_offline(core, feed, MemoryStateStore(), now_ms=time.time_ns() // 1_000_000):
        if out.kind == LIST:
            last[record.key] = json.loads(out.value)
    return last


def compare_with_reference(reference: dict[str, dict], lists: list[dict]) -> list[str]:
    """Users whose last list (every copy of it) differs from the uninterrupted run's: items, order, scores
    (1e-4), strategy, history length. Equal last lists mean equal state: the window, the model's recurrent
    state and the shown-list history all feed them."""
    by_event: dict[str, list[dict]] = defaultdict(list)
    for doc in lists:
        by_event[doc["event_id"]].append(doc)
    differ = []
    for user, want in reference.items():
        copies = by_event.get(want["event_id"], [])
        expected = ([i["item_id"] for i in want["items"]], want["strategy"], want["history_len"])
        if not copies or any(not _same_list(got, want, expected) for got in copies):
            differ.append(user)
    return differ


def _same_list(got: dict, want: dict, expected: tuple) -> bool:
    if ([i["item_id"] for i in got["items"]], got["strategy"], got["history_len"]) != expected:
        return False
    return all(abs(a["score"] - b["score"]) <= 1e-4 for a, b in zip(got["items"], want["items"], strict=True))


def _fill(result: ScenarioResult, collector: Collector, sent: dict[str, str], job: Job, *,
          dead_answers: bool = True, reference: dict[str, dict] | None = None) -> Audit:
    """Audit the topics into ``result``; ``dead_answers=False`` when dead letters are copies of sent events
    gone bad (the poison scenario), not answers to them."""
    lists, dead = collector.snapshot()
    found = audit(sent, lists, dead if dead_answers else [])
    found.dead = len(dead)
    result.events, result.lists, result.dead_letters = len(sent), found.lists, found.dead
    result.missing, result.duplicates = len(found.missing), found.duplicates
    result.input_restarts = job.restarts()
    result.checkpoint_bytes = job.checkpoint_bytes()
    result.checks["every event answered"] = not found.missing
    result.checks["every user's history continues"] = not found.history_mismatch
    result.checks["no task restart"] = result.input_restarts == 0
    if found.missing:
        result.notes["missing_sample"] = found.missing[:10]
    if found.history_mismatch:
        result.notes["history_mismatch_sample"] = found.history_mismatch[:10]
    if reference is not None:
        differ = compare_with_reference(reference, lists)
        result.checks["per-user state as in an uninterrupted run"] = not differ
        result.notes["users_compared"] = len(reference)
        if differ:
            result.notes["state_differs_sample"] = differ[:10]
    return found


@contextmanager
def _running(ctx: dict, result: ScenarioResult, extra: list[str], *, read_committed: bool = False,
             spare: bool = False) -> Iterator[tuple[Job, Collector]]:
    """The scenario's job (serving; with a hot standby when ``spare``) and a collector reading its topics;
    both stopped on the way out, and the job's peak RSS recorded."""
    job, collector = ctx["job"](result.name, extra), None
    try:
        job.start()
        if spare:
            job.start_spare()
        collector = Collector(ctx["kafka"].bootstrap, job.topics["output"], job.topics["dead"],
                              read_committed=read_committed)
        collector.start()
        yield job, collector
        job.rss()
        result.rss_mb.setdefault("peak", job.rss_peak)
    finally:
        if collector is not None:
            collector.stop()
        job.stop()


def _stream_with_faults(ctx: dict, result: ScenarioResult, job: Job, collector: Collector,
                        records: list[tuple[bytes, bytes]], sent: dict[str, str], faults: dict[int, Any],
                        rate: float | None = None) -> int:
    """Send ``records`` at ``rate`` (default: the scenario rate) with ``faults`` injected on the way, wait for
    every answer, and audit the topics against an uninterrupted run. Returns when the last record was sent
    (epoch ms)."""
    producer = _producer(ctx["kafka"].bootstrap)
    last_ms = _pace(records, producer, job.topics["input"], rate or ctx["sizes"].rate, faults)
    producer.close()
    _await_answers(collector, sent, timeout_s=300)
    _fill(result, collector, sent, job, reference=reference_lists(ctx["bundle"], job.topics["input"], records))
    return last_ms


# ---------------------------------------------------------------------------------------------------- scenarios
@dataclass(frozen=True)
class Sizes:
    kill_events: int
    kills: int
    eo_events: int
    eo_kills: int
    broker_events: int
    broker_down_s: float
    poison: int
    users: int
    rate: float
    cluster_events: int = 4_000
    cluster_kills: int = 2
    cluster_rate: float = 150
    """The cluster runs on the same 2 cores: 2 TaskManagers at parallelism 2 carry ~500 lists/s here."""


QUICK = Sizes(kill_events=10_000, kills=3, eo_events=4_000, eo_kills=2, broker_events=6_000, broker_down_s=10,
              poison=2_000, users=20_000, rate=400)
FULL = Sizes(kill_events=100_000, kills=5, eo_events=20_000, eo_kills=3, broker_events=20_000, broker_down_s=15,
             poison=10_000, users=1_000_000, rate=600, cluster_events=20_000, cluster_kills=4, cluster_rate=200)


def _scenario_kill(ctx: dict, name: str, n: int, kills: int, exactly_once: bool, standby: bool) -> ScenarioResult:
    result = ScenarioResult(name)
    records, sent = _events(n, seed=ctx["seed"], tag=name)
    extra = ["--delivery-guarantee", "exactly-once"] if exactly_once else []
    points = sorted(random.Random(ctx["seed"]).sample(range(n // 10, n * 9 // 10), kills))
    kills_ms: list[int] = []
    with _running(ctx, result, extra, read_committed=exactly_once, spare=standby) as (job, collector):

        def crash() -> None:
            kill_ms = time.time_ns() // 1_000_000
            job.rss()
            job.kill()
            dead_ms = time.time_ns() // 1_000_000  # every list emitted after this comes from the restarted job
            kills_ms.append(dead_ms)  # the killed job may emit until it is dead: the bound's window ends here
            if not standby:
                job.start(wait=False)  # the supervisor restarts it at once, from the latest checkpoint
            result.kill_to_first_list_s.append(collector.wait_first_list(
                ctx["kafka"].bootstrap, job.topics["input"], kill_ms, dead_ms, alive=job.alive))
            if standby:
                job.start_spare()  # the supervisor's next spare

        last_send = _stream_with_faults(ctx, result, job, collector, records, sent, {p: crash for p in points})
    if exactly_once:
        result.checks["exactly once (read_committed)"] = result.duplicates == 0
    else:  # a restore replays what the killed job answered after its last completed checkpoint's barrier
        lists, _ = collector.snapshot()
        bound = duplicate_bound(kills_ms, completed_checkpoints(_flink_logs(job.log_dirs)),
                                [int(d.get("emit_ts") or 0) for d in lists])
        result.checks["duplicates only from after each kill's last checkpoint"] = result.duplicates <= bound
        result.notes["duplicates_bound"] = bound
    result.notes["kills_mid_stream"] = sum(k < last_send for k in kills_ms)
    result.checks["every kill mid-stream"] = result.notes["kills_mid_stream"] == len(points)
    result.checks["lists flowed again after every kill"] = all(t != float("inf") for t in result.kill_to_first_list_s)
    result.notes["kill_points"] = points
    result.notes["restart"] = "hot standby (--standby)" if standby else "cold (streamrec run --restore-from latest)"
    return result


def scenario_kill9(ctx: dict) -> ScenarioResult:
    s = ctx["sizes"]
    return _scenario_kill(ctx, "kill9", s.kill_events, s.kills, exactly_once=False, standby=True)


def scenario_kill9_cold(ctx: dict) -> ScenarioResult:
    s = ctx["sizes"]
    return _scenario_kill(ctx, "kill9-cold", s.eo_events, s.eo_kills, exactly_once=False, standby=False)


def scenario_kill9_exactly_once(ctx: dict) -> ScenarioResult:
    s = ctx["sizes"]
    return _scenario_kill(ctx, "kill9-exactly-once", s.eo_events, s.eo_kills, exactly_once=True, standby=True)


def _scenario_cluster(ctx: dict, name: str, victims: list[str], *, ha: bool) -> ScenarioResult:
    """``kill -9`` of ``victims[i]`` (processes of a standalone cluster of 2 TaskManagers x 1 slot, the job at
    parallelism 2) at random points mid-stream, each started again at once as a supervisor would: Flink restarts
    (a TaskManager's loss) or recovers (a JobManager's, with high availability) the job from its latest completed
    checkpoint."""
    from deploy.cluster_job import ClusterJob

    s, kafka = ctx["sizes"], ctx["kafka"]
    result = ScenarioResult(name)
    records, sent = _events(s.cluster_events, seed=ctx["seed"] + 4, tag=name)
    n = len(records)
    points = sorted(random.Random(ctx["seed"] + 4).sample(range(n // 5, n * 4 // 5), len(victims)))
    kills_ms: list[int] = []
    ends_ms: list[int] = []
    template = ctx["job"](name, [])  # fresh topics and the local job's arguments, less the supervisor's restore
    args = [a for a in template.args if a not in ("--restore-from", "latest")]
    job = ClusterJob(kafka, template.work, template.topics, args, taskmanagers=2, ha=ha)
    collector = None
    try:
        job.start()
        collector = Collector(kafka.bootstrap, job.topics["output"], job.topics["dead"])
        collector.start()

        def crash() -> None:
            try:
                fault()
            except Exception as exc:  # a fault that could not be carried out fails the scenario, with the reason
                log.exception("fault %d of %s failed", len(kills_ms), name)
                result.notes.setdefault("fault_errors", []).append(repr(exc))

        def fault() -> None:
            victim = victims[len(kills_ms)]
            kill_ms = time.time_ns() // 1_000_000
            job.rss()
            job.kill(victim)
            kills_ms.append(kill_ms)  # the window of the bound ends when the job runs again, not here
            result.notes.setdefault("restart_ready_s", []).append(job.restart(victim))
            # the rest of the cluster may serve on until Flink cancels it: the restored attempt's first list is the
            # first one after the job switched to RUNNING again (the last switch: a restart may take two tries)
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline and not job.running_since(kill_ms):
                time.sleep(0.2)
            took = collector.wait_first_list(kafka.bootstrap, job.topics["input"], kill_ms,
                                             max(job.running_since(kill_ms) or [kill_ms]), alive=job.alive)
            ends_ms.append(max(job.running_since(kill_ms) or [kills_ms[-1]]))  # the restart that served
            result.kill_to_first_list_s.append(took)
            # back in service once the restored job has checkpointed: the next kill (the stream waits for this
            # fault to end) restores from after this one, so no event is replayed twice on one bound
            deadline = time.monotonic() + 120
            while not job.checkpoints_since(ends_ms[-1]) and time.monotonic() < deadline:
                time.sleep(0.2)

        last_send = _stream_with_faults(ctx, result, job, collector, records, sent, {p: crash for p in points},
                                        rate=s.cluster_rate)
        job.rss()
        result.rss_mb["peak"] = job.rss_peak
    finally:
        if collector is not None:
            collector.stop()
        job.stop()
    result.checks["every fault carried out"] = not result.notes.get("fault_errors") and \
        len(kills_ms) == len(ends_ms) == len(points)
    lists, _ = collector.snapshot()
    ends_ms += kills_ms[len(ends_ms):]  # a fault that failed half-way: its window ends at its kill
    bound = duplicate_bound(kills_ms, completed_checkpoints(job.log_text()),
                            [int(d.get("emit_ts") or 0) for d in lists], ends_ms=ends_ms)
    result.checks["duplicates only from after each kill's last checkpoint"] = result.duplicates <= bound
    result.notes["duplicates_bound"] = bound
    # a process's loss is a job restart by design: the check is that each kill caused one, from a checkpoint
    result.checks.pop("no task restart", None)
    restored = len(re.findall(r"Restoring job \w+ from Checkpoint", job.log_text()))
    result.notes["restored_from_checkpoint"] = restored
    result.checks["the job restarted from a checkpoint after every kill"] = restored >= len(points)
    result.notes["kills_mid_stream"] = sum(k < last_send for k in kills_ms)
    result.checks["every kill mid-stream"] = result.notes["kills_mid_stream"] == len(points)
    result.checks["lists flowed again after every kill"] = \
        len(result.kill_to_first_list_s) == len(points) and all(t != float("inf") for t in result.kill_to_first_list_s)
    result.notes.update(kill_points=points, killed=victims, running_again_ms=ends_ms,
                        restart="started again at once (streamrec cluster restart --name)")
    return result


def scenario_cluster_taskmanager(ctx: dict) -> ScenarioResult:
    """Each TaskManager killed in turn."""
    kills = ctx["sizes"].cluster_kills
    return _scenario_cluster(ctx, "cluster-tm", [f"taskmanager-{i % 2}" for i in range(kills)], ha=False)


def scenario_cluster_jobmanager(ctx: dict) -> ScenarioResult:
    """The JobManager killed, with high availability (ZooKeeper): the one started again recovers the job."""
    return _scenario_cluster(ctx, "cluster-jm", ["jobmanager"] * max(1, ctx["sizes"].cluster_kills // 2), ha=True)


def scenario_broker(ctx: dict) -> ScenarioResult:
    s, kafka = ctx["sizes"], ctx["kafka"]
    result = ScenarioResult("broker")
    window: list[int] = []
    records, sent = _events(s.broker_events, seed=ctx["seed"] + 1, tag="broker")
    with _running(ctx, result, []) as (job, collector):

        def outage() -> None:
            window.append(time.time_ns() // 1_000_000)
            kafka.kill()
            time.sleep(s.broker_down_s)
            t_restart = time.monotonic()
            kafka.restart()
            ready_ms = time.time_ns() // 1_000_000
            window.append(ready_ms)
            result.notes["broker_restart_s"] = round(time.monotonic() - t_restart, 2)
            # from the broker answering again (its downtime and start-up are the scenario's, not the job's)
            result.kill_to_first_list_s.append(collector.wait_first_list(kafka.bootstrap, job.topics["input"],
                                                                         ready_ms))

        _stream_with_faults(ctx, result, job, collector, records, sent, {len(records) // 2: outage})
        result.checks["job survived the outage"] = job.alive()
        # no restart, so no replay: a duplicate can only be a record re-sent because its ack was lost with the
        # broker (the job's sink, or the producer of the input), i.e. one emitted shortly before the kill or while
        # the broker was down (2 s: the producers' request timeout in flight at the kill)
        lists, _ = collector.snapshot()
        emitted = sorted(int(d.get("emit_ts") or 0) for d in lists)
        bound = bisect.bisect_right(emitted, window[1]) - bisect.bisect_left(emitted, window[0] - 2000)
        result.checks["duplicates only from records in flight at the outage"] = result.duplicates <= bound
        result.notes["duplicates_bound"] = bound
    result.notes["broker_down_s"] = s.broker_down_s
    return result


def scenario_savepoint(ctx: dict) -> ScenarioResult:
    s, kafka = ctx["sizes"], ctx["kafka"]
    result = ScenarioResult("savepoint")
    records, sent = _events(s.eo_events, seed=ctx["seed"] + 3, tag="savepoint")
    port = free_port()
    with _running(ctx, result, ["--health-port", str(port)]) as (job, collector):
        health = _health(port)
        result.notes["health"] = health
        result.checks["health endpoint says RUNNING"] = health.get("status") == "RUNNING" and health["http"] == 200

        def stop_and_resume() -> None:
            code, took = job.stop_gracefully()
            result.notes["stop_exit_code"], result.notes["stop_with_savepoint_s"] = code, round(took, 2)
            log_text = job.proc.log_file.read_text(errors="replace")
            result.checks["stopped with a savepoint"] = code == 0 and "savepoint: " in log_text \
                and "savepoint: none" not in log_text
            back_ms = time.time_ns() // 1_000_000
            job.start(wait=False)
            result.kill_to_first_list_s.append(collector.wait_first_list(kafka.bootstrap, job.topics["input"],
                                                                         back_ms, alive=job.alive))

        _stream_with_faults(ctx, result, job, collector, records, sent, {len(records) // 2: stop_and_resume})
        result.notes["resumed_from"] = next((line.split("latest checkpoint ", 1)[1] for line in
                                             job.proc.log_file.read_text(errors="replace").splitlines()
                                             if "restoring from the latest checkpoint" in line), None)
    # micro-batching (on by default): an event waiting in a batch at the savepoint's barrier is in the savepoint as
    # pending, and its list, emitted after the barrier, is emitted again on resume: at most one batch per subtask
    waiting = DEFAULT_MICRO_BATCH
    result.checks["duplicates across a savepoint only from a waiting micro-batch"] = result.duplicates <= waiting
    result.notes["duplicates_bound"] = waiting
    return result


def _health(port: int) -> dict:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as resp:  # noqa: S310
            return {**json.loads(resp.read()), "http": resp.status}
    except urllib.error.HTTPError as err:
        return {**json.loads(err.read() or b"{}"), "http": err.code}
    except OSError as err:
        return {"status": f"unreachable: {err}", "http": None}


def scenario_poison(ctx: dict) -> ScenarioResult:
    from deploy.harness.generator import MALFORMED_KINDS, to_records

    s, kafka = ctx["sizes"], ctx["kafka"]
    result = ScenarioResult("poison")
    canary_records, _ = _events(s.poison, seed=ctx["seed"] + 2, tag="canary")
    canaries = [json.loads(v) for _, v in canary_records]
    generated = to_records(canaries, malformed_share=0.5, seed=ctx["seed"])
    with _running(ctx, result, []) as (job, collector):
        producer = _producer(kafka.bootstrap)
        futures = [(rec, producer.send(job.topics["input"], key=rec.key, value=rec.value)) for rec in generated]
        producer.flush()
        # offsets are per partition: dead letters are matched by (partition, offset)
        positions = {(meta.partition, meta.offset): rec for rec, meta in ((r, f.get(timeout=60)) for r, f in futures)
                     if not rec.valid}
        producer.close()
        sent = {rec.event["event_id"]: rec.event["user_id"] for rec in generated if rec.valid}
        _await_answers(collector, sent, timeout_s=300)
        deadline = time.monotonic() + 60
        while len(collector.snapshot()[1]) < len(positions) and time.monotonic() < deadline:
            time.sleep(0.5)
        _fill(result, collector, sent, job, dead_answers=False)
        wrong, seen = [], set()
        for doc in collector.snapshot()[1]:
            pos = (doc["source"]["partition"], doc["source"]["offset"])
            rec = positions.get(pos)
            if rec is None:
                continue
            seen.add(pos)
            if doc["code"] != MALFORMED_KINDS[rec.kind]:
                wrong.append({"kind": rec.kind, "code": doc["code"], "reason": doc["reason"][:120]})
    result.notes.update(malformed=len(positions), kinds=len(MALFORMED_KINDS), wrong_code=wrong[:10])
    result.checks["every malformed record dead-lettered once"] = seen == set(positions)
    result.checks["each with the code it deserves"] = not wrong
    result.events = len(generated)
    return result


def scenario_users(ctx: dict) -> ScenarioResult:
    s = ctx["sizes"]
    result = ScenarioResult("users")
    base_ts = 1_767_225_600_000
    with _running(ctx, result, []) as (job, collector):
        rss_start = job.rss()
        producer = _producer(ctx["kafka"].bootstrap)
        sent: dict[str, str] = {}
        rss_curve = []
        step = max(1, s.users // 10)
        for i in range(s.users):
            user = f"m{i}"
            event = {"user_id": user, "item_id": f"i{i % 900}", "event_type": "view", "ts": base_ts + i,
                     "event_id": f"users-{i}"}
            producer.send(job.topics["input"], key=user.encode(), value=json.dumps(event).encode())
            sent[event["event_id"]] = user
            if i % step == step - 1:
                producer.flush()
                deadline = time.monotonic() + 600
                while len(collector.lists) < i - 2 * step and job.alive() and time.monotonic() < deadline:
                    time.sleep(0.2)  # stay within two steps of the job
                rss_curve.append((i + 1, job.rss()))
        producer.close()
        _await_answers(collector, sent, timeout_s=600)
        time.sleep(2 * CHECKPOINT_INTERVAL_S)  # a checkpoint after the last event, for its size
        rss_end = job.rss()
        _fill(result, collector, sent, job)
        result.rss_mb = {"start": rss_start, "end": rss_end, "peak": job.rss_peak}
    result.notes["rss_curve_mb"] = rss_curve
    if result.checkpoint_bytes:
        result.notes["state_bytes_per_user"] = round(result.checkpoint_bytes / s.users, 1)
    half = rss_curve[len(rss_curve) // 2][1] if rss_curve else rss_end
    result.notes["rss_growth_second_half_mb"] = round(rss_end - half, 1)
    return result


SCENARIOS = {
    "kill9": scenario_kill9,
    "kill9-cold": scenario_kill9_cold,
    "kill9-exactly-once": scenario_kill9_exactly_once,
    "broker": scenario_broker,
    "savepoint": scenario_savepoint,
    "poison": scenario_poison,
    "users": scenario_users,
    "cluster-tm": scenario_cluster_taskmanager,
    "cluster-jm": scenario_cluster_jobmanager,
}


def run_faults(out: Path, *, quick: bool, only: list[str] | None, bundle: str, work: Path, seed: int = 5,
               sizes: Sizes | None = None) -> dict[str, Any]:
    """Run the scenarios (each on fresh topics of one broker), write ``out`` (JSON) and ``out``.md."""
    from tqdm.auto import tqdm

    sizes = sizes or (QUICK if quick else FULL)
    names = only or list(SCENARIOS)
    unknown = sorted(set(names) - set(SCENARIOS))
    if unknown:
        msg = f"unknown scenario(s) {unknown}; choose from {list(SCENARIOS)}"
        raise ValueError(msg)
    results: list[ScenarioResult] = []
    with LocalKafka(work / "kafka") as kafka:

        def make_job(name: str, extra: list[str]) -> Job:
            shutil.rmtree(work / name, ignore_errors=True)  # `--restore-from latest` must not find an old run
            topics = {k: f"faults.{name}.{k}" for k in ("input", "output", "dead")}
            kafka.create_topics({topics["input"]: 2, topics["output"]: 2, topics["dead"]: 1})
            return Job(kafka, work / name, topics, bundle, extra)

        ctx = {"kafka": kafka, "sizes": sizes, "seed": seed, "job": make_job, "bundle": bundle}
        for name in tqdm(names, desc="faults", unit="scenario"):
            t0 = time.monotonic()
            try:
                result = SCENARIOS[name](ctx)
            except Exception as exc:  # a scenario that cannot run is a failed row, not a lost report
                log.exception("scenario %s failed to run", name)
                result = ScenarioResult(name, checks={"scenario ran": False}, notes={"error": repr(exc)})
            result.wall_s = round(time.monotonic() - t0, 1)
            results.append(result)
            log.info("%s: %s", name, "ok" if result.ok else f"FAILED {result.checks}")
    doc = {"quick": quick, "sizes": asdict(sizes), "scenarios": [{**asdict(r), "ok": r.ok} for r in results],
           "ok": all(r.ok for r in results)}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    out.with_suffix(".md").write_text(table(doc) + "\n")
    return doc


def table(doc: dict[str, Any]) -> str:
    """The report as a Markdown table."""
    head = ("| scenario | events | lists | dead letters | missing | duplicates | kill→first list s | "
            "input restarts | RSS MB (peak) | checkpoint bytes | wall s | ok |")
    rows = [head, "|" + "---|" * 12]
    for r in doc["scenarios"]:
        kills = ", ".join(f"{t:.1f}" for t in r["kill_to_first_list_s"]) or "-"
        rows.append(f"| {r['name']} | {r['events']:,} | {r['lists']:,} | {r['dead_letters']:,} | {r['missing']:,} | "
                    f"{r['duplicates']:,} | {kills} | {r['input_restarts']} | {r['rss_mb'].get('peak', '-')} | "
                    f"{r['checkpoint_bytes'] or '-'} | {r['wall_s']} | {'yes' if r['ok'] else 'NO'} |")
    failed = [f"- {r['name']}: " + ", ".join(k for k, v in r["checks"].items() if not v)
              for r in doc["scenarios"] if not r["ok"]]
    return "\n".join(rows + (["", "Failed checks:", *failed] if failed else []))


def main(argv: list[str] | None = None) -> int:
    import argparse

    from deploy.harness.demo_bundle import bundle_or_demo
    from deploy.harness.paths import runtime_dir

    p = argparse.ArgumentParser(prog="streamrec faults", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smaller scenarios (under 20 minutes on 2 cores)")
    p.add_argument("--out", default="perf/results/faults.json", help="JSON report (a .md table beside it)")
    p.add_argument("--only", action="append", default=None, choices=list(SCENARIOS), help="run this scenario "
                   "(repeatable; default: all)")
    p.add_argument("--scale", type=float, default=1.0, help="multiply every scenario's size (e.g. 0.2 for a "
                   "smoke run)")
    p.add_argument("--bundle", default=None, help="model bundle (default: the demo bundle, trained if missing)")
    p.add_argument("--work", default=None, help="broker data, checkpoints and logs (default: .streamrec/faults)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.CRITICAL)  # the broker scenario makes every client complain
    work = Path(args.work) if args.work else runtime_dir() / "faults"
    base = QUICK if args.quick else FULL
    sizes = Sizes(**{k: (max(1, round(v * args.scale)) if k.endswith(("events", "poison", "users")) else v)
                     for k, v in asdict(base).items()})
    bundle = str(Path(bundle_or_demo(args.bundle)).resolve())
    doc = run_faults(Path(args.out), quick=args.quick, only=args.only, bundle=bundle, work=work.resolve(),
                     sizes=sizes)
    print(table(doc))
    print(f"report: {args.out} and {Path(args.out).with_suffix('.md')}")
    return 0 if doc["ok"] else 1
