"""The recommendation job: Kafka -> key by the record key (user id, on the Java side) -> one Python operator
(validate, packed keyed state, ONNX model, top-K; dead letters as its side output) -> Kafka.

Run locally (Flink MiniCluster)::

    python -m flink_jobs.recommend_job --bootstrap-servers 127.0.0.1:9092 --bundle DIR --checkpoint-dir DIR

Submit to a standalone cluster with ``streamrec deploy --jobmanager HOST:PORT ...`` (:mod:`deploy.cluster`:
``flink run -d -py`` with the project's code shipped by ``-pyfs``), or on Kubernetes (``deploy/k8s``).

Only known arguments are parsed (Flink may add its own), and no path depends on the working directory.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # `flink run -py flink_jobs/recommend_job.py`: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flink_jobs.environment import (  # noqa: E402
    flink_connector_jar,
    java_home,
    python_executable,
    site_packages,
    worker_pythonpath,
)
from flink_jobs.lifecycle import watch_job  # noqa: E402
from operators.abuse import AbuseConfig  # noqa: E402
from operators.bundle import load_bundle  # noqa: E402
from operators.config import JobConfig  # noqa: E402
from operators.errors import ConfigError, StreamrecError  # noqa: E402
from operators.interests import InterestConfig  # noqa: E402
from operators.item_rules import load_item_rules  # noqa: E402
from operators.kafka_auth import KafkaAuthConfig  # noqa: E402
from operators.rerank import RerankConfig  # noqa: E402
from operators.serving import user_id_key  # noqa: E402
from operators.settings import ModelOptions, Option, layered_knobs, load_config_file  # noqa: E402
from operators.trending import TrendingConfig  # noqa: E402

__all__ = ["JOB_OPTIONS", "build_arg_parser", "parse_job_args", "config_from_args", "build_job", "main"]

log = logging.getLogger("streamrec.job")


def _absolute(path: str) -> str:
    return str(Path(path).expanduser().resolve())


JOB_OPTIONS = ModelOptions(JobConfig, "job", [
    Option("bundle_path", name="bundle", to_field=_absolute),
    Option("checkpoint_dir", to_field=_absolute),
    Option("state_ttl_ms", name="state_ttl_hours", type=float, to_field=lambda h: int(h * 3_600_000),
           to_option=lambda ms: ms / 3_600_000),
    Option("compaction_period_ms", name="compaction_period_hours", type=float, to_field=lambda h: int(h * 3_600_000),
           to_option=lambda ms: ms / 3_600_000),
    Option("incremental_checkpoints", name="full_checkpoints", invert=True,
           help="full, not incremental, RocksDB checkpoints: a forgotten user is in no retained checkpoint two "
                "checkpoints after the forget (incremental ones share older files that can keep it)"),
    Option("item_rules_path", name="item_rules", to_field=_absolute, metavar="PATH"),
    Option("catalog_path", name="catalog", to_field=_absolute, metavar="PATH"),
])
"""``streamrec run``'s options of :class:`~operators.config.JobConfig` (the ``[job]`` table of a config file,
``STREAMREC_JOB_<KEY>``): one per field, named like it unless renamed here (a unit, a path)."""


def build_arg_parser() -> argparse.ArgumentParser:
    """Command-line options of the job (also used by ``streamrec run``): :data:`JOB_OPTIONS`, then what is not
    a setting of the job (how this process starts it, and the knob sections)."""
    p = argparse.ArgumentParser(prog="streamrec run", description=__doc__.split("\n\n")[0])
    JOB_OPTIONS.add_to(p)
    p.add_argument("--restore-from", default=None, metavar="PATH|latest",
                   help="checkpoint or savepoint to restore state from; `latest`: the newest complete checkpoint "
                        "under --checkpoint-dir (what a supervisor restarting a crashed job passes; none yet: "
                        "start empty)")
    p.add_argument("--standby", action="store_true",
                   help="hot standby: start, build the job, then wait until the job holding --checkpoint-dir "
                        "stops or dies, and take over from its latest checkpoint (about 5 s instead of a cold "
                        "start's 12 s on 2 cores)")
    p.add_argument("--health-port", type=int, default=None,
                   help="serve GET /health on 127.0.0.1:PORT (200 while the job runs, 503 while it starts, "
                        "restarts or stops; JSON with the status and restart count)")
    p.add_argument("--connector-jar", default=None, help="flink-sql-connector-kafka jar (default: make jars)")
    p.add_argument("--log-dir", default=None,
                   help="Flink and Python task logs (default: $FLINK_LOG_DIR, else Flink's own log dir)")
    p.add_argument("--interests", action="append", default=[], metavar="KEY=VALUE",
                   help="user-interest knob, repeatable (see `streamrec config --print-defaults`)")
    p.add_argument("--trending", action="append", default=[], metavar="KEY=VALUE",
                   help="trending knob, repeatable (see `streamrec config --print-defaults`)")
    p.add_argument("--abuse", action="append", default=[], metavar="KEY=VALUE",
                   help="abuse-filter knob, repeatable (see `streamrec config --print-defaults`)")
    p.add_argument("--config", default=None, metavar="FILE.toml",
                   help="[job] (these options, e.g. top_k = 10), [rerank], [abuse] and [kafka]; environment "
                        "STREAMREC_<SECTION>_<KNOB> overrides the file, the command line overrides both")
    p.add_argument("--kafka", action="append", default=[], metavar="KEY=VALUE",
                   help="Kafka security knob, repeatable: security_protocol, sasl_mechanism, username, "
                        "ssl_ca_file (the password only from STREAMREC_KAFKA_PASSWORD or the config file)")
    p.add_argument("--rerank", action="append", default=[], metavar="KEY=VALUE",
                   help="re-ranking knob, repeatable (e.g. --rerank diversity_lambda=0.3); every knob with its "
                        "default: `streamrec config --print-defaults`")
    p.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE",
                   help="extra Flink configuration, repeatable (e.g. --conf execution.checkpointing.interval=10s)")
    return p


def parse_job_args(argv: list[str] | None, parser: argparse.ArgumentParser | None = None,
                   ) -> tuple[argparse.Namespace, list[str]]:
    """The job's options: defaults <- ``[job]`` of ``--config FILE.toml`` <- environment
    ``STREAMREC_JOB_<OPTION>`` <- the command line (:class:`operators.settings.ModelOptions`). Keys are the long
    options without dashes, with underscores (``bootstrap_servers``, ``top_k``, ...); an unknown key fails with
    the list of valid ones. ``parser``: :func:`build_arg_parser`'s, with options of its own added."""
    args, unknown = (parser or build_arg_parser()).parse_known_args(argv)
    for key, value in JOB_OPTIONS.layered(args, load_config_file(args.config)).items():
        setattr(args, key, value)
    return args, unknown


