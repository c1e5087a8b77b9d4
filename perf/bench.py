"""``streamrec bench``: open-loop load at fixed rates through the real job, side by side with a bare Kafka relay
and a Flink identity job fed the same load in the same run.

For each pipeline (``job``: ``streamrec run`` exactly as users start it; ``relay``: a kafka-python
consume->produce loop, no Flink; ``identity``: the job's own wiring with a pass-through Python function) and
each rate: a producer process sends events open-loop (on a fixed schedule, never waiting for the pipeline),
a consumer process reads the output topic, and latency is ``receive time - send time`` (the event's ``ts`` is
its send time; same clock). The first ``--warmup`` seconds of each rate are excluded. Every run checks that
every event came out exactly once (``duplicates``, ``missing``).

Before the job's rates, every bench user gets ``--history`` events (not measured) so that lists are computed
on full windows. The job's Python side reports where its time goes (``per_event_us``, from its JSON log).

    streamrec bench --rates 1000,5000 --seconds 30 --out perf/results/bench.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
SUSTAINED_P99_MS = 250.0
SUSTAINED_SHARE = 0.95
"""A rate is sustained when p99 <= SUSTAINED_P99_MS, nothing is missing and the achieved rate is at least this
share of the offered one."""
DRAIN_AFTER_S = 3.0


def user_rate_cap(users: int, history: int) -> float:
    """The highest total rate whose per-user rate stays under the job's abuse limit as the bench sets it
    (``history - 1`` events per user and minute), with a margin of about four standard deviations of a user's
    count per minute."""
    return 0.75 * users * (history - 1) / 60.0


# --------------------------------------------------------------------------- load generator (own process)
def _events(n: int, users: int, items: int, seed: int, tag: str) -> tuple[list[bytes], list[bytes]]:
    rng = np.random.default_rng(seed)
    user_ids = rng.integers(0, users, size=n)
    item_ids = np.minimum(rng.zipf(1.2, size=n), items) - 1
    keys = [f"bu{u}".encode() for u in user_ids.tolist()]
    bodies = [f'"user_id":"bu{u}","item_id":"i{i}","event_type":"view","event_id":"{tag}-{k}"'.encode()
              for k, (u, i) in enumerate(zip(user_ids.tolist(), item_ids.tolist(), strict=True))]
    return keys, bodies


def _produce(bootstrap: str, topic: str, rate: float | None, n: int, users: int, items: int, seed: int, tag: str,
             ready: Any, result: Any) -> None:
    """Send ``n`` events at ``rate`` per second (None: as fast as possible); each carries its send time."""
    from kafka import KafkaProducer

    keys, bodies = _events(n, users, items, seed, tag)
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=1, max_in_flight_requests_per_connection=5)
    if not ready.wait(timeout=120):
        producer.close()
        result.put({"error": "the collector never became ready"})
        return
    t0 = time.monotonic()
    late = 0
    for k in range(n):
        if rate:
            delay = t0 + k / rate - time.monotonic()
            if delay > 0.0005:
                time.sleep(delay)
            elif delay < -0.05:
                late += 1
        now_ms = time.time_ns() // 1_000_000
        producer.send(topic, key=keys[k], value=b"{" + bodies[k] + b',"ts":' + str(now_ms).encode() + b"}")
    producer.flush()
    producer.close()
    result.put({"sent": n, "send_s": time.monotonic() - t0, "late_sends": late})


def _collect(bootstrap: str, topic: str, expected: int, kind: str, tag: str, idle_s: float, ready: Any,
             result: Any) -> None:
    """Read the output topic until every expected record arrived (or ``idle_s`` without news)."""
    import msgspec

    from deploy.harness.kafka_clients import assigned_consumer

    consumer = assigned_consumer(bootstrap, [topic], from_beginning=False, fetch_max_wait_ms=5,
                                 max_poll_records=2000)
    decoder = msgspec.json.Decoder()
    ready.set()
    seen: dict[str, int] = {}
    latency, arrival = [], []
    duplicates = 0
    lists = 0
    last_news = time.monotonic()
    prefix = tag + "-"
    complete_at = None  # once every expected record arrived: read on for DRAIN_AFTER_S so late duplicates count
    while time.monotonic() - last_news < idle_s:
        if len(seen) >= expected:
            complete_at = complete_at or time.monotonic()
            if time.monotonic() - complete_at >= DRAIN_AFTER_S:
                break
        batch = consumer.poll(timeout_ms=100)
        now_ms = time.time_ns() / 1e6
        for records in batch.values():
            for record in records:
                doc = decoder.decode(record.value)
                event_id = doc.get("event_id", "")
                if not event_id.startswith(prefix):
                    continue
                sent_ms = doc["event_ts"] if kind.startswith("job") else doc["ts"]
                if event_id in seen:
                    duplicates += 1
                    continue
                seen[event_id] = 1
                lists += "items" in doc
                latency.append(now_ms - sent_ms)
                arrival.append(now_ms)
                last_news = time.monotonic()
    consumer.close()
    result.put({"latency": latency, "arrival": arrival, "received": len(seen), "duplicates": duplicates,
                "lists": lists})


# --------------------------------------------------------------------------- bare relay (own process)
def _relay(bootstrap: str, src: str, dst: str, stop: Any) -> None:
    """consume -> produce, key and value unchanged: the floor any Kafka-to-Kafka pipeline pays."""
    from kafka import KafkaProducer

    from deploy.harness.kafka_clients import assigned_consumer

    consumer = assigned_consumer(bootstrap, [src], from_beginning=False, fetch_max_wait_ms=5, max_poll_records=2000)
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    while not stop.is_set():
        for records in consumer.poll(timeout_ms=50).values():
            for record in records:
                producer.send(dst, key=record.key, value=record.value)
        producer.flush()
    consumer.close()
    producer.close()


# --------------------------------------------------------------------------- one rate through one pipeline
def _summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {k: float("nan") for k in ("p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms", "mean_ms")}
    arr = np.asarray(values)
    q = np.percentile(arr, [50, 90, 99, 99.9])
    return {"p50_ms": float(q[0]), "p90_ms": float(q[1]), "p99_ms": float(q[2]), "p999_ms": float(q[3]),
            "max_ms": float(arr.max()), "mean_ms": float(arr.mean())}


def run_rate(bootstrap: str, topics: tuple[str, str], kind: str, rate: float | None, n: int, users: int,
             items: int, seed: int, tag: str, warmup_s: float, drain_s: float) -> dict[str, Any]:
    """Send ``n`` events at ``rate`` and collect the outputs; stats exclude the first ``warmup_s`` seconds."""
    ctx = mp.get_context("spawn")
    ready, produced, collected = ctx.Event(), ctx.Queue(), ctx.Queue()
    collector = ctx.Process(target=_collect, args=(bootstrap, topics[1], n, kind, tag, drain_s, ready, collected),
                            daemon=True)
    producer = ctx.Process(target=_produce, args=(bootstrap, topics[0], rate, n, users, items, seed, tag, ready,
                                                  produced), daemon=True)
    collector.start()
    producer.start()
    try:
        sent = _get(produced, producer, n / (rate or 1000) + 600)
        got = _get(collected, collector, drain_s + 900)
    finally:
        for proc in (producer, collector):
            proc.join(timeout=30)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=10)
    arrival = np.asarray(got["arrival"])
    latency = np.asarray(got["latency"])
    keep = arrival >= arrival.min() + warmup_s * 1000 if arrival.size else arrival.astype(bool)
    measured = latency[keep]
    span = (arrival[keep].max() - arrival[keep].min()) / 1000 if keep.sum() > 1 else float("nan")
    out = {"rate": rate, "events": n, "received": got["received"], "lists": got["lists"],
           "duplicates": got["duplicates"], "missing": n - got["received"], "measured": int(keep.sum()),
           "achieved_eps": float((keep.sum() - 1) / span) if span == span and span > 0 else float("nan"),
           "send_s": sent["send_s"], "late_sends": sent["late_sends"], **_summary(measured.tolist())}
    out["latency_cdf"] = np.percentile(measured, np.linspace(0, 100, 101)).round(3).tolist() if measured.size else []
    return out


def _get(queue: Any, proc: Any, timeout_s: float) -> dict[str, Any]:
    """The child's result, failing fast (with its exit code) if it died instead of answering."""
    import queue as queue_mod

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            out = queue.get(timeout=5)
        except queue_mod.Empty:
            if not proc.is_alive():
                msg = f"bench child {proc.name} exited with code {proc.exitcode} without a result"
                raise RuntimeError(msg) from None
            if time.monotonic() > deadline:
                msg = f"bench child {proc.name} gave no result within {timeout_s:.0f} s"
                raise RuntimeError(msg) from None
            continue
        if "error" in out:
            raise RuntimeError(out["error"])
        return out


