"""Thin Flink adapters over the pure cores in ``operators/``: no decisions are made here."""

from __future__ import annotations

import json
import logging
import time

from pyflink.common import Row, Types
from pyflink.common.time import Time
from pyflink.datastream.functions import KeyedProcessFunction, ProcessFunction, RuntimeContext
from pyflink.datastream.output_tag import OutputTag
from pyflink.datastream.state import ListStateDescriptor, StateTtlConfig

from model_export.bundle import load_bundle
from operators.config import JobConfig
from operators.errors import EventValidationError
from operators.events import Event, SourcePosition, dead_letter_record, parse_event, recommendation_record
from operators.inference import OnnxScorer
from operators.recommender import Recommender
from operators.window import update_window

__all__ = [
    "EVENT_TYPE_INFO",
    "KEYED_RECORD_TYPE_INFO",
    "DEAD_LETTER_TAG",
    "ValidateEvents",
    "RecommendFunction",
]

log = logging.getLogger("streamrec.job")

EVENT_FIELDS = ["user_id", "item_id", "event_type", "ts", "event_id", "source_ts"]
EVENT_TYPE_INFO = Types.ROW_NAMED(
    EVENT_FIELDS,
    [Types.STRING(), Types.STRING(), Types.STRING(), Types.LONG(), Types.STRING(), Types.LONG()],
)
KEYED_RECORD_TYPE_INFO = Types.ROW_NAMED(["k", "v"], [Types.STRING(), Types.STRING()])
DEAD_LETTER_TAG = OutputTag("dead-letter", KEYED_RECORD_TYPE_INFO)
WINDOW_ENTRY_TYPE = Types.TUPLE([Types.STRING(), Types.STRING(), Types.LONG()])