def config_from_args(args: argparse.Namespace) -> JobConfig:
    """Build the validated config from :func:`parse_job_args`' namespace (raises ConfigError with the fix)."""
    file_doc = load_config_file(args.config)
    fields = JOB_OPTIONS.fields({o.key: getattr(args, o.key) for o in JOB_OPTIONS.options})
    return JobConfig(
        **fields,
        abuse=layered_knobs(AbuseConfig, "abuse", file_doc, os.environ, args.abuse),
        rerank=layered_knobs(RerankConfig, "rerank", file_doc, os.environ, args.rerank),
        interests=layered_knobs(InterestConfig, "interests", file_doc, os.environ, args.interests),
        trending=layered_knobs(TrendingConfig, "trending", file_doc, os.environ, args.trending),
        extra=_parse_conf(args.conf),
    )


def kafka_auth_from_args(args: argparse.Namespace) -> KafkaAuthConfig:
    """``[kafka]`` of the config file <- ``STREAMREC_KAFKA_<KNOB>`` <- ``--kafka KEY=VALUE`` (no password)."""
    if any(pair.partition("=")[0].strip() == "password" for pair in args.kafka):
        msg = ("--kafka password=... would show the password to every user of this machine (ps); set "
               "STREAMREC_KAFKA_PASSWORD or [kafka] password in the config file instead")
        raise ConfigError(msg)
    return layered_knobs(KafkaAuthConfig, "kafka", load_config_file(args.config), os.environ, args.kafka)