def _sustained(r: dict[str, Any]) -> bool:
    rate = r["rate"] or 0
    return (r["missing"] == 0 and r["p99_ms"] <= SUSTAINED_P99_MS and r["achieved_eps"] >= SUSTAINED_SHARE * rate
            and r["late_sends"] <= 0.01 * r["events"])


def find_max(probe: Any, lo: float, hi: float, steps: int) -> tuple[float, list[dict[str, Any]]]:
    """The highest sustained rate by geometric bisection between ``lo`` and ``hi`` events/s (``probe(rate)``
    runs one rate and returns its record); ``hi`` is tried first (a pipeline that carries it needs no search).
    Returns (the highest sustained rate measured, 0 if none; every probe in order)."""
    probes: list[dict[str, Any]] = []
    first = probe(hi)
    probes.append(first)
    if _sustained(first):
        return hi, probes
    best = 0.0
    for _ in range(steps):
        mid = float(round(np.sqrt(lo * hi), -1))
        if not lo < mid < hi:
            break
        r = probe(mid)
        probes.append(r)
        if _sustained(r):
            lo = best = mid
        else:
            hi = mid
    if not best:  # the lower bound itself was never measured: measure it
        r = probe(lo)
        probes.append(r)
        best = lo if _sustained(r) else 0.0
    return best, probes


