"""``streamrec replay``: what the deployed job would have achieved on a timestamped event log.

Cut the log by time, train a model on the events before the cut (or take ``--bundle``), build the two
baselines as bundles the job serves the same way (most-popular over a trailing window before the cut;
item-to-item co-occurrence), then send every event in event-time order through each path and score the lists
(:mod:`model_export.replay`). Streamed (default): the real broker and the real job, started with
``streamrec run`` exactly as users start it. ``--offline``: the same operator code
(:class:`operators.serving.ServingCore`, RocksDB state in the job's layout) without Flink and Kafka.

    streamrec replay --data ../shared/data/ml-latest-small --format movielens --cutoff 0.8 --out DIR
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field
from tqdm import tqdm

from deploy.harness.collect import Collector
from model_export.replay import (
    EmittedList,
    ReplayPlan,
    decode_list,
    evaluate,
    paired_bootstrap,
    plan_replay,
    write_report,
)
from model_export.settings import TrainConfig
from operators.catalog import catalog_path, load_catalog
from operators.config import JobConfig
from operators.offline import RocksStateStore, serve_offline
from operators.rerank import parse_rerank
from operators.serving import LIST, ServingCore
from operators.settings import ModelOptions, Option, Settings, load_config_file
from operators.stats import latency_summary

__all__ = ["ReplayConfig", "run_replay", "build_parser", "main"]

log = logging.getLogger("streamrec.replay")


class ReplayConfig(Settings):
    """One ``streamrec replay`` invocation: its options and the ``[replay]`` table of a config file are generated
    from here (:data:`REPLAY_OPTIONS`)."""

    SECTION: ClassVar[str] = "replay"

    data: str = Field(description="MovieLens dir / ratings.csv, or a JSONL event log")
    out: str = Field(description="directory for summary.json, report.md and plots")
    fmt: Literal["events", "movielens"] = Field("events", description="the log's format")
    cutoff: float = Field(0.8, gt=0.0, lt=1.0, description="share of events (by time) before the cut")
    bundle: str | None = Field(None, description="serve this bundle instead of training one before the cut")
    offline: bool = Field(False, description="the same operator code without Flink and Kafka")
    speed: float | None = Field(None, gt=0.0, description="scaled event time (60 = one hour of log per minute); "
                                                          "unset: as fast as the job keeps up")
    max_events: int | None = Field(None, ge=1, description="replay only the first N events after the cut")
    top_k: int = Field(10, ge=1, description="length of the scored lists")
    baselines: bool = Field(True, description="replay most-popular and co-occurrence too")
    popular_window_days: float = Field(90.0, gt=0.0, description="most-popular counts this window before the cut")
    epochs: int | None = Field(None, ge=1, description="training of the model before the cut: `streamrec train`'s "
                                                      "defaults, one seed; this overrides its max_epochs")
    max_seq_len: int | None = Field(None, ge=1, description="overrides streamrec train's max_seq_len")
    max_train_seconds: float | None = Field(None, gt=0.0, description="overrides streamrec train's "
                                                                       "max_train_seconds")
    seed: int | None = Field(None, description="overrides streamrec train's seed")
    catalog: str | None = Field(None, description="item categories CSV (item_id,categories a|b) for diversity "
                                                  "(default: movies.csv beside MovieLens ratings)")
    max_in_flight: int = Field(100, ge=1, description="unanswered events at most (streamed, without --speed)")
    rerank: tuple[str, ...] = Field((), description="KEY=VALUE re-ranking knobs for the model (baselines are "
                                                    "served unre-ranked, as they were evaluated)")
    interests: tuple[str, ...] = Field((), description="KEY=VALUE user-interest knobs for the model (needs a "
                                                       "catalog)")
    trending: tuple[str, ...] = Field((), description="KEY=VALUE trending knobs for the model")

    def train_config(self) -> TrainConfig:
        """The model's training: :class:`TrainConfig`'s defaults, with this replay's overrides."""
        given = {"max_epochs": self.epochs, "max_seq_len": self.max_seq_len,
                 "max_train_seconds": self.max_train_seconds, "seed": self.seed}
        return TrainConfig().replace(**{k: v for k, v in given.items() if v is not None})


REPLAY_OPTIONS = ModelOptions(ReplayConfig, "replay", [
    Option("fmt", name="format"),
    Option("baselines", name="no_baselines", invert=True, help="skip the baselines"),
], exclude=("rerank", "interests", "trending"))
"""``streamrec replay``'s options of :class:`ReplayConfig` (``[replay]`` in ``--config``, ``STREAMREC_REPLAY_*``)."""