def check_kafka_login(bootstrap: str, auth: KafkaAuthConfig, timeout_s: float = 20.0) -> None:
    """With SASL or TLS, log in once before any JVM starts: a wrong password or CA fails here, in about a
    second, with what to fix (inside Flink it would be a restart loop of authentication errors).

    kafka-python only logs why a login failed (then times out "unable to bootstrap"), so its log records are
    watched for the cause while the client connects in a thread.
    """
    if auth.security_protocol == "PLAINTEXT":
        return
    import threading

    from kafka import KafkaAdminClient

    causes: list[str] = []
    proof_sent = [False]

    class Watch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            text = record.getMessage()  # decisive causes stop the wait (not the "socket disconnected" after them)
            if "AuthenticationFailed" in text or "certificate verify failed" in text or "UnsupportedSasl" in text:
                causes.append(text)
            elif "Sending request" in text and "SaslAuthenticateRequest" in text and "auth_bytes=b'c=" in text:
                proof_sent[0] = True  # SCRAM's final message: the client's proof of the password
            elif "SaslAuthenticateResponse" in text:
                proof_sent[0] = False
            elif proof_sent[0] and "disconnected" in text:  # the broker may close instead of answering
                causes.append("the broker rejected the credentials (invalid credentials: it closed the connection "
                              f"after the {auth.sasl_mechanism} password proof)")

    outcome: dict[str, object] = {}

    def connect() -> None:
        try:
            KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000),
                             **auth.python_client_config()).close()
            outcome["ok"] = True
        except Exception as exc:  # noqa: BLE001 - reported below with the logged cause
            outcome["error"] = exc

    kafka_log = logging.getLogger("kafka")
    watch, level = Watch(level=logging.DEBUG), kafka_log.level  # the handshake is only visible at DEBUG
    kafka_log.addHandler(watch)
    kafka_log.setLevel(logging.DEBUG)
    kafka_log.propagate, propagate = False, kafka_log.propagate  # the cause is reported once, below
    try:
        thread = threading.Thread(target=connect, name="kafka-login-check", daemon=True)
        thread.start()
        deadline = time.monotonic() + timeout_s + 5
        while thread.is_alive() and not causes and time.monotonic() < deadline:
            thread.join(0.05)
    finally:
        kafka_log.removeHandler(watch)
        kafka_log.setLevel(level)
        kafka_log.propagate = propagate
    if outcome.get("ok"):
        log.info("Kafka login ok: %s", auth.describe())
        return
    cause = causes[0] if causes else repr(outcome.get("error", "no answer"))
    cause = cause if cause.startswith("the broker") else cause.split(": ", 1)[-1]
    hint = ("check the user name and the password (STREAMREC_KAFKA_PASSWORD)"
            if "Authentication" in cause or "credentials" in cause
            else "check bootstrap servers, security_protocol and ssl_ca_file")
    msg = f"cannot log in to Kafka at {bootstrap} ({auth.describe()}): {cause[:300]}; {hint}"
    raise ConfigError(msg)