# --------------------------------------------------------------------------- pipelines
class _Pipeline:
    def __init__(self, kind: str, kafka: Any, work: Path, bundle: Path, history: int, micro_batch: int = 32,
                 catalog: Path | None = None, name: str | None = None) -> None:
        self.kind, self.kafka, self.work, self.bundle, self.history = kind, kafka, work, bundle, history
        self.micro_batch = micro_batch
        self.catalog = catalog
        self.name = name or kind  # topics, consumer group, checkpoints and logs
        self.parallelism = 1
        self.extra: list[str] = []
        self.topics = (f"bench.{self.name}.in", f"bench.{self.name}.out")
        self.proc: Any = None
        self.stop_event: Any = None

    def __enter__(self) -> _Pipeline:
        self.kafka.create_topics({self.topics[0]: 4, self.topics[1]: 4, f"bench.{self.name}.dead": 1})
        if self.kind == "relay":
            ctx = mp.get_context("spawn")
            self.stop_event = ctx.Event()
            self.proc = ctx.Process(target=_relay, args=(self.kafka.bootstrap, *self.topics, self.stop_event),
                                    daemon=True)
            self.proc.start()
            time.sleep(2)
            return self
        from deploy.harness.job_process import JobProcess, wait_until_serving

        args = ["--bootstrap-servers", self.kafka.bootstrap, "--bundle", str(self.bundle), "--checkpoint-dir",
                str(self.work / f"ck-{self.name}"), "--input-topic", self.topics[0], "--output-topic",
                self.topics[1], "--dead-letter-topic", f"bench.{self.name}.dead", "--top-k", "10",
                "--history-len", str(self.history), "--group-id", f"bench-{self.name}"]
        if self.kind == "job-batch":
            args += ["--micro-batch", str(self.micro_batch)]
        elif self.kind == "job-single":  # one event per model call (micro-batching off)
            args += ["--micro-batch", "1"]
        # a bench key carries rate/users events per second: the abuse filter's per-user limit is raised to the
        # most it may be (history_len - 1 per minute: the window is the evidence); rates are kept below
        # users * that limit (user_rate_cap), so it judges no bench key; its identical-run rule stays
        args += ["--abuse", f"max_events_per_minute={self.history - 1}", "--parallelism", str(self.parallelism)]
        if self.catalog is not None:  # user interests and everything else re-ranking does by default
            args += ["--catalog", str(self.catalog)]
        if self.kind.startswith("job"):
            args += self.extra
        job = JobProcess(args, self.work / f"logs-{self.name}")
        if self.kind == "identity":
            job.command = ["-m", "perf.identity_job"]
        elif self.kind == "identity-state":
            job.command = ["-m", "perf.identity_job", "--touch-state"]
        self.proc = job.start()
        try:
            self.startup_s = wait_until_serving(job, self.kafka.bootstrap, self.topics[0], self.topics[1],
                                                timeout_s=300)
        except BaseException:
            job.stop()
            raise
        return self

    def per_event_us(self) -> dict[str, Any]:
        """The job's last 'per-event python time' log line."""
        path = self.proc.task_log
        lines = [json.loads(line) for line in path.read_text("utf-8").splitlines() if '"per_event_us"' in line]
        return lines[-1] if lines else {}

    def __exit__(self, *exc: object) -> None:
        if self.kind == "relay":
            self.stop_event.set()
            self.proc.join(timeout=10)
            if self.proc.is_alive():
                self.proc.terminate()
                self.proc.join(timeout=10)
        else:
            self.proc.stop()


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    import importlib.metadata as md

    versions = {p: md.version(p) for p in ("apache-flink", "onnxruntime", "kafka-python", "numpy", "msgspec")}
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor()
    return {"host": platform.node(), "cpu": cpu, "cores": os.cpu_count(), "load_avg_1m": os.getloadavg()[0],
            "python": platform.python_version(),
            "platform": platform.platform(), "kafka": "4.1.1 (local, KRaft, 1 node)", **versions}


