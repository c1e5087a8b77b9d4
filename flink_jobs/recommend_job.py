"""The recommendation job: Kafka -> validate (dead-letter side output) -> key_by(user) -> keyed state +
ONNX model + re-rank -> Kafka.

Run locally (Flink MiniCluster)::

    python -m flink_jobs.recommend_job --bootstrap-servers 127.0.0.1:9092 --bundle DIR --checkpoint-dir DIR

Submit unchanged to a standalone cluster::

    flink run -py flink_jobs/recommend_job.py --bootstrap-servers ... --bundle /abs/DIR --checkpoint-dir /abs/DIR

Only known arguments are parsed (Flink may add its own), and no path depends on the working directory.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

if __package__ in (None, ""):  # `flink run -py flink_jobs/recommend_job.py`: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from model_export.bundle import load_bundle  # noqa: E402
from operators.config import JobConfig  # noqa: E402
from operators.errors import ConfigError, StreamrecError  # noqa: E402

__all__ = ["build_arg_parser", "config_from_args", "build_job", "main"]

log = logging.getLogger("streamrec.job")


def build_arg_parser() -> argparse.ArgumentParser:
    """Command-line options of the job (also used by ``streamrec run``)."""
    d = JobConfig.__dataclass_fields__
    p = argparse.ArgumentParser(prog="streamrec run", description=__doc__.split("\n\n")[0])
    p.add_argument("--bootstrap-servers", required=True, help="Kafka bootstrap servers, host:port[,host:port]")
    p.add_argument("--bundle", required=True, help="model bundle directory (made by `streamrec train`)")
    p.add_argument("--checkpoint-dir", required=True, help="directory for RocksDB checkpoints")
    p.add_argument("--input-topic", default=d["input_topic"].default)
    p.add_argument("--output-topic", default=d["output_topic"].default)
    p.add_argument("--dead-letter-topic", default=d["dead_letter_topic"].default)
    p.add_argument("--group-id", default=d["group_id"].default)
    p.add_argument("--top-k", type=int, default=d["top_k"].default)
    p.add_argument("--history-len", type=int, default=d["history_len"].default,
                   help="interactions kept per user in keyed state (also the exclusion set)")
    p.add_argument("--state-ttl-hours", type=float, default=d["state_ttl_ms"].default / 3_600_000)
    p.add_argument("--parallelism", type=int, default=d["parallelism"].default)
    p.add_argument("--checkpoint-interval-ms", type=int, default=d["checkpoint_interval_ms"].default)
    p.add_argument("--delivery-guarantee", default=d["delivery_guarantee"].default,
                   choices=["at-least-once", "exactly-once", "none"])
    p.add_argument("--startup-mode", default=d["startup_mode"].default,
                   choices=["group-offsets", "earliest-offset", "latest-offset"])
    p.add_argument("--state-cache-size", type=int, default=d["state_cache_size"].default)
    p.add_argument("--onnx-providers", default=",".join(d["onnx_providers"].default),
                   help="comma-separated onnxruntime providers, in order of preference")
    p.add_argument("--restore-from", default=None, help="checkpoint/savepoint path to restore state from")
    p.add_argument("--connector-jar", default=None, help="flink-sql-connector-kafka jar (default: make jars)")
    p.add_argument("--job-name", default=d["job_name"].default)
    p.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE",
                   help="extra Flink configuration, repeatable (e.g. --conf execution.checkpointing.interval=10s)")
    return p


def config_from_args(args: argparse.Namespace) -> JobConfig:
    """Build the validated config (raises ConfigError with the fix)."""
    return JobConfig(
        bootstrap_servers=args.bootstrap_servers,
        bundle_path=str(Path(args.bundle).expanduser().resolve()),
        checkpoint_dir=str(Path(args.checkpoint_dir).expanduser().resolve()),
        input_topic=args.input_topic,
        output_topic=args.output_topic,
        dead_letter_topic=args.dead_letter_topic,
        group_id=args.group_id,
        top_k=args.top_k,
        history_len=args.history_len,
        state_ttl_ms=int(args.state_ttl_hours * 3_600_000),
        parallelism=args.parallelism,
        checkpoint_interval_ms=args.checkpoint_interval_ms,
        delivery_guarantee=args.delivery_guarantee,
        startup_mode=args.startup_mode,
        state_cache_size=args.state_cache_size,
        onnx_providers=tuple(p.strip() for p in args.onnx_providers.split(",") if p.strip()),
        job_name=args.job_name,
        extra=_parse_conf(args.conf),
    )


def _parse_conf(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            msg = f"--conf expects KEY=VALUE, got {pair!r}"
            raise ConfigError(msg)
        out[key.strip()] = value.strip()
    return out


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _kafka_options(cfg: JobConfig, topic: str, extra: dict[str, str]) -> str:
    options = {"connector": "kafka", "topic": topic, "properties.bootstrap.servers": cfg.bootstrap_servers, **extra}
    return ",\n  ".join(f"{_sql_str(k)} = {_sql_str(v)}" for k, v in options.items())


def source_ddl(cfg: JobConfig) -> str:
    """Raw payload bytes plus the Kafka coordinates the dead-letter records need."""
    startup = {
        "scan.startup.mode": cfg.startup_mode,
        "properties.group.id": cfg.group_id,
        "properties.auto.offset.reset": "earliest",
        "properties.fetch.max.wait.ms": "5",
        "properties.fetch.min.bytes": "1",
        "scan.topic-partition-discovery.interval": "30 s",
        "format": "raw",
    }
    return f"""CREATE TEMPORARY TABLE streamrec_events (
  `payload` BYTES,
  `topic` STRING METADATA VIRTUAL,
  `partition` INT METADATA VIRTUAL,
  `offset` BIGINT METADATA VIRTUAL,
  `kafka_ts` TIMESTAMP_LTZ(3) METADATA FROM 'timestamp' VIRTUAL
) WITH (
  {_kafka_options(cfg, cfg.input_topic, startup)}
)"""


def sink_ddl(cfg: JobConfig, table: str, topic: str) -> str:
    """Keyed JSON records (key ``k`` as raw UTF-8, value ``v`` as raw UTF-8 JSON)."""
    sink = {
        "key.format": "raw",
        "key.fields": "k",
        "value.format": "raw",
        "value.fields-include": "EXCEPT_KEY",
        "sink.delivery-guarantee": cfg.delivery_guarantee,
        "properties.linger.ms": "0",
        "properties.acks": "all",
    }
    if cfg.delivery_guarantee == "exactly-once":
        sink["sink.transactional-id-prefix"] = f"{cfg.job_name}-{table}"
        sink["properties.transaction.timeout.ms"] = "900000"
    return f"""CREATE TEMPORARY TABLE {table} (
  `k` STRING,
  `v` STRING
) WITH (
  {_kafka_options(cfg, topic, sink)}
)"""


def flink_configuration(cfg: JobConfig, connector_jar: Path, restore_from: str | None) -> dict[str, str]:
    """Flink settings: thread mode, RocksDB checkpoints, low latency."""
    from deploy.paths import python_executable

    settings = {
        "pipeline.name": cfg.job_name,
        "pipeline.jars": connector_jar.as_uri(),
        "python.execution-mode": "thread",
        "python.executable": python_executable(),
        "python.client.executable": python_executable(),
        "python.state.cache-size": str(cfg.state_cache_size),
        "state.backend.type": "rocksdb",
        "execution.checkpointing.incremental": "true",
        "execution.checkpointing.interval": f"{cfg.checkpoint_interval_ms} ms",
        "execution.checkpointing.dir": Path(cfg.checkpoint_dir).as_uri(),
        "execution.checkpointing.externalized-checkpoint-retention": "RETAIN_ON_CANCELLATION",
        "execution.checkpointing.num-retained": "2",
        "restart-strategy.type": "exponential-delay",
        "parallelism.default": str(cfg.parallelism),
    }
    if restore_from:
        settings["execution.state-recovery.path"] = restore_from
    settings.update(cfg.extra)
    return settings


def build_job(cfg: JobConfig, connector_jar: Path, restore_from: str | None = None):  # noqa: ANN201
    """Create the environment and the topology; returns the ``StreamExecutionEnvironment``."""
    # pyflink is imported here so that argument and bundle errors fail before a JVM starts
    from pyflink.common import Configuration, Types
    from pyflink.datastream import StreamExecutionEnvironment
    from pyflink.table import StreamTableEnvironment

    from flink_jobs.functions import (
        DEAD_LETTER_TAG,
        EVENT_TYPE_INFO,
        KEYED_RECORD_TYPE_INFO,
        RecommendFunction,
        ValidateEvents,
    )

    conf = Configuration()
    for key, value in flink_configuration(cfg, connector_jar, restore_from).items():
        conf.set_string(key, value)
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    env.set_parallelism(cfg.parallelism)
    env.set_buffer_timeout(cfg.buffer_timeout_ms)
    t_env = StreamTableEnvironment.create(env)
    t_env.execute_sql(source_ddl(cfg))
    t_env.execute_sql(sink_ddl(cfg, "streamrec_recommendations", cfg.output_topic))
    t_env.execute_sql(sink_ddl(cfg, "streamrec_dead_letter", cfg.dead_letter_topic))

    raw = t_env.to_data_stream(t_env.from_path("streamrec_events"))
    events = raw.process(ValidateEvents(cfg), output_type=EVENT_TYPE_INFO).name("validate-events").uid("validate")
    lists = (
        events.key_by(lambda row: row[0], key_type=Types.STRING())
        .process(RecommendFunction(cfg), output_type=KEYED_RECORD_TYPE_INFO)
        .name("recommend")
        .uid("recommend")
    )
    statements = t_env.create_statement_set()
    statements.add_insert("streamrec_recommendations", t_env.from_data_stream(lists))
    statements.add_insert("streamrec_dead_letter", t_env.from_data_stream(events.get_side_output(DEAD_LETTER_TAG)))
    statements.attach_as_datastream()
    return env


def main(argv: list[str] | None = None) -> int:
    """Parse known args, verify config and bundle (fail fast), build and execute the job."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    args, unknown = build_arg_parser().parse_known_args(argv)
    if unknown:
        log.info("ignoring arguments not meant for streamrec: %s", unknown)
    try:
        from deploy.paths import flink_connector_jar

        cfg = config_from_args(args)
        bundle = load_bundle(cfg.bundle_path)
        jar = flink_connector_jar(args.connector_jar)
        Path(cfg.checkpoint_dir).mkdir(parents=True, exist_ok=True)
    except StreamrecError as err:
        print(f"streamrec: error: {err}", file=sys.stderr)
        return 2
    log.info("starting job %s: model %s (%d items), %s -> %s (dead letters: %s)", cfg.job_name, bundle.version,
             bundle.n_items, cfg.input_topic, cfg.output_topic, cfg.dead_letter_topic)
    env = build_job(cfg, jar, args.restore_from)
    env.execute(cfg.job_name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