def ensure_control_topic(cfg: JobConfig, auth: KafkaAuthConfig, timeout_s: float = 30.0) -> None:
    """Create the topics of the control loop when they do not exist (one that exists is used as it is): the
    control topic (one partition, compacted: the newest board per trending subtask, the newest item rules and
    model messages survive), the control-result topic and the shadow topic."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    try:
        admin = KafkaAdminClient(bootstrap_servers=cfg.bootstrap_servers, request_timeout_ms=int(timeout_s * 1000),
                                 **auth.python_client_config())
    except Exception as exc:  # noqa: BLE001 - reported with the fix
        msg = f"cannot reach Kafka at {cfg.bootstrap_servers} to check the control topic: {exc!r}"
        raise ConfigError(msg) from None
    wanted = {cfg.control_topic: ("the control topic", {"cleanup.policy": "compact", "min.compaction.lag.ms": "60000"},
                                  "--control-topic", "1 partition, cleanup.policy=compact"),
              cfg.control_result_topic: ("the control-result topic", {}, "--control-result-topic", "1 partition"),
              cfg.shadow_topic: ("the shadow topic", {}, "--shadow-topic", "any partitions")}
    try:
        existing = set(admin.list_topics())
        for topic, (what, configs, option, shape) in wanted.items():
            if topic in existing:
                continue
            try:
                admin.create_topics([NewTopic(topic, 1, -1, topic_configs=configs)])
                log.info("created %s %s%s", what, topic, " (compacted)" if configs else "")
            except TopicAlreadyExistsError:
                pass
            except Exception as exc:  # noqa: BLE001 - reported with the fix
                msg = (f"{what} {topic!r} does not exist and cannot be created ({exc!r}); create it ({shape}) or "
                       f"name an existing one with {option}")
                raise ConfigError(msg) from None
    finally:
        admin.close()


def latest_checkpoint(checkpoint_dir: str | Path) -> Path | None:
    """The newest complete checkpoint or savepoint under ``checkpoint_dir`` (``<job id>/chk-<n>/_metadata``;
    ``savepoints/savepoint-*/_metadata`` from a graceful stop); ``_metadata`` is written last, so one cut short
    by a crash is never picked. None when there is none."""
    root = Path(checkpoint_dir)
    done = [meta.parent for pattern in ("*/chk-*/_metadata", "savepoints/savepoint-*/_metadata")
            for meta in root.glob(pattern) if meta.is_file()]
    if not done:
        return None
    return max(done, key=lambda d: ((d / "_metadata").stat().st_mtime_ns, d.name))


def resolve_restore(restore_from: str | None, checkpoint_dir: str | Path) -> str | None:
    """``--restore-from``: a path as given (it must exist), ``latest`` (see :func:`latest_checkpoint`), or None."""
    if restore_from is None:
        return None
    if restore_from == "latest":
        found = latest_checkpoint(checkpoint_dir)
        if found is None:
            log.info("no complete checkpoint under %s yet: starting with empty state", checkpoint_dir)
            return None
        log.info("restoring from the latest checkpoint %s", found)
        return str(found)
    if restore_from.startswith("file:"):  # Flink prints savepoints as file:/path
        from urllib.parse import urlparse

        restore_from = urlparse(restore_from).path
    path = Path(restore_from).expanduser()
    if "://" not in restore_from and not path.exists():
        msg = (f"--restore-from {restore_from}: no such checkpoint or savepoint; pass a chk-<n> or savepoint "
               "directory, or `latest` for the newest checkpoint under --checkpoint-dir")
        raise ConfigError(msg)
    return restore_from if "://" in restore_from else str(path.resolve())


LOG4J_PROPERTIES = Path(__file__).resolve().parent / "conf" / "log4j-job.properties"
LOCK_NAME = ".streamrec-job.lock"
_held_locks: list = []  # open lock files live as long as the process; the kernel releases them on any exit


def acquire_job_lock(checkpoint_dir: str | Path, *, wait: bool) -> None:
    """One job per checkpoint directory: two would both consume the topic (every list twice) and write
    checkpoints over each other. The lock is an ``flock`` held for the process's life, so a crash (even
    ``kill -9``) releases it at once; a standby (``wait``) blocks until then."""
    import fcntl

    path = Path(checkpoint_dir) / LOCK_NAME
    fh = path.open("a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        fh.seek(0)
        holder = fh.read().strip() or "another process"
        fh.close()
        msg = (f"another job already runs on --checkpoint-dir {checkpoint_dir} ({holder}); stop it first, give "
               "this one its own --checkpoint-dir, or start it with --standby to take over when that one stops")
        raise ConfigError(msg) from None
    fh.seek(0)
    fh.truncate()
    fh.write(f"pid {os.getpid()}\n")
    fh.flush()
    _held_locks.append(fh)


def execute_async(env, job_name: str, restore_from: str | None):  # noqa: ANN001, ANN201 - pyflink objects
    """``env.execute_async(job_name)`` (a ``JobClient``), restoring ``restore_from`` when given. The restore
    path goes into the environment's configuration at this moment (the executor reads it when it turns the
    stream graph into a job graph), so a standby that built its job long before restores the checkpoint
    that is latest when it takes over."""
    if restore_from is not None:
        from pyflink.common import Configuration

        conf = Configuration(j_configuration=env._j_stream_execution_environment.getConfiguration())
        conf.set_string("execution.state-recovery.path", restore_from)
    return env.execute_async(job_name)


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


def _kafka_options(cfg: JobConfig, topic: str, extra: dict[str, str], auth: KafkaAuthConfig | None) -> str:
    options = {"connector": "kafka", "topic": topic, "properties.bootstrap.servers": cfg.bootstrap_servers, **extra}
    if auth is not None and auth.security_protocol != "PLAINTEXT":
        options.update({f"properties.{k}": v for k, v in auth.connector_properties().items()})
    return ",\n  ".join(f"{_sql_str(k)} = {_sql_str(v)}" for k, v in options.items())


def source_ddl(cfg: JobConfig, auth: KafkaAuthConfig | None = None) -> str:
    """Record key (the user id) and raw payload bytes, plus the Kafka coordinates dead letters need."""
    startup = {
        "scan.startup.mode": cfg.startup_mode,
        "properties.group.id": cfg.group_id,
        "properties.auto.offset.reset": "earliest",
        "properties.fetch.max.wait.ms": "5",
        "properties.fetch.min.bytes": "1",
        "scan.topic-partition-discovery.interval": "30 s",
        "key.format": "raw",
        "key.fields": "k",
        "value.format": "raw",
        "value.fields-include": "EXCEPT_KEY",
    }
    return f"""CREATE TEMPORARY TABLE streamrec_events (
  `k` STRING,
  `payload` BYTES,
  `partition` INT METADATA VIRTUAL,
  `offset` BIGINT METADATA VIRTUAL,
  `kafka_ts` TIMESTAMP_LTZ(3) METADATA FROM 'timestamp' VIRTUAL
) WITH (
  {_kafka_options(cfg, cfg.input_topic, startup, auth)}
)"""


def control_source_ddl(cfg: JobConfig, auth: KafkaAuthConfig | None = None) -> str:
    """The control topic (compacted: the newest record per key), read from its beginning on a fresh start."""
    options = {
        "scan.startup.mode": "earliest-offset",
        "properties.group.id": f"{cfg.group_id}.control",
        "properties.fetch.max.wait.ms": "50",
        "scan.topic-partition-discovery.interval": "30 s",
        "key.format": "raw",
        "key.fields": "k",
        "value.format": "raw",
        "value.fields-include": "EXCEPT_KEY",
    }
    return f"""CREATE TEMPORARY TABLE streamrec_control_in (
  `k` STRING,
  `v` BYTES
) WITH (
  {_kafka_options(cfg, cfg.control_topic, options, auth)}
)"""


_TS = "CAST(kafka_ts AS TIMESTAMP(3))"  # UTC: the job sets table.local-time-zone
EPOCH_MS_SQL = (
    f"CAST(TIMESTAMPDIFF(DAY, TIMESTAMP '1970-01-01 00:00:00', {_TS}) AS BIGINT) * 86400000 "
    f"+ EXTRACT(HOUR FROM {_TS}) * 3600000 + EXTRACT(MINUTE FROM {_TS}) * 60000 "
    f"+ EXTRACT(SECOND FROM {_TS}) * 1000 + EXTRACT(MILLISECOND FROM {_TS})"
)
"""Kafka record timestamp -> BIGINT epoch ms, computed on the Java side (no JNI call back per event)."""

KEYED_EVENTS_SQL = f"""SELECT COALESCE(k, '') AS k,
  ROW(COALESCE(k, ''), payload, `partition`, `offset`, {EPOCH_MS_SQL}) AS v