def plot(result: dict[str, Any], path: Path) -> None:
    """p50/p99 per rate and pipeline, and the job's latency CDF per rate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, cdf) = plt.subplots(1, 2, figsize=(11, 4))
    for kind, style in (("job", "o-"), ("job-batch", "d-"), ("identity", "s--"), ("identity-state", "x--"),
                        ("relay", "^:")):
        rows = [r for r in result["rates"] if kind in r]
        if rows:
            rates = [r["rate"] for r in rows]
            ax.plot(rates, [r[kind]["p50_ms"] for r in rows], style, label=f"{kind} p50")
            ax.plot(rates, [r[kind]["p99_ms"] for r in rows], style, alpha=0.5, label=f"{kind} p99")
    ax.axhline(SUSTAINED_P99_MS, color="grey", lw=0.8, ls="--")
    ax.set(xscale="log", yscale="log", xlabel="offered load (events/s)", ylabel="latency (ms)",
           title="event -> output latency")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    for r in result["rates"]:
        if "job" in r and r["job"]["latency_cdf"]:
            cdf.plot(r["job"]["latency_cdf"], np.linspace(0, 1, 101), label=f"{r['rate']:.0f}/s")
    cdf.set(xscale="log", xlabel="latency (ms)", ylabel="share of events", title="job latency CDF")
    cdf.grid(alpha=0.3)
    cdf.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def check(result: dict[str, Any]) -> list[str]:
    """The bench's own output checks: every event exactly once per pipeline and rate, numbers present."""
    problems = []
    for r in result["rates"]:
        for kind in ("job", "job-batch", "relay", "identity", "identity-state"):
            if kind in r:
                x = r[kind]
                if x["missing"] or x["duplicates"]:
                    problems.append(f"{kind} at {r['rate']}/s: missing={x['missing']} duplicates={x['duplicates']}")
                if not x["measured"]:
                    problems.append(f"{kind} at {r['rate']}/s: nothing measured")
    return problems