def _ensure_file_logging() -> None:
    """Send this module's logs to ``streamrec-job.log`` in Flink's log directory.

    In thread mode the task JVM's stderr is a pipe nobody reads: writing to it could block the task,
    so the logger must never fall back to stderr.
    """
    from deploy.paths import job_log_dir

    logger = logging.getLogger("streamrec")
    if any(isinstance(h, logging.FileHandler) for h in logger.handlers):
        return
    handler = logging.FileHandler(job_log_dir() / "streamrec-job.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _epoch_ms(value: object) -> int | None:
    """Kafka record timestamps arrive as java.time.Instant (thread mode) or datetime (process mode)."""
    if value is None:
        return None
    if hasattr(value, "toEpochMilli"):
        return int(value.toEpochMilli())
    if hasattr(value, "timestamp"):
        return int(value.timestamp() * 1000)
    return None


class ValidateEvents(ProcessFunction):
    """Raw Kafka rows -> typed events; everything else -> dead-letter side output. Never raises."""

    def __init__(self, cfg: JobConfig) -> None:
        self.max_bytes = cfg.max_event_bytes
        self.max_future_ms = cfg.max_future_ms

    def open(self, runtime_context: RuntimeContext) -> None:
        group = runtime_context.get_metrics_group().add_group("streamrec")
        self.valid = group.counter("events_valid")
        self.invalid = group.counter("events_dead_lettered")

    def process_element(self, value, ctx):  # noqa: ANN001, ANN201 - pyflink signature
        payload, topic, partition, offset, kafka_ts = value[0], value[1], value[2], value[3], value[4]
        source = SourcePosition(str(topic), int(partition), int(offset), _epoch_ms(kafka_ts))
        now = _now_ms()
        try:
            event = parse_event(payload, source=source, now_ms=now, max_bytes=self.max_bytes,
                                max_future_ms=self.max_future_ms)
        except EventValidationError as err:
            self.invalid.inc()
            record = dead_letter_record(payload, err, source, now_ms=now)
            yield DEAD_LETTER_TAG, Row(source.event_id(), json.dumps(record))
            return
        except Exception as exc:  # a bug must not kill the job: dead-letter it with the cause
            self.invalid.inc()
            err = EventValidationError(f"internal error while validating: {exc!r}", "internal_error")
            record = dead_letter_record(payload, err, source, now_ms=now)
            yield DEAD_LETTER_TAG, Row(source.event_id(), json.dumps(record))
            return
        self.valid.inc()
        yield Row(event.user_id, event.item_id, event.event_type, event.ts, event.event_id, source.timestamp_ms)


class RecommendFunction(KeyedProcessFunction):
    """Keyed by user: update the window in keyed state, score with ONNX, emit the ranked list."""

    def __init__(self, cfg: JobConfig) -> None:
        self.cfg = cfg

    def open(self, runtime_context: RuntimeContext) -> None:
        _ensure_file_logging()
        cfg = self.cfg
        bundle = load_bundle(cfg.bundle_path)
        self.scorer = OnnxScorer(bundle, providers=cfg.onnx_providers, intra_op_threads=cfg.onnx_threads)
        self.recommender = Recommender(self.scorer, top_k=cfg.top_k)
        self.provider = self.scorer.active_provider
        log.info(
            "recommender open: model_version=%s onnx_provider=%s items=%d",
            bundle.version, self.provider, bundle.n_items,
        )
        ttl = (
            StateTtlConfig.new_builder(Time.milliseconds(cfg.state_ttl_ms))
            .set_update_type(StateTtlConfig.UpdateType.OnCreateAndWrite)
            .set_state_visibility(StateTtlConfig.StateVisibility.NeverReturnExpired)
            .build()
        )
        descriptor = ListStateDescriptor("interaction_window", WINDOW_ENTRY_TYPE)
        descriptor.enable_time_to_live(ttl)
        self.window_state = runtime_context.get_list_state(descriptor)
        group = runtime_context.get_metrics_group().add_group("streamrec")
        self.lists = group.counter("lists_emitted")
        self.cold = group.counter("lists_cold_start")
        self.last_inference_us = 0
        group.gauge("last_inference_us", lambda: int(self.last_inference_us))
        self._timing = [0, 0, 0, 0, 0]  # events, state read, model, state write, serialize (ns)

    def process_element(self, value, ctx):  # noqa: ANN001, ANN201 - pyflink signature
        t0 = time.perf_counter_ns()
        event = Event(value[0], value[1], value[2], int(value[3]), value[4])
        window = [tuple(entry) for entry in (self.window_state.get() or [])]
        window = update_window(window, event.item_id, event.event_type, event.ts, max_len=self.cfg.history_len)
        t1 = time.perf_counter_ns()
        rec = self.recommender.recommend(window)
        t2 = time.perf_counter_ns()
        self.last_inference_us = (t2 - t1) // 1000
        self.window_state.update(window)
        t3 = time.perf_counter_ns()
        self.lists.inc()
        if rec.strategy != "model":
            self.cold.inc()
        record = recommendation_record(
            event,
            rec.items,
            model_version=self.recommender.model_version,
            emit_ms=_now_ms(),
            source_ts_ms=value[5],
            strategy=rec.strategy,
            history_len=len(window),
        )
        record["provider"] = self.provider
        payload = json.dumps(record)
        self._account(t0, t1, t2, t3, time.perf_counter_ns())
        yield Row(event.user_id, payload)

    def _account(self, t0: int, t1: int, t2: int, t3: int, t4: int) -> None:
        """Log where the time of the last 5,000 events went (state read, model, state write, output)."""
        timing = self._timing
        timing[0] += 1
        timing[1] += t1 - t0
        timing[2] += t2 - t1
        timing[3] += t3 - t2
        timing[4] += t4 - t3
        if timing[0] >= 5_000:
            n = timing[0]
            log.info("per-event us over %d events: state_read=%.0f model=%.0f state_write=%.0f output=%.0f",
                     n, timing[1] / n / 1e3, timing[2] / n / 1e3, timing[3] / n / 1e3, timing[4] / n / 1e3)
            self._timing = [0, 0, 0, 0, 0]
