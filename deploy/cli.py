"""``streamrec``: train, run, replay, bench, demo, generate."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from deploy.harness.generator import GENERATE_OPTIONS
from model_export.settings import TRAIN_OPTIONS
from operators.config import JobConfig
from operators.errors import StreamrecError
from operators.settings import load_config_file

__all__ = ["main"]


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("kafka").setLevel(logging.CRITICAL)


def _train(args: argparse.Namespace) -> int:
    from deploy.harness.extras import require

    require("torch", "streamrec train")
    if args.search:
        require("optuna", "streamrec train --search")
    from model_export.pipeline import TrainJob, run_training
    from model_export.train import TrainConfig

    train = TrainConfig(**TRAIN_OPTIONS.fields(TRAIN_OPTIONS.layered(args, load_config_file(args.config))))
    if args.config_from:
        from model_export.search import load_searched

        train = load_searched(args.config_from, train)
    seeds = tuple(int(s) for s in args.seeds.split(","))
    archs = tuple(a.strip() for a in args.arch.split(",") if a.strip())
    metrics = run_training(TrainJob(data=args.data, out=args.out, fmt=args.format, protocol=args.protocol,
                                    train=train, archs=archs, seeds=seeds, search_trials=args.search,
                                    search_timeout_s=args.search_timeout, catalog=args.catalog))
    summary = {k: metrics[k] for k in ("model_version", "served", "n_users", "n_items", "n_events", "best_epoch",
                                       "train_seconds")}
    summary["beta"] = metrics["blend"]["beta"]
    summary["test"] = {k: round(v, 4) for k, v in metrics["test"].items() if k.endswith("@10")}
    for name, result in {**metrics["baselines"], **metrics["models"]}.items():
        summary[f"{name}_test"] = {k: round(v, 4) for k, v in result["test"].items() if k.endswith("@10")}
    if len(seeds) > 1:
        summary["test_over_seeds"] = metrics["seeds"]["summary"]
    if "search" in metrics:
        summary["search"] = {k: metrics["search"][k] for k in ("trials", "pruned", "best", "best_valid_ndcg@10")}
    print(json.dumps(summary, indent=1))
    print(f"bundle, metrics.json and report.md written to {args.out}")
    return 0


def _run(argv: list[str]) -> int:
    from flink_jobs.recommend_job import main as job_main

    return job_main(argv)


def _demo(args: argparse.Namespace) -> int:
    from deploy.demo import DEMO_OPTIONS, DemoConfig, run_demo

    cfg = DemoConfig(**DEMO_OPTIONS.fields(DEMO_OPTIONS.layered(args, load_config_file(args.config))))
    result = run_demo(cfg)
    print(f"model={result.model_version} onnx_provider={result.provider} job_startup_s={result.startup_s:.1f} "
          f"wall_s={result.wall_s:.1f} p95_ms={result.latency['p95_ms']:.1f} max_ms={result.latency['max_ms']:.1f}")
    print(result.summary_line(), flush=True)
    return 0 if result.lists == result.valid and result.dead_letter == result.events - result.valid else 1


def _config(args: argparse.Namespace) -> int:
    from operators.abuse import AbuseConfig
    from operators.interests import InterestConfig
    from operators.kafka_auth import KafkaAuthConfig
    from operators.rerank import RerankConfig
    from operators.settings import describe_defaults
    from operators.trending import TrendingConfig

    if not args.print_defaults:
        print("use `streamrec config --print-defaults`", file=sys.stderr)
        return 2
    from flink_jobs.recommend_job import JOB_OPTIONS

    print(JOB_OPTIONS.describe("# streamrec run options: [job] in --config FILE.toml, STREAMREC_JOB_<KEY>, or "
                               "--key-with-dashes"))
    print("\n# re-ranking (streamrec run / replay: --rerank KEY=VALUE, repeatable)")
    print(describe_defaults(RerankConfig, "rerank"))
    print("\n# user interests by item category (streamrec run / replay: --interests KEY=VALUE; needs --catalog)")
    print(describe_defaults(InterestConfig, "interests"))
    print("\n# in-stream trending items (streamrec run / replay: --trending KEY=VALUE)")
    print(describe_defaults(TrendingConfig, "trending"))
    print("\n# abuse filter (streamrec run: --abuse KEY=VALUE, repeatable)")
    print(describe_defaults(AbuseConfig, "abuse"))
    print("\n# Kafka security (streamrec run: --kafka KEY=VALUE; STREAMREC_KAFKA_<KNOB>; [kafka] in --config)")
    print(describe_defaults(KafkaAuthConfig, "kafka"))
    from deploy.demo import DEMO_OPTIONS
    from deploy.replay import REPLAY_OPTIONS

    for command, options in (("train", TRAIN_OPTIONS), ("replay", REPLAY_OPTIONS), ("demo", DEMO_OPTIONS),
                             ("generate", GENERATE_OPTIONS)):
        print()
        print(options.describe(f"# streamrec {command} options: [{command}] in --config FILE.toml, "
                               f"STREAMREC_{command.upper()}_<KEY>, or --key-with-dashes"))
    return 0


def _generate(args: argparse.Namespace) -> int:
    from deploy.harness.generator import GeneratorConfig, generate_events, write_catalog, write_jsonl

    cfg = GeneratorConfig(**GENERATE_OPTIONS.fields(GENERATE_OPTIONS.layered(args, load_config_file(args.config))))
    events = generate_events(cfg)
    write_jsonl(events, args.out)
    print(f"wrote {len(events)} events to {args.out}")
    if args.catalog:
        write_catalog(cfg, args.catalog)
        print(f"wrote the item catalog (taste clusters as categories) to {args.catalog}")
    return 0


def _publish_control(args: argparse.Namespace, message: dict) -> None:
    """Write one control message (keyed by its type: the compacted topic keeps the newest of each) to
    ``args.control_topic``, through a producer with the ``[kafka]`` security knobs."""
    from kafka import KafkaProducer

    from operators.errors import ConfigError
    from operators.kafka_auth import KafkaAuthConfig
    from operators.settings import layered_knobs, load_config_file

    auth = layered_knobs(KafkaAuthConfig, "kafka", load_config_file(args.config), dict(os.environ), args.kafka)
    try:
        producer = KafkaProducer(bootstrap_servers=args.bootstrap_servers, acks="all", **auth.python_client_config())
    except Exception as exc:  # noqa: BLE001 - reported with the fix
        msg = f"cannot reach Kafka at {args.bootstrap_servers}: {exc!r}"
        raise ConfigError(msg) from None
    producer.send(args.control_topic, key=message["type"].encode(), value=json.dumps(message).encode()).get(timeout=30)
    producer.close()


def _rules(args: argparse.Namespace) -> int:
    """Publish item rules to the job's control topic: every subtask applies them within moments, no restart."""
    from operators.item_rules import CONTROL_ITEM_RULES, load_item_rules, parse_item_rules

    if args.file:
        rules = load_item_rules(args.file)
        doc = {"blocked": sorted(rules.blocked), "unavailable": sorted(rules.unavailable),
               "allowed": None if rules.allowed is None else sorted(rules.allowed)}
    else:
        def ids(text: str | None) -> list[str]:
            return [i.strip() for i in (text or "").split(",") if i.strip()]

        doc = {"blocked": ids(args.blocked), "unavailable": ids(args.unavailable),
               "allowed": ids(args.allowed) if args.allowed is not None else None}
        parse_item_rules(doc, "the command line")
    _publish_control(args, {"type": CONTROL_ITEM_RULES, **doc})
    print(f"published item rules to {args.control_topic}: {len(doc['blocked'])} blocked, "
          f"{len(doc['unavailable'])} unavailable, allowed: "
          f"{'all' if doc['allowed'] is None else len(doc['allowed'])}")
    return 0