def main(argv: list[str] | None = None) -> int:
    from tqdm.auto import tqdm

    from deploy.harness.local_kafka import LocalKafka
    from deploy.harness.paths import runtime_dir
    from perf.bench_bundle import bench_bundle

    p = argparse.ArgumentParser(prog="streamrec bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--rates", default="100,1000,2000,5000", help="comma-separated events/s")
    p.add_argument("--seconds", type=float, default=30.0, help="per rate, warm-up included")
    p.add_argument("--warmup", type=float, default=5.0, help="seconds excluded at the start of each rate")
    p.add_argument("--catalog", type=int, default=10_000, help="items in the bench bundle (LRU, random weights)")
    p.add_argument("--bundle", default=None, help="serve this bundle instead of the bench bundle")
    p.add_argument("--history", type=int, default=200, help="events per user before measuring (window length)")
    p.add_argument("--users", type=int, default=1_000)
    p.add_argument("--pipelines", default="job,relay,identity",
                   help="any of job (defaults), job-batch (the job with --micro-batch N), job-single (with "
                        "--micro-batch 1), relay, identity, identity-state (the identity plus a keyed-state read "
                        "and write of the job's state size per event)")
    p.add_argument("--micro-batch", type=int, default=32, help="micro-batch size of the job-batch pipeline")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--find-max", action="store_true",
                   help="bisect each pipeline's max sustained rate instead of running --rates (job and identity "
                        "in the same run), then run the job and the identity job at half the job's maximum")
    p.add_argument("--min-rate", type=float, default=200.0, help="--find-max: lower bound, events/s")
    p.add_argument("--max-rate", type=float, default=8000.0, help="--find-max: upper bound, events/s")
    p.add_argument("--bisect-steps", type=int, default=5)
    p.add_argument("--catalog-items", default="",
                   help="--find-max: also bisect the job over bench bundles of these catalog sizes, e.g. "
                        "10000,100000,1000000 (catalogs[] in the JSON)")
    p.add_argument("--neighbors", type=int, default=100, help="co-occurrence neighbours per item of the bench bundle")
    p.add_argument("--catalog-neighbors", type=int, default=20,
                   help="co-occurrence neighbours per item of the --catalog-items bundles (20 keeps 1M items "
                        "under 400 bytes per item)")
    p.add_argument("--parallelism", type=int, default=1, help="the job's and the identity job's parallelism")
    p.add_argument("--job-arg", action="append", default=[], metavar="ARG",
                   help="one more `streamrec run` argument for the job pipelines (repeat), e.g. --job-arg=--trending "
                        "--job-arg=enabled=false")
    p.add_argument("--out", default=str(RESULTS / "bench.json"))
    args = p.parse_args(argv)
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    kinds = [k.strip() for k in args.pipelines.split(",") if k.strip()]
    home = runtime_dir()
    bundle = (Path(args.bundle).expanduser().resolve() if args.bundle
              else bench_bundle(home / "bench" / "bundles", args.catalog, neighbors=args.neighbors))
    from operators.bundle import load_bundle

    b = load_bundle(bundle)
    work = Path(tempfile.mkdtemp(prefix="bench-", dir=home / "bench"))
    catalog = None
    if not args.bundle:  # the bench bundle's items are the generator's: its taste clusters are their categories
        from deploy.harness.generator import GeneratorConfig, write_catalog

        catalog = write_catalog(GeneratorConfig(n_items=args.catalog), work / "catalog.csv")
    result: dict[str, Any] = {
        "machine": machine(), "catalog_items": b.n_items, "history_len": args.history, "users": args.users,
        "bundle": b.version, "recurrent": b.recurrent, "seconds": args.seconds, "warmup_s": args.warmup,
        "seed": args.seed, "producer": {"acks": 1, "linger_ms": 1}, "rates": [{"rate": r} for r in rates],
        "work_dir": str(work), "parallelism": args.parallelism,
    }
    if args.find_max:
        return _find_max_main(args, result, kinds, work, bundle, b, catalog)
    bar = tqdm(total=len(kinds) * len(rates), desc="bench", unit="run")
    with LocalKafka(work / "kafka") as kafka:
        for kind in kinds:
            pipe = _Pipeline(kind, kafka, work, bundle, args.history, args.micro_batch, catalog)
            pipe.parallelism, pipe.extra = args.parallelism, args.job_arg
            with pipe:
                if kind.startswith("job"):
                    result[f"{kind}_startup_s"] = pipe.startup_s
                    prefill = args.users * args.history
                    bar.set_postfix_str(f"prefill {prefill} events")
                    pre = run_rate(kafka.bootstrap, pipe.topics, kind, user_rate_cap(args.users, args.history),
                                   prefill, args.users, b.n_items, args.seed, "prefill", 0.0, 60.0)
                    result[f"prefill_{kind}"] = {k: pre[k] for k in ("events", "received", "missing", "achieved_eps")}
                for slot, rate in zip(result["rates"], rates, strict=True):
                    bar.set_postfix_str(f"{kind} at {rate:.0f}/s")
                    n = int(rate * args.seconds)
                    slot[kind] = run_rate(kafka.bootstrap, pipe.topics, kind, rate, n, args.users, b.n_items,
                                          args.seed + int(rate), f"{kind}{int(rate)}", args.warmup, 30.0)
                    bar.update()
                if kind.startswith("job"):
                    report = pipe.per_event_us()
                    result["per_event_us" if kind == "job" else f"per_event_us_{kind}"] = report.get("per_event_us", {})
                    result[f"{kind}_counts"] = report.get("counts", {})
    bar.close()
    for slot in result["rates"]:
        for kind in ("job", "job-batch", "identity", "identity-state"):
            if kind in slot and "relay" in slot and slot["relay"]["p50_ms"] > 0:
                slot[kind]["p50_vs_relay"] = slot[kind]["p50_ms"] / slot["relay"]["p50_ms"]
                slot[kind]["p99_vs_relay"] = slot[kind]["p99_ms"] / slot["relay"]["p99_ms"]
    sustained = [s["rate"] for s in result["rates"] if "job" in s and _sustained(s["job"])]
    result["max_sustained_eps"] = max(sustained) if sustained else 0.0
    if "job-batch" in kinds:
        batched = [s["rate"] for s in result["rates"] if "job-batch" in s and _sustained(s["job-batch"])]
        result["max_sustained_eps_micro_batch"] = max(batched) if batched else 0.0
    result["problems"] = check(result)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    plot(result, out.with_suffix(".png"))
    for slot in result["rates"]:
        line = f"{slot['rate']:>7.0f}/s"
        for kind in ("job", "job-batch", "identity", "identity-state", "relay"):
            if kind in slot:
                x = slot[kind]
                line += (f" | {kind}: p50 {x['p50_ms']:.1f} p99 {x['p99_ms']:.1f} ms, {x['achieved_eps']:.0f}/s, "
                         f"missing {x['missing']}, dup {x['duplicates']}")
        print(line)
    print(f"max sustained (p99 <= {SUSTAINED_P99_MS:.0f} ms, nothing missing): "
          f"{result['max_sustained_eps']:.0f} events/s")
    print(f"per-event python us: {json.dumps(result.get('per_event_us', {}))}")
    print(f"written to {out} and {out.with_suffix('.png')}")
    for problem in result["problems"]:
        print(f"CHECK FAILED: {problem}")
    return 1 if result["problems"] else 0