# --------------------------------------------------------------------------- bundles
def prepare_bundles(cfg: ReplayConfig, plan: ReplayPlan, work: Path) -> dict[str, Path]:
    """The model (trained on the events before the cut unless ``--bundle``) and the baseline bundles, all on the
    model's catalog."""
    from operators.bundle import load_bundle

    if cfg.bundle:
        model_path = Path(cfg.bundle).resolve()  # the job runs in its own directory
        load_bundle(model_path)
    else:
        from deploy.harness.extras import require

        require("torch", "streamrec replay (training the model before the cut; or pass --bundle)")
        from model_export.pipeline import TrainJob, run_training

        model_path = work / "bundles" / "model"
        print(f"training on {len(plan.train):,} events before the cut -> {model_path}", flush=True)
        train = cfg.train_config()
        run_training(TrainJob(data=cfg.data, out=str(model_path), fmt=cfg.fmt, seeds=(train.seed,),  # type: ignore[arg-type]
                              train=train, catalog=cfg.catalog),
                     frame=plan.train)
    bundles = {"model": model_path}
    if cfg.baselines:
        bundles.update(_baseline_bundles(cfg, plan, load_bundle(model_path), work / "bundles"))
    return bundles


def _baseline_bundles(cfg: ReplayConfig, plan: ReplayPlan, model: Any, root: Path) -> dict[str, Path]:
    from model_export.baselines import CooccurrenceConfig, cooccurrence_head, fit_cooccurrence, popular_head
    from model_export.data import first_interactions, left_pad
    from model_export.export import export_baseline_bundle

    vocab = list(model.item_vocab)
    index = {item: i + 1 for i, item in enumerate(vocab)}
    train = plan.train
    window_start = plan.cutoff_ts - int(cfg.popular_window_days * 86_400_000)
    recent = train[train["ts"] >= window_start]
    if len(recent) < 100:  # a sparse log: the whole period before the cut
        recent = train
    popularity = np.zeros(len(vocab) + 1, dtype=np.float64)
    for frame, weight in ((recent, 1.0), (train, 1e-3 / max(len(train), 1))):
        counts = frame["item_id"].map(index).dropna().astype(np.int64).value_counts()
        popularity[counts.index.to_numpy()] += weight * counts.to_numpy()
    popularity[0] = 0.0
    popular_items = [vocab[i - 1] for i in np.argsort(-popularity, kind="stable")[:500] if i > 0]
    seqs = first_interactions(train)
    sequences = [g["item_id"].map(index).dropna().astype(np.int64).to_numpy()
                 for _, g in seqs.groupby("user_id", sort=False)]
    saved = model.manifest.get("training", {}).get("cooccurrence")
    cooc_cfg = CooccurrenceConfig(**saved) if isinstance(saved, dict) else CooccurrenceConfig()
    cooc = fit_cooccurrence(sequences, len(vocab), cooc_cfg)
    rng = np.random.default_rng(0)
    training = {"cutoff_ts": plan.cutoff_ts, "events_before_cut": len(train),
                "popular_window_days": cfg.popular_window_days, "cooccurrence": cooc_cfg.__dict__}
    out = {}
    for name, head in (("popular", popular_head(popularity, 100, 1)),
                       ("cooccurrence", cooccurrence_head(cooc, popularity, 100))):
        samples = [left_pad([sequences[i] for i in rng.integers(0, len(sequences), size=b)], head.seq_len)
                   for b in (1, 7)]
        path = root / name
        export_baseline_bundle(head, path, version=f"baseline-{name}-{plan.cutoff_ts}", kind=name,
                               item_vocab=vocab, training=training, popular_items=popular_items,
                               sample_inputs=samples)
        out[name] = path
    return out


# --------------------------------------------------------------------------- the two paths
PLAIN_RERANK = ("repeat_window=0", "diversity_lambda=0")
PLAIN_ARGS = ("--rerank", "repeat_window=0", "--rerank", "diversity_lambda=0", "--interests", "enabled=false",
              "--trending", "enabled=false")
"""A baseline's path: served as it ranks (no re-ranking, interests or trending)."""


def _job_for(job: JobConfig, name: str) -> JobConfig:
    """The model path is re-ranked as configured; the baselines are served as they rank."""
    from operators.interests import InterestConfig
    from operators.trending import TrendingConfig

    if name == "model":
        return job
    return job.replace(rerank=parse_rerank(list(PLAIN_RERANK)), interests=InterestConfig(enabled=False),
                       trending=TrendingConfig(enabled=False))


