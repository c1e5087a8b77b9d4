"""Typed, validated configuration of the recommendation job, built once at the edge."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from operators.abuse import AbuseConfig
from operators.errors import ConfigError
from operators.interests import InterestConfig
from operators.rerank import RerankConfig
from operators.trending import TrendingConfig

__all__ = ["JobConfig", "DEFAULT_MICRO_BATCH"]

DeliveryGuarantee = Literal["at-least-once", "exactly-once", "none"]
StartupMode = Literal["group-offsets", "earliest-offset", "latest-offset"]

_DELIVERY = ("at-least-once", "exactly-once", "none")
_STARTUP = ("group-offsets", "earliest-offset", "latest-offset")


def _positive(name: str, value: int, fix: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        msg = f"{name} must be a positive integer, got {value!r}. {fix}"
        raise ConfigError(msg)


DEFAULT_MICRO_BATCH = 32
"""Cross-key micro-batching is on by default: measured in the job at 500 events/s offered (10k-item bench
bundle, 200-event windows), p50 518 ms and the offered rate kept against 1,836 ms and 461/s one event at a
time; the model part of the per-event time 300-370 µs against 890 (one onnxruntime call and one scoring pass
per batch; ``perf/README.md``). A lone event waits at most ``micro_batch_wait_ms``."""


@dataclass(frozen=True)
class JobConfig:
    """Everything the job needs; invalid values fail at construction with the fix in the message."""

    bootstrap_servers: str
    bundle_path: str
    checkpoint_dir: str
    input_topic: str = "streamrec.events"
    output_topic: str = "streamrec.recommendations"
    dead_letter_topic: str = "streamrec.dead-letter"
    group_id: str = "streamrec-job"
    top_k: int = 20
    history_len: int = 200
    state_ttl_ms: int = 30 * 24 * 3_600_000
    incremental_checkpoints: bool = True
    """RocksDB incremental checkpoints (cheap: only new state files). They share files with older checkpoints, so
    a deleted (``forget_user``) user's key stays in them until RocksDB compacts its file away, which the job does
    not bound (measured: still there 80 s after the forget under load). False: full checkpoints, written from the
    live keys only: a forgotten user is in no retained checkpoint once ``execution.checkpointing.num-retained``
    (2) checkpoints completed after the forget (tests/integration/test_forget_checkpoints.py)."""
    compaction_period_ms: int = 24 * 3_600_000
    """RocksDB rewrites every state file at least this often (periodic compaction, with the TTL compaction
    filter): the bound on how long deleted (``forget_user``) or expired state survives in the live files and so
    in incremental checkpoints, which share those files. RocksDB's own default is 30 days."""
    max_event_bytes: int = 16_384
    max_future_ms: int = 24 * 3_600_000
    parallelism: int = 1
    checkpoint_interval_ms: int = 2_000
    buffer_timeout_ms: int = 1
    delivery_guarantee: DeliveryGuarantee = "at-least-once"
    startup_mode: StartupMode = "group-offsets"
    onnx_providers: tuple[str, ...] = ("CUDAExecutionProvider", "CPUExecutionProvider")
    onnx_threads: int = 1
    job_name: str = "streamrec-recommend"
    micro_batch: int | None = None
    """Score up to this many users' events in one model call (1 = off: every event is scored on its own). None
    (the default): :data:`DEFAULT_MICRO_BATCH`, or 1 with exactly-once delivery (:attr:`batch_size`)."""
    micro_batch_wait_ms: int = 2
    """Longest an event waits for its micro-batch to fill."""
    max_restarts: int = 10
    """Failed restart attempts in a row before the job gives up (and ``streamrec run`` exits non-zero)."""
    item_rules_path: str | None = None
    """JSON file of blocked / unavailable / allowed items, re-read when it changes (:mod:`operators.item_rules`)."""
    pseudonymize_users: bool = False
    """Replace user ids on the output topic (record key and ``user_id``) by a keyed HMAC pseudonym."""
    user_id_secret_env: str = "STREAMREC_USER_ID_SECRET"
    """Environment variable holding the pseudonymisation secret (the secret itself is never in the config)."""
    dead_letter_payload: Literal["raw", "redacted"] | None = None
    """What dead-letter and quarantine records keep of a rejected record: ``raw`` (as received) or ``redacted``
    (the payload's ``user_id`` replaced by its pseudonym, or removed without a secret; no payload at all when it
    is not a JSON object; user ids in the reason text replaced likewise). None (the default): ``redacted`` with
    ``pseudonymize_users``, ``raw`` otherwise."""
    quarantine_topic: str | None = None
    """Where quarantined events go (:mod:`operators.abuse`); None: the dead-letter topic, code ``quarantined``."""
    abuse: AbuseConfig = field(default_factory=AbuseConfig)
    """Abuse-filter knobs (:class:`operators.abuse.AbuseConfig`)."""
    rerank: RerankConfig = field(default_factory=RerankConfig)
    """Re-ranking knobs (:class:`operators.rerank.RerankConfig`)."""
    catalog_path: str | None = None
    """Item categories (MovieLens ``movies.csv`` or ``item_id,categories`` CSV, :mod:`operators.catalog`)."""
    interests: InterestConfig = field(default_factory=InterestConfig)
    """User-interest knobs (:class:`operators.interests.InterestConfig`)."""
    trending: TrendingConfig = field(default_factory=TrendingConfig)
    """In-stream popularity knobs (:class:`operators.trending.TrendingConfig`)."""
    control_topic: str = "streamrec.control"
    """Compacted topic every subtask reads as a broadcast input: trending boards, item rules, model swaps."""
    control_result_topic: str = "streamrec.control.results"
    """Where each subtask reports the outcome of a model or shadow message (:mod:`operators.hotswap`)."""
    shadow_topic: str = "streamrec.recommendations.shadow"
    """Lists of the shadow model (``streamrec model shadow``), off the user-visible topic."""
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def redact_dead_letters(self) -> bool:
        """Whether dead letters and quarantined records are redacted (:attr:`dead_letter_payload`)."""
        if self.dead_letter_payload is None:
            return self.pseudonymize_users
        return self.dead_letter_payload == "redacted"

    @property
    def batch_size(self) -> int:
        """The micro-batch size in force: ``micro_batch``, or by default :data:`DEFAULT_MICRO_BATCH` (1 with
        exactly-once delivery, whose lists a failover must not emit twice: a finished batch waits in memory)."""
        if self.micro_batch is not None:
            return self.micro_batch
        return 1 if self.delivery_guarantee == "exactly-once" else DEFAULT_MICRO_BATCH

    def __post_init__(self) -> None:
        servers = [s.strip() for s in self.bootstrap_servers.split(",") if s.strip()]
        if not servers or any(":" not in s or not s.rsplit(":", 1)[1].isdigit() for s in servers):
            msg = (
                f"bootstrap_servers={self.bootstrap_servers!r} is not a host:port list; "
                "pass e.g. --bootstrap-servers 127.0.0.1:9092"
            )
            raise ConfigError(msg)
        for name in ("input_topic", "output_topic", "dead_letter_topic", "control_topic", "control_result_topic",
                     "shadow_topic", "group_id"):
            value = getattr(self, name)
            if not value or any(c.isspace() for c in value):
                msg = f"{name}={value!r} must be a non-empty name without spaces"
                raise ConfigError(msg)
        topics = (self.input_topic, self.output_topic, self.dead_letter_topic, self.control_topic,
                  self.control_result_topic, self.shadow_topic)
        if len(set(topics)) != len(topics):
            msg = ("input, output, dead-letter, control, control-result and shadow topics must differ, got "
                   + ", ".join(map(repr, topics)))
            raise ConfigError(msg)
        if self.catalog_path is not None:
            from pathlib import Path

            if not Path(self.catalog_path).exists():
                msg = (f"catalog_path={self.catalog_path!r} does not exist; pass a MovieLens movies.csv (or its "
                       "directory) or an item_id,categories CSV (`streamrec generate --catalog`), or leave it out")
                raise ConfigError(msg)
        _positive("top_k", self.top_k, "Use e.g. --top-k 20.")
        _positive("history_len", self.history_len, "Use e.g. --history-len 200.")
        _positive("state_ttl_ms", self.state_ttl_ms, "Use e.g. --state-ttl-hours 720.")
        _positive("compaction_period_ms", self.compaction_period_ms, "Use e.g. --compaction-period-hours 24.")
        _positive("max_event_bytes", self.max_event_bytes, "Use e.g. 16384.")
        _positive("max_future_ms", self.max_future_ms, "Use e.g. 86400000 (one day).")
        _positive("parallelism", self.parallelism, "Use --parallelism 1 or more.")
        _positive("checkpoint_interval_ms", self.checkpoint_interval_ms, "Use e.g. 2000.")
        _positive("buffer_timeout_ms", self.buffer_timeout_ms, "Use 1 for lowest latency.")
        _positive("onnx_threads", self.onnx_threads, "Use 1 per task slot.")
        _positive("max_restarts", self.max_restarts, "Use e.g. --max-restarts 10.")
        if self.micro_batch is not None:
            _positive("micro_batch", self.micro_batch, "Use 1 (off) or e.g. --micro-batch 32.")
        _positive("micro_batch_wait_ms", self.micro_batch_wait_ms, "Use e.g. --micro-batch-wait-ms 2.")
        if self.abuse.enabled and self.abuse.max_events_per_minute >= self.history_len:
            msg = (f"abuse.max_events_per_minute={self.abuse.max_events_per_minute} must be below history_len="
                   f"{self.history_len} (the user's window is the evidence); lower it or raise --history-len")
            raise ConfigError(msg)
        if self.quarantine_topic is not None and self.quarantine_topic in (
                self.input_topic, self.output_topic, self.dead_letter_topic, self.control_topic):
            msg = (f"quarantine_topic={self.quarantine_topic!r} must differ from the input, output and dead-letter "
                   "topics")
            raise ConfigError(msg)
        if self.history_len > 65_535:
            msg = f"history_len={self.history_len} is over the state layout's limit of 65535 events per user"
            raise ConfigError(msg)
        if self.micro_batch is not None and self.micro_batch > 1 and self.delivery_guarantee == "exactly-once":
            msg = ("--micro-batch > 1 cannot be combined with --delivery-guarantee exactly-once yet: a list "
                   "emitted from a batch may be emitted again after a failover. Use one or the other.")
            raise ConfigError(msg)
        if self.dead_letter_payload not in (None, "raw", "redacted"):
            msg = f"dead_letter_payload={self.dead_letter_payload!r}; choose raw or redacted"
            raise ConfigError(msg)
        if self.delivery_guarantee not in _DELIVERY:
            msg = f"delivery_guarantee={self.delivery_guarantee!r}; choose one of {_DELIVERY}"
            raise ConfigError(msg)
        if self.startup_mode not in _STARTUP:
            msg = f"startup_mode={self.startup_mode!r}; choose one of {_STARTUP}"
            raise ConfigError(msg)
        if not self.onnx_providers:
            msg = "onnx_providers must name at least one provider, e.g. CPUExecutionProvider"
            raise ConfigError(msg)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (for logs and job descriptions)."""
        out = asdict(self)
        out["rerank"] = self.rerank.model_dump()
        out["abuse"] = self.abuse.model_dump()
        out["interests"] = self.interests.model_dump()
        out["trending"] = self.trending.model_dump()
        return out