def _bundle_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in Path(path).iterdir() if f.is_file()) / 1e6


def _find_max_main(args: Any, result: dict[str, Any], kinds: list[str], work: Path, bundle: Path, b: Any,
                   catalog: Path | None) -> int:
    """``--find-max``: bisection per pipeline, the job first; then the job and the identity job at half the
    job's maximum (latency side by side, the job's per-event gauges there); then ``--catalog-items``."""
    from tqdm.auto import tqdm

    from deploy.harness.local_kafka import LocalKafka
    from deploy.harness.paths import runtime_dir
    from perf.bench_bundle import bench_bundle

    order = [k for k in kinds if k.startswith("job")] + [k for k in kinds if not k.startswith("job")]
    sizes = [int(x) for x in args.catalog_items.split(",") if x.strip()]
    bar = tqdm(desc="bench --find-max", unit="probe")
    result["find_max"] = {"min_rate": args.min_rate, "max_rate": args.max_rate, "steps": args.bisect_steps,
                          "probe_seconds": args.seconds, "sustained": {"p99_ms": SUSTAINED_P99_MS,
                                                                         "achieved_share": SUSTAINED_SHARE}}

    cap = user_rate_cap(args.users, args.history)
    result["find_max"]["user_rate_cap"] = cap

    def bisect(kafka: Any, pipe: _Pipeline, kind: str, n_items: int) -> tuple[float, list[dict[str, Any]]]:
        def probe(rate: float) -> dict[str, Any]:
            bar.set_postfix_str(f"{kind} ({n_items} items) at {rate:.0f}/s")
            r = run_rate(kafka.bootstrap, pipe.topics, kind, rate, int(rate * args.seconds), args.users, n_items,
                         args.seed + int(rate), f"{kind}-{n_items}-{int(rate)}-{time.monotonic_ns()}", args.warmup,
                         60.0)
            r["sustained"] = _sustained(r)
            r.pop("latency_cdf", None)
            bar.update()
            return r

        hi = min(args.max_rate, cap) if kind.startswith("job") else args.max_rate
        return find_max(probe, args.min_rate, hi, args.bisect_steps)

    def prefill(kafka: Any, pipe: _Pipeline, kind: str, n_items: int) -> dict[str, Any]:
        bar.set_postfix_str(f"prefill {kind}")
        # paced under the abuse filter's per-user limit (it quarantines bursts): users * history events
        pre = run_rate(kafka.bootstrap, pipe.topics, kind, min(args.max_rate, cap), args.users * args.history,
                       args.users, n_items, args.seed, f"prefill-{n_items}", 0.0, 60.0)
        return {k: pre[k] for k in ("events", "received", "missing", "achieved_eps")}

    with LocalKafka(work / "kafka") as kafka:
        half = None
        for kind in order:
            pipe = _Pipeline(kind, kafka, work, bundle, args.history, args.micro_batch, catalog)
            pipe.parallelism, pipe.extra = args.parallelism, args.job_arg
            with pipe:
                if kind.startswith("job"):
                    result[f"{kind}_startup_s"] = pipe.startup_s
                    result[f"prefill_{kind}"] = prefill(kafka, pipe, kind, b.n_items)
                best, probes = bisect(kafka, pipe, kind, b.n_items)
                key = "max_sustained_eps" if kind == "job" else f"{kind.replace('-', '_')}_max_sustained_eps"
                result[key] = best
                result[f"{kind}_probes"] = probes
                if kind == "job":
                    half = max(best / 2, args.min_rate / 2)
                if half is not None:
                    bar.set_postfix_str(f"{kind} at half the job's max ({half:.0f}/s)")
                    r = run_rate(kafka.bootstrap, pipe.topics, kind, half, int(half * args.seconds), args.users,
                                 b.n_items, args.seed + 1, f"{kind}-half-{time.monotonic_ns()}", args.warmup, 60.0)
                    r["sustained"] = _sustained(r)
                    result.setdefault("at_half_job_max", {"rate": half})[kind] = r
                    if kind.startswith("job"):
                        time.sleep(6)  # one more per-event report, all of it at half the maximum
                        report = pipe.per_event_us()
                        result["per_event_us" if kind == "job" else f"per_event_us_{kind}"] = report.get(
                            "per_event_us", {})
                        result[f"{kind}_counts"] = report.get("counts", {})
        catalogs = []
        for n_items in sizes:
            path = bench_bundle(runtime_dir() / "bench" / "bundles", n_items, neighbors=args.catalog_neighbors)
            from deploy.harness.generator import GeneratorConfig, write_catalog
            from operators.bundle import load_bundle

            cat = write_catalog(GeneratorConfig(n_items=n_items), work / f"catalog-{n_items}.csv")
            with _Pipeline("job", kafka, work, path, args.history, args.micro_batch, cat,
                           name=f"job-{n_items}") as pipe:
                pre = prefill(kafka, pipe, "job", n_items)
                best, probes = bisect(kafka, pipe, "job", n_items)
                catalogs.append({"catalog_items": n_items, "neighbors": args.catalog_neighbors,
                                 "max_sustained_eps": best, "bundle_mb": _bundle_mb(path),
                                 "scoring": load_bundle(path).manifest.get("scoring", {}).get("index", {}).get(
                                     "kind", "exact"), "prefill": pre, "probes": probes,
                                 "per_event_us": pipe.per_event_us().get("per_event_us", {})})
        result["catalogs"] = catalogs
    bar.close()
    if half is not None and "identity" in result.get("at_half_job_max", {}):
        at = result["at_half_job_max"]
        ratio = {"p50": at["job"]["p50_ms"] / at["identity"]["p50_ms"],
                 "p99": at["job"]["p99_ms"] / at["identity"]["p99_ms"]}
        at["job_vs_identity"] = ratio
    if "identity_max_sustained_eps" in result and result["identity_max_sustained_eps"]:
        result["job_vs_identity_max"] = result.get("max_sustained_eps", 0.0) / result["identity_max_sustained_eps"]
    if result.get("identity_state_max_sustained_eps") and result.get("identity_max_sustained_eps"):
        result["state_floor_vs_identity_max"] = (result["identity_state_max_sustained_eps"]
                                                 / result["identity_max_sustained_eps"])
    result["problems"] = check_find_max(result)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    plot_find_max(result, out.with_suffix(".png"))
    print(json.dumps({k: result.get(k) for k in ("max_sustained_eps", "identity_max_sustained_eps",
                                                 "job_batch_max_sustained_eps", "job_vs_identity_max",
                                                 "identity_state_max_sustained_eps", "state_floor_vs_identity_max",
                                                 "per_event_us")}, indent=1))
    if half is not None:
        for kind, r in result["at_half_job_max"].items():
            if isinstance(r, dict) and "p50_ms" in r:
                print(f"at {half:.0f}/s {kind}: p50 {r['p50_ms']:.1f} p99 {r['p99_ms']:.1f} ms, "
                      f"missing {r['missing']}, dup {r['duplicates']}")
    for c in result["catalogs"]:
        print(f"catalog {c['catalog_items']}: max sustained {c['max_sustained_eps']:.0f}/s, "
              f"bundle {c['bundle_mb']:.0f} MB")
    print(f"written to {out} and {out.with_suffix('.png')}")
    for problem in result["problems"]:
        print(f"CHECK FAILED: {problem}")
    return 1 if result["problems"] else 0