FROM streamrec_events"""
"""Row(key, value): the shape pyflink's keyed operators expect (a record without a key is keyed by '' and
dead-lettered by the core)."""


def sink_ddl(cfg: JobConfig, table: str, topic: str, auth: KafkaAuthConfig | None = None) -> str:
    """Keyed JSON records (key ``k`` as raw UTF-8, value ``v``: JSON bytes as they are)."""
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
  `v` BYTES
) WITH (
  {_kafka_options(cfg, topic, sink, auth)}
)"""


def flink_configuration(cfg: JobConfig, connector_jar: Path) -> dict[str, str]:
    """Flink settings: thread mode, RocksDB checkpoints, low latency, bounded restarts."""
    settings = {
        "pipeline.name": cfg.job_name,
        "pipeline.jars": connector_jar.as_uri(),
        "python.execution-mode": "thread",
        "python.executable": python_executable(),
        "python.client.executable": python_executable(),
        "python.pythonpath": worker_pythonpath(),
        "state.backend.type": "rocksdb",
        "execution.checkpointing.incremental": str(cfg.incremental_checkpoints).lower(),
        # every state file rewritten (through the TTL compaction filter) at least this often: a deleted
        # (forget_user) or expired user leaves the files, and so the incremental checkpoints that share them,
        # within the period. Set here, not in the TTL builder: pyflink's thread mode drops the builder's period.
        "state.backend.rocksdb.compaction.filter.periodic-compaction-time": f"{cfg.compaction_period_ms} ms",
        "execution.checkpointing.interval": f"{cfg.checkpoint_interval_ms} ms",
        "execution.checkpointing.dir": Path(cfg.checkpoint_dir).as_uri(),
        "execution.checkpointing.externalized-checkpoint-retention": "RETAIN_ON_CANCELLATION",
        "execution.checkpointing.num-retained": "2",
        # A job whose tasks keep failing (e.g. Python workers that cannot start) gives up and exits non-zero
        # instead of restarting forever; a job that ran stably for a minute starts counting afresh.
        "restart-strategy.type": "exponential-delay",
        "restart-strategy.exponential-delay.initial-backoff": "1 s",
        "restart-strategy.exponential-delay.max-backoff": "10 s",
        "restart-strategy.exponential-delay.backoff-multiplier": "2.0",
        "restart-strategy.exponential-delay.reset-backoff-threshold": "1 min",
        "restart-strategy.exponential-delay.attempts-before-reset-backoff": str(cfg.max_restarts),
        "parallelism.default": str(cfg.parallelism),
        "pipeline.max-parallelism": "128",  # fixed: savepoints restore at any parallelism up to it
        "table.local-time-zone": "UTC",
    }
    settings.update(cfg.extra)
    return settings