def _model(args: argparse.Namespace) -> int:
    """Publish a bundle to a running job's control topic: serve it (``publish``) or score beside (``shadow``)."""
    from operators.hotswap import CONTROL_MODEL, CONTROL_SHADOW, model_message

    kind = CONTROL_MODEL if args.action == "publish" else CONTROL_SHADOW
    message = model_message(args.dir, uri=args.uri, kind=kind)  # verifies the bundle here first
    _publish_control(args, message)
    print(json.dumps(message))
    print(f"published {kind} bundle {message['version']} to {args.control_topic}; each subtask reports on the "
          "control-result topic", file=sys.stderr)
    return 0


CONTROL_TOPIC = JobConfig.model_fields["control_topic"].default
"""The job's control topic, where ``rules`` and ``model`` publish (the job's default, defined in ``JobConfig``)."""


def build_parser() -> argparse.ArgumentParser:
    """The CLI's parser."""
    parser = argparse.ArgumentParser(prog="streamrec", description="Real-time sequential recommendations in Flink.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model on an event log and export a bundle")
    t.add_argument("--data", required=True, help="ratings.csv / MovieLens dir, or a JSONL event log")
    t.add_argument("--format", choices=["events", "movielens"], default="events")
    t.add_argument("--protocol", default="loo-5core")
    t.add_argument("--out", required=True, help="bundle directory to write")
    t.add_argument("--catalog", default=None, metavar="FILE.csv",
                   help="item categories (item_id,categories a|b, as streamrec generate --catalog writes) as item side "
                        "information of the lru (--no-item-features: none); MovieLens data uses its movies.csv genres")
    from model_export.settings import DEFAULT_SEEDS, TrainConfig

    TRAIN_OPTIONS.add_to(t)
    t.add_argument("--seeds", default=",".join(map(str, DEFAULT_SEEDS)),
                   help="comma-separated seeds, each trained and evaluated; metrics.json and the report give the mean "
                        "and standard error over them, and the best on validation is exported (one seed: quicker)")
    t.add_argument("--arch", default=TrainConfig.model_fields["arch"].default,
                   help="comma-separated: lru (recurrent, served one step per event), sasrec, gru4rec; the best "
                        "on validation is kept")
    t.add_argument("--config", default=None, metavar="FILE.toml",
                   help="[train] (these options, e.g. hidden = 128); STREAMREC_TRAIN_<KEY> overrides the file, the "
                        "command line both")
    t.add_argument("--search", type=int, default=0, metavar="N",
                   help="first run an N-trial hyper-parameter search (Optuna TPE, pruned on validation NDCG@10), "
                        "then train the best configuration; search.json/.md/.png are written beside the bundle")
    t.add_argument("--search-timeout", type=float, default=None, metavar="SECONDS",
                   help="stop starting search trials after this long")
    t.add_argument("--config-from", default=None, metavar="SEARCH_JSON",
                   help="train exactly the best configuration of an earlier search (its search.json); it sets "
                        "the searched fields over the options above")

    sub.add_parser("run", help="run the recommendation job (see `streamrec run --help`)", add_help=False)
    sub.add_parser("bench", help="latency/throughput benchmark vs a bare Kafka relay and a Flink identity job "
                                 "(see `streamrec bench --help`)", add_help=False)
    sub.add_parser("cluster", help="a local Flink standalone cluster: up / down / status (see `streamrec cluster "
                                   "--help`)", add_help=False)
    sub.add_parser("deploy", help="submit the job to a Flink cluster, detached (see `streamrec deploy --help`)",
                   add_help=False)
    sub.add_parser("stop", help="stop a job on a cluster with a savepoint (see `streamrec stop --help`)",
                   add_help=False)
    sub.add_parser("faults", help="fault-injection suite: kill -9 of the job, broker outage, poison records, "
                                  "many users (see `streamrec faults --help`)", add_help=False)

    from deploy.demo import DEMO_OPTIONS

    d = sub.add_parser("demo", help="embedded end-to-end demo: broker + MiniCluster + replayed stream")
    DEMO_OPTIONS.add_to(d)
    d.add_argument("--config", default=None, metavar="FILE.toml", help="[demo] (these options)")

    from deploy.replay import build_parser as replay_parser

    replay_parser(sub.add_parser("replay", help="replay evaluation: what the job would have achieved on an event "
                                                "log (model vs baselines, latency)"))

    r = sub.add_parser("rules", help="publish item rules (blocked / unavailable / allowed) to a running job's "
                                     "control topic: in force within moments, no restart")
    r.add_argument("--bootstrap-servers", required=True)
    r.add_argument("--control-topic", default=CONTROL_TOPIC)
    r.add_argument("--file", default=None, help='a JSON rules file {"blocked": [...], "unavailable": [...], '
                                                '"allowed": [...] or null}')
    r.add_argument("--blocked", default=None, help="comma-separated item ids")
    r.add_argument("--unavailable", default=None, help="comma-separated item ids")
    r.add_argument("--allowed", default=None, help="comma-separated item ids (only these may be recommended)")
    r.add_argument("--config", default=None, help="TOML config file ([kafka] for a secured broker)")
    r.add_argument("--kafka", action="append", default=[], metavar="KEY=VALUE", help="Kafka security knob")

    m = sub.add_parser("model", help="hot-swap the served model (publish) or score a candidate beside it (shadow) "
                                     "in a running job, through its control topic")
    m.add_argument("action", choices=["publish", "shadow"])
    m.add_argument("dir", help="the bundle directory (verified here before it is published)")
    m.add_argument("--uri", default=None, help="where the job's workers read the bundle (default: DIR as an "
                                              "absolute path; any URI Flink's filesystems read, e.g. s3://...)")
    m.add_argument("--bootstrap-servers", required=True)
    m.add_argument("--control-topic", default=CONTROL_TOPIC)
    m.add_argument("--config", default=None, help="TOML config file ([kafka] for a secured broker)")
    m.add_argument("--kafka", action="append", default=[], metavar="KEY=VALUE", help="Kafka security knob")

    c = sub.add_parser("config", help="show the job's configuration knobs")
    c.add_argument("--print-defaults", action="store_true", help="every knob with its default and meaning")

    g = sub.add_parser("generate", help="write a synthetic event log (JSON lines)")
    g.add_argument("--out", required=True)
    GENERATE_OPTIONS.add_to(g)
    g.add_argument("--catalog", default=None, metavar="FILE.csv",
                   help="also write the items' categories (item_id,categories) for `streamrec run --catalog`")
    g.add_argument("--config", default=None, metavar="FILE.toml", help="[generate] (these options)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``streamrec`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "run":
        return _run(argv[1:])
    if argv and argv[0] == "bench":
        from perf.bench import main as bench_main

        return bench_main(argv[1:])
    if argv and argv[0] in ("cluster", "deploy", "stop"):
        from deploy import cluster

        logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        return {"cluster": cluster.main_cluster, "deploy": cluster.main_deploy, "stop": cluster.main_stop}[argv[0]](
            argv[1:])
    if argv and argv[0] == "faults":
        from deploy.faults import main as faults_main

        return faults_main(argv[1:])
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    try:
        if args.command == "train":
            return _train(args)
        if args.command == "demo":
            return _demo(args)
        if args.command == "config":
            return _config(args)
        if args.command == "rules":
            return _rules(args)
        if args.command == "model":
            return _model(args)
        if args.command == "replay":
            from deploy.replay import main as replay_main

            return replay_main(args)
        return _generate(args)
    except StreamrecError as err:
        print(f"streamrec: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; everything was shut down", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