def _catalog_path(cfg: ReplayConfig) -> str | None:
    """``--catalog``, else MovieLens's ``movies.csv`` beside the ratings (None when there is none)."""
    return catalog_path(cfg.catalog, cfg.data, cfg.fmt)


def replay_offline(cfg: ReplayConfig | None, plan: ReplayPlan, bundle: Path, name: str, job: JobConfig, *,
                   core: ServingCore | None = None) -> tuple[dict[str, EmittedList], dict[str, Any]]:
    """The operator code without Flink and Kafka: RocksDB state, one record after the other (``core``: a serving
    core made by the caller, e.g. with a behaviour switched for a comparison)."""
    core = core or ServingCore.from_config(job, str(bundle))
    store = RocksStateStore()
    lists: dict[str, EmittedList] = {}
    rejected: set[str] = set()
    started = time.perf_counter()
    try:
        for record, out, ms in tqdm(serve_offline(core, plan.records, store), total=len(plan.records),
                                     desc=f"replay {name} (offline)", unit="ev", mininterval=1.0):
            if out.kind != LIST:  # dead letter or quarantine
                rejected.add(plan.event_ids[record.offset])
                continue
            event_id, emitted = decode_list(out.value)
            lists[event_id] = EmittedList(emitted.items, emitted.scores, emitted.strategy, ms)  # serving time
    finally:
        store.close()
    wall = time.perf_counter() - started
    return lists, {"wall_s": wall, "throughput_eps": len(plan.records) / wall, "dead_letter": len(rejected),
                   "duplicates": 0, "rejected": rejected}


class _Collector(Collector):
    """Lists by event id (latency = receive - source time), duplicates, and which events were dead-lettered."""

    def __init__(self, bootstrap: str, topics: list[str]) -> None:
        super().__init__(bootstrap, topics[0], topics[1:], from_beginning=True, poll_ms=50,
                         name="replay-collector", fetch_max_wait_ms=5, max_poll_records=2000)
        self.by_event: dict[str, EmittedList] = {}
        self.received_at: list[float] = []
        self.duplicates = 0
        self.dead = 0
        self.rejected: set[str] = set()

    @property
    def answered(self) -> int:
        return len(self.by_event) + self.dead + self.duplicates

    def on_dead(self, value: bytes, now_ms: float) -> None:  # noqa: ARG002 - which event it was
        self.dead += 1
        raw = json.loads(value).get("raw")
        try:
            self.rejected.add(json.loads(raw)["event_id"])
        except (TypeError, ValueError, KeyError):
            pass

    def on_list(self, value: bytes, now_ms: float, *, probe: bool) -> None:
        if probe:
            return
        event_id, emitted = decode_list(value, now_ms)
        if event_id in self.by_event:
            self.duplicates += 1
            return
        self.by_event[event_id] = emitted
        self.received_at.append(now_ms)


def replay_streamed(cfg: ReplayConfig, plan: ReplayPlan, bundle: Path, name: str, kafka: Any,
                    work: Path) -> tuple[dict[str, EmittedList], dict[str, Any]]:
    """Every record through the real job (``streamrec run``), paced by the job (at most ``max_in_flight``
    unanswered events) or by scaled event time (``--speed``)."""
    from kafka import KafkaProducer

    from deploy.harness.job_process import JobProcess, wait_until_serving

    topics = [f"replay.{name}.out", f"replay.{name}.dead"]
    source = f"replay.{name}.in"
    kafka.create_topics({source: 4, topics[0]: 4, topics[1]: 1})
    args = ["--bootstrap-servers", kafka.bootstrap, "--bundle", str(bundle), "--checkpoint-dir",
            str(work / f"ck-{name}"), "--input-topic", source, "--output-topic", topics[0],
            "--dead-letter-topic", topics[1], "--top-k", str(cfg.top_k), "--group-id", f"replay-{name}",
            "--control-topic", f"replay.{name}.control"]
    if name == "model":
        for option, pairs in (("--rerank", cfg.rerank), ("--interests", cfg.interests), ("--trending", cfg.trending)):
            for pair in pairs:
                args += [option, pair]
        catalog = _catalog_path(cfg)
        if catalog:
            args += ["--catalog", catalog]
    else:
        args += list(PLAIN_ARGS)
    job = JobProcess(args, work / f"logs-{name}")
    job.start()
    collector = _Collector(kafka.bootstrap, topics)
    try:
        startup = wait_until_serving(job, kafka.bootstrap, source, topics[0], timeout_s=300)
        collector.start()
        producer = KafkaProducer(bootstrap_servers=kafka.bootstrap, acks=1, linger_ms=2)
        started = time.time()
        replay_started = started
        t0_event = int(plan.ts[plan.n_prefill]) if plan.n_replayed else 0
        for n, record in enumerate(tqdm(plan.records, desc=f"replay {name} (streamed)", unit="ev", mininterval=1.0)):
            if n == plan.n_prefill:
                replay_started = time.time()
            if cfg.speed and n >= plan.n_prefill:
                due = replay_started + (int(plan.ts[n]) - t0_event) / 1000 / cfg.speed
                delay = due - time.time()
                if delay > 0:
                    time.sleep(delay)
            else:
                while n - collector.answered >= cfg.max_in_flight:
                    if not job.alive():
                        msg = f"the job exited during the replay; its log:\n{job.log_tail()}"
                        raise RuntimeError(msg)
                    time.sleep(0.0005)
            producer.send(source, key=record.key.encode("utf-8"), value=record.payload)
        producer.flush()
        producer.close()
        deadline = time.monotonic() + 120
        while collector.answered < len(plan.records) and time.monotonic() < deadline:
            time.sleep(0.05)
        ended = max(collector.received_at) / 1000 if collector.received_at else time.time()
        wall = time.time() - started
    finally:
        collector.stop()
        job.stop()
    replay_wall = ended - replay_started
    return collector.by_event, {"wall_s": wall, "startup_s": startup, "dead_letter": collector.dead,
                             "rejected": collector.rejected,
                             "duplicates": collector.duplicates,
                             "throughput_eps": plan.n_replayed / max(replay_wall, 1e-9)}