def build_job(cfg: JobConfig, connector_jar: Path, function=None,  # noqa: ANN001, ANN201
              auth: KafkaAuthConfig | None = None):
    """Create the environment and the topology; returns the ``StreamExecutionEnvironment``.

    ``auth`` (Kafka security, with the password) goes into the connectors' table options only, never into
    ``cfg``, which is pickled into the keyed function.

    A restore is chosen at submission (:func:`execute_async`), not here. ``function`` replaces the keyed
    function (benchmarks run an identity function through the same wiring).
    """
    # pyflink is imported here so that argument and bundle errors fail before a JVM starts
    from pyflink.common import Configuration, Types
    from pyflink.datastream import StreamExecutionEnvironment
    from pyflink.datastream.data_stream import KeyedStream
    from pyflink.java_gateway import get_gateway
    from pyflink.table import StreamTableEnvironment

    from flink_jobs.functions import (
        ACCEPTED_TAG,
        ACCEPTED_VALUE_TYPE_INFO,
        CONTROL_RESULT_TAG,
        CONTROL_STATE,
        DEAD_LETTER_TAG,
        KEYED_RECORD_TYPE_INFO,
        QUARANTINE_TAG,
        SHADOW_TAG,
        RecommendFunction,
        TrendingFunction,
    )

    t0 = time.monotonic()
    conf = Configuration()
    for key, value in flink_configuration(cfg, connector_jar).items():
        conf.set_string(key, value)
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    env_conf = Configuration(j_configuration=env._j_stream_execution_environment.getConfiguration())
    if env_conf.get_string("python.files", ""):
        # the code was shipped (`flink run -pyfs`, as `streamrec deploy` does): the workers import that copy and
        # the interpreter's site-packages, never the client's checkout
        env_conf.set_string("python.pythonpath", site_packages())
    t_jvm = time.monotonic()
    env.set_parallelism(cfg.parallelism)
    env.set_buffer_timeout(cfg.buffer_timeout_ms)
    t_env = StreamTableEnvironment.create(env)
    t_env.get_config().set("table.local-time-zone", "UTC")
    t_env.execute_sql(source_ddl(cfg, auth))
    t_env.execute_sql(sink_ddl(cfg, "streamrec_recommendations", cfg.output_topic, auth))
    t_env.execute_sql(sink_ddl(cfg, "streamrec_dead_letter", cfg.dead_letter_topic, auth))
    if cfg.quarantine_topic:
        t_env.execute_sql(sink_ddl(cfg, "streamrec_quarantine", cfg.quarantine_topic, auth))
    control = function is None  # benchmarks' identity function: the bare wiring, no control input
    if control:
        t_env.execute_sql(control_source_ddl(cfg, auth))
        if cfg.trending.enabled:
            t_env.execute_sql(sink_ddl(cfg, "streamrec_control", cfg.control_topic, auth))
        t_env.execute_sql(sink_ddl(cfg, "streamrec_control_results", cfg.control_result_topic, auth))
        t_env.execute_sql(sink_ddl(cfg, "streamrec_shadow", cfg.shadow_topic, auth))

    # Key by field 0 on the Java side (pyflink's own key_by would add a Python operator per event).
    rows = t_env.to_data_stream(t_env.sql_query(KEYED_EVENTS_SQL))
    value_type = Types.ROW([Types.STRING(), Types.PRIMITIVE_ARRAY(Types.BYTE()), Types.INT(), Types.LONG(),
                            Types.LONG()])
    # The keyed Python operator reads its input type as a RowTypeInfo (the table conversion declares an
    # ExternalTypeInfo of the same row): declare it as such.
    rows._j_data_stream.getTransformation().setOutputType(Types.ROW([Types.STRING(), value_type]).get_java_type_info())
    jvm = get_gateway().jvm
    j_keyed = rows._j_data_stream.keyBy(jvm.KeyByKeySelector(), Types.ROW([Types.STRING()]).get_java_type_info())
    users = KeyedStream(j_keyed, value_type, rows)
    if control:
        control_rows = t_env.to_data_stream(t_env.sql_query("SELECT k, v FROM streamrec_control_in"))
        control_rows._j_data_stream.getTransformation().setOutputType(KEYED_RECORD_TYPE_INFO.get_java_type_info())
        lists = users.connect(control_rows.broadcast(CONTROL_STATE)).process(
            RecommendFunction(cfg), output_type=KEYED_RECORD_TYPE_INFO)
    else:
        lists = users.process(function, output_type=KEYED_RECORD_TYPE_INFO)
    lists = lists.name("recommend").uid("recommend")
    statements = t_env.create_statement_set()
    statements.add_insert("streamrec_recommendations", t_env.from_data_stream(lists))
    statements.add_insert("streamrec_dead_letter", t_env.from_data_stream(lists.get_side_output(DEAD_LETTER_TAG)))
    if cfg.quarantine_topic:
        statements.add_insert("streamrec_quarantine", t_env.from_data_stream(lists.get_side_output(QUARANTINE_TAG)))
    if control:
        statements.add_insert("streamrec_control_results",
                              t_env.from_data_stream(lists.get_side_output(CONTROL_RESULT_TAG)))
        statements.add_insert("streamrec_shadow", t_env.from_data_stream(lists.get_side_output(SHADOW_TAG)))
    if control and cfg.trending.enabled:
        # accepted events, keyed by item on the Java side, into the item counts; their boards go to the control
        # topic, which every recommender subtask reads back (the loop closes through Kafka: no cycle in the job)
        accepted = lists.get_side_output(ACCEPTED_TAG)
        j_items = accepted._j_data_stream.keyBy(jvm.KeyByKeySelector(),
                                                Types.ROW([Types.STRING()]).get_java_type_info())
        boards = (KeyedStream(j_items, ACCEPTED_VALUE_TYPE_INFO, accepted)
                  .process(TrendingFunction(cfg), output_type=KEYED_RECORD_TYPE_INFO)
                  .name("trending").uid("trending"))
        statements.add_insert("streamrec_control", t_env.from_data_stream(boards))
    statements.attach_as_datastream()
    log.info("job built: JVM gateway %.1f s, topology %.1f s", t_jvm - t0, time.monotonic() - t_jvm)
    return env


