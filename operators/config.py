"""Typed, validated configuration of the recommendation job, built once at the edge (a pydantic model: every
setting, its default, its allowed values and its meaning defined here once; ``streamrec run``'s options, the
``[job]`` table of a config file and ``streamrec config --print-defaults`` are generated from it by
:mod:`operators.settings`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from operators.abuse import AbuseConfig
from operators.interests import InterestConfig
from operators.rerank import RerankConfig
from operators.settings import Settings
from operators.trending import TrendingConfig

__all__ = ["JobConfig", "DEFAULT_MICRO_BATCH", "DeliveryGuarantee", "StartupMode"]

DeliveryGuarantee = Literal["at-least-once", "exactly-once", "none"]
StartupMode = Literal["group-offsets", "earliest-offset", "latest-offset"]
DeadLetterPayload = Literal["raw", "redacted"]


def _topic(value: str) -> str:
    if not value or any(c.isspace() for c in value):
        msg = "must be a non-empty name without spaces"
        raise ValueError(msg)
    return value


Topic = Annotated[str, AfterValidator(_topic)]
Positive = Annotated[int, Field(ge=1)]

DEFAULT_MICRO_BATCH = 32
"""Cross-key micro-batching is on by default: measured in the job at 500 events/s offered (10k-item bench
bundle, 200-event windows), p50 518 ms and the offered rate kept against 1,836 ms and 461/s one event at a
time; the model part of the per-event time 300-370 µs against 890 (one onnxruntime call and one scoring pass
per batch; ``perf/README.md``). A lone event waits at most ``micro_batch_wait_ms``."""



_FIXES = {
    "top_k": "use e.g. --top-k 20", "history_len": "use e.g. --history-len 200",
    "state_ttl_ms": "use e.g. --state-ttl-hours 720", "compaction_period_ms": "use e.g. --compaction-period-hours 24",
    "parallelism": "use --parallelism 1 or more", "checkpoint_interval_ms": "use e.g. 2000",
    "buffer_timeout_ms": "use 1 for lowest latency", "onnx_threads": "use 1 per task slot",
    "max_restarts": "use e.g. --max-restarts 10", "micro_batch": "use 1 (off) or e.g. --micro-batch 32",
    "micro_batch_wait_ms": "use e.g. --micro-batch-wait-ms 2",
    "onnx_providers": "name at least one provider, e.g. CPUExecutionProvider",
}


class JobConfig(Settings):
    """Everything the job needs; invalid values fail at construction with the fix in the message
    (:class:`~operators.errors.ConfigError`)."""

    SECTION: ClassVar[str] = "job"
    FIXES: ClassVar[dict[str, str]] = _FIXES

    bootstrap_servers: str = Field(description="Kafka bootstrap servers, host:port[,host:port]")
    bundle_path: str = Field(description="model bundle directory (made by `streamrec train`)")
    checkpoint_dir: str = Field(description="directory for RocksDB checkpoints")
    input_topic: Topic = "streamrec.events"
    output_topic: Topic = "streamrec.recommendations"
    dead_letter_topic: Topic = "streamrec.dead-letter"
    group_id: Topic = "streamrec-job"
    top_k: Positive = 20
    history_len: Annotated[int, Field(ge=1, le=65_535)] = Field(
        200, description="interactions kept per user in keyed state (also the exclusion set; the state layout "
                         "holds at most 65535)")
    state_ttl_ms: Positive = Field(30 * 24 * 3_600_000, description="a user's state expires this long after "
                                                                      "its last write")
    incremental_checkpoints: bool = Field(True, description=(
        "RocksDB incremental checkpoints (cheap: only new state files). They share files with older checkpoints, "
        "so a deleted (forget_user) user's key stays in them until RocksDB compacts its file away. False (the "
        "full_checkpoints option): full checkpoints, written from the live keys only: a forgotten user is in no "
        "retained checkpoint two checkpoints after the forget (tests/integration/test_forget_checkpoints.py)"))
    compaction_period_ms: Positive = Field(24 * 3_600_000, description=(
        "RocksDB rewrites every state file at least this often (periodic compaction, with the TTL compaction "
        "filter): how long a forgotten user's deleted state can survive in the state files and incremental "
        "checkpoints (RocksDB's own default is 30 days)"))
    max_event_bytes: Positive = Field(16_384, description="longer input records are dead-lettered")
    max_future_ms: Positive = Field(24 * 3_600_000, description="events further ahead of the clock are "
                                                                 "dead-lettered")
    parallelism: Positive = 1
    checkpoint_interval_ms: Positive = 2_000
    buffer_timeout_ms: Positive = Field(1, description="Flink's network buffer timeout (1: lowest latency)")
    delivery_guarantee: DeliveryGuarantee = "at-least-once"
    startup_mode: StartupMode = "group-offsets"
    onnx_providers: tuple[str, ...] = Field(("CUDAExecutionProvider", "CPUExecutionProvider"), min_length=1,
                                            description="onnxruntime providers, in order of preference")
    onnx_threads: Positive = Field(1, description="onnxruntime threads per task slot")
    job_name: str = "streamrec-recommend"
    micro_batch: Positive | None = Field(None, description=(
        "score up to N users' events in one model call (1 = off; unset: 32, or 1 with exactly-once delivery); "
        "pending events live in keyed state, so a failover loses none"))
    micro_batch_wait_ms: Positive = Field(2, description="longest an event waits for its micro-batch")
    max_restarts: Positive = Field(10, description="failed restarts in a row before the job gives up and exits "
                                                   "non-zero")
    item_rules_path: str | None = Field(None, description=(
        'JSON file {"blocked": [...], "unavailable": [...], "allowed": [...] or null}, re-read within a second of '
        "every change (no restart; operators/item_rules.py)"))
    pseudonymize_users: bool = Field(False, description=(
        "user ids on the output topic become keyed HMAC pseudonyms (secret from the environment variable named by "
        "user_id_secret_env)"))
    user_id_secret_env: str = Field("STREAMREC_USER_ID_SECRET", description=(
        "environment variable holding the pseudonymisation secret (the secret itself is never in the config)"))
    dead_letter_payload: DeadLetterPayload | None = Field(None, description=(
        "what dead letters and quarantined records keep of the rejected record: raw, or redacted (user ids "
        "replaced by their pseudonyms, no payload when it is not a JSON object). Unset: redacted with "
        "pseudonymize_users, raw otherwise"))
    quarantine_topic: Topic | None = Field(None, description=(
        "topic for events of implausible users (unset: the dead-letter topic, code quarantined)"))
    abuse: AbuseConfig = Field(default_factory=AbuseConfig, description="abuse-filter knobs")
    rerank: RerankConfig = Field(default_factory=RerankConfig, description="re-ranking knobs")
    catalog_path: str | None = Field(None, description=(
        "item categories for user interests and the category cap: MovieLens movies.csv (or its directory) or an "
        "item_id,categories CSV (`streamrec generate --catalog`)"))
    interests: InterestConfig = Field(default_factory=InterestConfig, description="user-interest knobs")
    trending: TrendingConfig = Field(default_factory=TrendingConfig, description="in-stream popularity knobs")
    control_topic: Topic = Field("streamrec.control", description=(
        "compacted topic every subtask reads as a broadcast input (trending boards, item rules, model swaps; "
        "created when missing)"))
    control_result_topic: Topic = Field("streamrec.control.results", description=(
        "each subtask's verdict on a model or shadow message (created when missing)"))
    shadow_topic: Topic = Field("streamrec.recommendations.shadow", description=(
        "lists of the shadow model (`streamrec model shadow`; created when missing)"))
    extra: dict[str, str] = Field(default_factory=dict, description="extra Flink configuration")

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

    @field_validator("bootstrap_servers")
    @classmethod
    def _servers(cls, value: str) -> str:
        servers = [s.strip() for s in value.split(",") if s.strip()]
        if not servers or any(":" not in s or not s.rsplit(":", 1)[1].isdigit() for s in servers):
            msg = "is not a host:port list; pass e.g. --bootstrap-servers 127.0.0.1:9092"
            raise ValueError(msg)
        return value

    @field_validator("catalog_path")
    @classmethod
    def _catalog(cls, value: str | None) -> str | None:
        if value is not None and not Path(value).exists():
            msg = ("does not exist; pass a MovieLens movies.csv (or its directory) or an item_id,categories CSV "
                   "(`streamrec generate --catalog`), or leave it out")
            raise ValueError(msg)
        return value

    @model_validator(mode="after")
    def _together(self) -> JobConfig:
        topics = (self.input_topic, self.output_topic, self.dead_letter_topic, self.control_topic,
                  self.control_result_topic, self.shadow_topic)
        if len(set(topics)) != len(topics):
            msg = ("input, output, dead-letter, control, control-result and shadow topics must differ, got "
                   + ", ".join(map(repr, topics)))
            raise ValueError(msg)
        if self.quarantine_topic is not None and self.quarantine_topic in topics[:4]:
            msg = (f"quarantine_topic={self.quarantine_topic!r} must differ from the input, output and dead-letter "
                   "topics")
            raise ValueError(msg)
        if self.abuse.enabled and self.abuse.max_events_per_minute >= self.history_len:
            msg = (f"abuse.max_events_per_minute={self.abuse.max_events_per_minute} must be below history_len="
                   f"{self.history_len} (the user's window is the evidence); lower it or raise --history-len")
            raise ValueError(msg)
        if self.micro_batch is not None and self.micro_batch > 1 and self.delivery_guarantee == "exactly-once":
            msg = ("--micro-batch > 1 cannot be combined with --delivery-guarantee exactly-once yet: a list "
                   "emitted from a batch may be emitted again after a failover. Use one or the other.")
            raise ValueError(msg)
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (for logs and job descriptions)."""
        return self.model_dump()