def check_find_max(result: dict[str, Any]) -> list[str]:
    """Every probe's record counts add up; a sustained probe lost nothing; duplicates are reported."""
    problems = []
    runs = [r for k, v in result.items() if k.endswith("_probes") for r in v]
    runs += [r for c in result.get("catalogs", []) for r in c["probes"]]
    runs += [r for r in result.get("at_half_job_max", {}).values() if isinstance(r, dict) and "events" in r]
    for r in runs:
        if r["received"] + r["missing"] != r["events"]:
            problems.append(f"at {r['rate']}/s: received {r['received']} + missing {r['missing']} != {r['events']}")
        if r["duplicates"]:
            problems.append(f"at {r['rate']}/s: {r['duplicates']} duplicates")
        if r.get("sustained") and r["missing"]:
            problems.append(f"at {r['rate']}/s: called sustained with {r['missing']} missing")
    jobs = [v for k, v in result.items() if k == "max_sustained_eps" or k.startswith("job_batch_max_sustained")]
    if not any(jobs):
        problems.append("the job sustained no rate")
    return problems


def plot_find_max(result: dict[str, Any], path: Path) -> None:
    """Each probe (rate vs p99, sustained or not) per pipeline, and max sustained per catalog size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, cat) = plt.subplots(1, 2, figsize=(11, 4))
    for key, probes in result.items():
        if key.endswith("_probes"):
            rates = [p["rate"] for p in probes]
            ax.scatter(rates, [max(p["p99_ms"], 1e-1) for p in probes], label=key[: -len("_probes")],
                       marker="o" if key.startswith("job") else "s")
    ax.axhline(SUSTAINED_P99_MS, color="grey", lw=0.8, ls="--")
    ax.set(xscale="log", yscale="log", xlabel="offered (events/s)", ylabel="p99 (ms)",
           title="bisection probes (below the line and complete = sustained)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    cats = result.get("catalogs", [])
    if cats:
        cat.plot([c["catalog_items"] for c in cats], [c["max_sustained_eps"] for c in cats], "o-", label="job")
        if result.get("identity_max_sustained_eps"):
            cat.axhline(result["identity_max_sustained_eps"], color="grey", ls="--", label="identity job")
        cat.set(xscale="log", xlabel="catalog items", ylabel="max sustained (events/s)", title="catalog size")
        cat.grid(alpha=0.3)
        cat.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