def check_worker_environment() -> None:
    """Fail fast, before any JVM starts, if Flink's Python workers could not import what they run."""
    env = dict(os.environ, PYTHONPATH=worker_pythonpath(os.environ.get("PYTHONPATH")))
    probe = "import pemja, pyflink, onnxruntime, msgspec, operators.serving, flink_jobs.functions"
    result = subprocess.run([python_executable(), "-c", probe], env=env, capture_output=True, text=True,  # noqa: S603
                            timeout=120, check=False)
    if result.returncode != 0:
        msg = (f"the job's Python workers could not start: `{python_executable()} -c '{probe}'` failed with\n"
               f"{result.stderr.strip()[-2000:]}\nInstall streamrec into this interpreter's environment "
               "(`make setup`, or pip install -e '.[cpu]') and run the job with it.")
        raise ConfigError(msg)


def _attached(env) -> bool:  # noqa: ANN001 - pyflink object
    """Whether the client waits for the job (``execution.attached``; ``flink run -d`` sets it false)."""
    from pyflink.common import Configuration

    conf = Configuration(j_configuration=env._j_stream_execution_environment.getConfiguration())
    return conf.get_string("execution.attached", "true").lower() != "false"


def _root_cause(exc: BaseException) -> str:
    """The innermost Java cause of a failed ``execute()``, in one line."""
    text = str(exc)
    causes = [line.strip() for line in text.splitlines() if line.strip().startswith("Caused by:")]
    return causes[-1] if causes else text.strip().splitlines()[0] if text.strip() else repr(exc)