# --------------------------------------------------------------------------- the whole replay
def run_replay(cfg: ReplayConfig) -> dict[str, Any]:
    """Run the replay; writes ``summary.json`` and ``report.md`` (+ PNGs) into ``cfg.out``."""
    from model_export.data import load_interactions

    started = time.perf_counter()
    out = Path(cfg.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = out / "work"
    plan = plan_replay(load_interactions(cfg.data, cfg.fmt), cfg.cutoff,  # type: ignore[arg-type]
                       max_events=cfg.max_events)
    print(f"replay: {len(plan.records):,} events, {plan.n_prefill:,} before the cut-off, {plan.n_replayed:,} "
          "replayed", flush=True)
    bundles = prepare_bundles(cfg, plan, work)
    from operators.interests import InterestConfig
    from operators.settings import parse_knobs
    from operators.trending import TrendingConfig

    job = JobConfig(bootstrap_servers="127.0.0.1:9092", bundle_path=str(bundles["model"]), checkpoint_dir="-",
                    top_k=cfg.top_k, onnx_providers=("CPUExecutionProvider",), rerank=parse_rerank(list(cfg.rerank)),
                    catalog_path=_catalog_path(cfg),
                    interests=parse_knobs(InterestConfig, "interests", list(cfg.interests)),
                    trending=parse_knobs(TrendingConfig, "trending", list(cfg.trending)))
    lists: dict[str, dict[str, EmittedList]] = {}
    stats: dict[str, dict[str, Any]] = {}
    if cfg.offline:
        for name, path in bundles.items():
            lists[name], stats[name] = replay_offline(cfg, plan, path, name, _job_for(job, name))
    else:
        from deploy.harness.local_kafka import LocalKafka

        with LocalKafka(work / "kafka") as kafka:
            for name, path in bundles.items():
                lists[name], stats[name] = replay_streamed(cfg, plan, path, name, kafka, work)
    from operators.bundle import load_bundle

    catalog = list(load_bundle(bundles["model"]).item_vocab)
    categories = load_catalog(_catalog_path(cfg))
    results = {name: evaluate(plan, got, k=cfg.top_k, catalog=catalog, categories=categories,
                              rejected=stats[name].pop("rejected", set()))
               for name, got in lists.items()}
    summary = _summary(cfg, plan, results, stats, time.perf_counter() - started)
    (out / "summary.json").write_text(json.dumps(summary, indent=1), "utf-8")
    popularity = plan.train["item_id"].value_counts().to_dict()
    write_report(summary, results, plan, popularity, out)
    for name, got in lists.items():  # every emitted list, for inspection and for comparing two replays
        with (out / f"lists-{name}.jsonl").open("w", encoding="utf-8") as fh:
            fh.writelines(json.dumps({"event_id": e, "items": v.items, "scores": v.scores, "strategy": v.strategy})
                          + "\n" for e, v in got.items())
    return summary


def _summary(cfg: ReplayConfig, plan: ReplayPlan, results: dict[str, dict[str, Any]],
             stats: dict[str, dict[str, Any]], wall_s: float) -> dict[str, Any]:
    model = results["model"]
    baselines = {n: r["metrics"] for n, r in results.items() if n != "model"}
    summary: dict[str, Any] = {
        "protocol": "next-event", "mode": "offline" if cfg.offline else "streamed", "data": cfg.data,
        "cutoff": cfg.cutoff, "cutoff_ts": plan.cutoff_ts, "events_prefill": plan.n_prefill,
        "events_replayed": plan.n_replayed, "users": len(set(plan.users[plan.n_prefill :])), "k": cfg.top_k,
        "model": model["metrics"], "baselines": baselines, "counts": model["counts"],
    }
    ci: dict[str, list[float]] = {}
    diffs: dict[str, list[float]] = {}
    ratios: dict[str, float] = {}
    best = max(baselines, key=lambda n: baselines[n]["ndcg@10"]) if baselines else None
    summary["best_baseline"] = best
    if best is not None:
        for key, column in (("ndcg@10", 1), ("hr@10", 0)):
            diff, lo, hi = paired_bootstrap(model["per_user"], results[best]["per_user"], column)
            ci[f"{key}_model_minus_best_baseline"] = [lo, hi]
            diffs[f"{key}_model_minus_best_baseline"] = [lo, diff, hi]
            for name, m in baselines.items():
                ratios[f"{key}_model_over_{name}"] = model["metrics"][key] / m[key] if m[key] else float("inf")
    summary["ci95"] = ci
    summary["differences"] = diffs
    summary["ratios"] = ratios
    lat = latency_summary(model["latency_ms"]) if model["latency_ms"] else None
    summary["latency_ms"] = ({"p50": lat["p50_ms"], "p95": lat["p95_ms"], "p99": lat["p99_ms"],
                              "max": lat["max_ms"]} if lat else None)
    s = stats["model"]
    summary.update({"throughput_eps": s["throughput_eps"], "dead_letter": s["dead_letter"],
                    "duplicates": s["duplicates"], "missing": model["counts"]["missing"],
                    "paths": {n: {**st, "missing": results[n]["counts"]["missing"]} for n, st in stats.items()},
                    "wall_s": wall_s})
    return summary


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """``streamrec replay`` options: :data:`REPLAY_OPTIONS`, ``--config`` and the model path's knob options."""
    p = parser or argparse.ArgumentParser(prog="streamrec replay", description=__doc__)
    REPLAY_OPTIONS.add_to(p)
    p.add_argument("--config", default=None, metavar="FILE.toml",
                   help="[replay] (these options); STREAMREC_REPLAY_<KEY> overrides the file, the command line both")
    p.add_argument("--rerank", action="append", default=[], metavar="KEY=VALUE",
                   help="re-ranking knob of the model's path, repeatable (see `streamrec config --print-defaults`)")
    p.add_argument("--interests", action="append", default=[], metavar="KEY=VALUE",
                   help="user-interest knob of the model's path, repeatable (categories from --catalog or movies.csv)")
    p.add_argument("--trending", action="append", default=[], metavar="KEY=VALUE",
                   help="trending knob of the model's path, repeatable; the streamed path's trending boards come "
                        "at processing-time moments, so with trending on its lists differ from --offline's")
    return p


def config_from_args(args: argparse.Namespace) -> ReplayConfig:
    """Parsed options, layered over ``[replay]`` of ``--config`` and ``STREAMREC_REPLAY_*`` -> :class:`ReplayConfig`."""
    values = REPLAY_OPTIONS.layered(args, load_config_file(args.config))
    return ReplayConfig(**REPLAY_OPTIONS.fields(values), rerank=tuple(args.rerank), interests=tuple(args.interests),
                        trending=tuple(args.trending))


def main(args: argparse.Namespace) -> int:
    """Run and print the headline numbers."""
    summary = run_replay(config_from_args(args))
    m = summary["model"]
    print(json.dumps({"model": {k: m[k] for k in ("hr@10", "ndcg@10", "mrr@10", "coverage")},
                      "baselines": {n: {k: b[k] for k in ("hr@10", "ndcg@10")}
                                    for n, b in summary["baselines"].items()},
                      "ci95": summary["ci95"], "latency_ms": summary["latency_ms"],
                      "throughput_eps": round(summary["throughput_eps"], 1), "missing": summary["missing"],
                      "duplicates": summary["duplicates"]}, indent=1))
    print(f"summary.json and report.md written to {args.out}")
    return 0 if summary["missing"] == 0 and summary["duplicates"] == 0 else 1