def main(argv: list[str] | None = None) -> int:
    """Parse known args, verify config, bundle and workers (fail fast), build and execute the job.

    Returns 0 when the job ends, 2 on bad configuration, 1 when the job fails (the cause is on stderr).
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    for name in ("streamrec", "operators", "flink_jobs"):  # pyflink's imports lower the root logger to WARNING
        logging.getLogger(name).setLevel(logging.INFO)
    try:
        args, unknown = parse_job_args(argv)
    except ConfigError as err:
        print(f"streamrec: error: {err}", file=sys.stderr)
        return 2
    if unknown:
        log.info("ignoring arguments not meant for streamrec: %s", unknown)
    try:
        cfg = config_from_args(args)
        auth = kafka_auth_from_args(args)
        bundle = load_bundle(cfg.bundle_path)
        user_id_key(cfg)  # fails fast when pseudonymisation is on without its secret
        if cfg.item_rules_path and Path(cfg.item_rules_path).exists():
            load_item_rules(cfg.item_rules_path)  # a broken rules file at start is a config error
        jar = flink_connector_jar(args.connector_jar)
        Path(cfg.checkpoint_dir).mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("JAVA_HOME", java_home())  # pyflink starts its JVM with it
        os.environ.setdefault("LOG4J_PROPERTIES", str(LOG4J_PROPERTIES))  # a complete Flink log
        if args.log_dir:
            Path(args.log_dir).mkdir(parents=True, exist_ok=True)
            os.environ["FLINK_LOG_DIR"] = str(Path(args.log_dir).resolve())
        check_worker_environment()
        check_kafka_login(cfg.bootstrap_servers, auth)
        ensure_control_topic(cfg, auth)
        if args.standby and args.restore_from not in (None, "latest"):
            msg = "--standby takes over from the latest checkpoint; drop --restore-from (or pass `latest`)"
            raise ConfigError(msg)
        if not args.standby:
            acquire_job_lock(cfg.checkpoint_dir, wait=False)
            restore_from = resolve_restore(args.restore_from, cfg.checkpoint_dir)
    except StreamrecError as err:
        print(f"streamrec: error: {err}", file=sys.stderr)
        return 2
    log.info("%s job %s: model %s (%d items, %s), %s -> %s (dead letters: %s), Kafka %s",
             "standing by to take over" if args.standby else "starting", cfg.job_name, bundle.version,
             bundle.n_items, "recurrent" if bundle.recurrent else "stateless", cfg.input_topic, cfg.output_topic,
             cfg.dead_letter_topic, auth.describe())
    env = build_job(cfg, jar, auth=auth)
    if args.standby:
        acquire_job_lock(cfg.checkpoint_dir, wait=True)
        log.info("taking over job %s", cfg.job_name)
        restore_from = resolve_restore("latest", cfg.checkpoint_dir)
    try:
        client = execute_async(env, cfg.job_name, restore_from)
        if not _attached(env):  # `flink run -d -py ...`: submitted; the cluster runs it, nobody here watches
            print(f"streamrec: submitted job {cfg.job_name} ({client.get_job_id()})", file=sys.stderr)
            return 0
        outcome, savepoint = watch_job(client, checkpoint_dir=cfg.checkpoint_dir, health_port=args.health_port)
        if outcome == "failed":
            client.get_job_execution_result().result()  # raises the cause
        if outcome == "stopped":
            print(f"streamrec: job {cfg.job_name} stopped; savepoint: {savepoint or 'none (cancelled)'}; resume "
                  "with --restore-from latest", file=sys.stderr)
    except Exception as exc:  # py4j wraps the JobExecutionException; say what failed and exit non-zero
        print(f"streamrec: error: job {cfg.job_name} failed after {cfg.max_restarts} restart attempts: "
              f"{_root_cause(exc)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
