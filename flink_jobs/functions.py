"""Thin Flink adapter over :class:`operators.serving.ServingCore`: no decisions are made here.

One Python operator per event: the Kafka record key (the user id) is extracted on the Java side
(:func:`flink_jobs.recommend_job.build_job`), so the only Python call an event makes is
:meth:`RecommendFunction.process_element`, which reads the user's packed state once, hands everything to the
core, writes the state once and emits one record: a list, or a dead letter through a side output, plus the
accepted event for the item counts. The control topic (trending boards, item rules) arrives as the
function's broadcast input (:meth:`RecommendFunction.process_broadcast_element`).

:class:`TrendingFunction` (keyed by item on the Java side) keeps each item's decayed count in keyed state and
publishes its subtask's board to the control topic (:mod:`operators.trending`).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

from pyflink.common import Row, Types
from pyflink.common.time import Time
from pyflink.datastream.functions import KeyedBroadcastProcessFunction, KeyedProcessFunction, RuntimeContext
from pyflink.datastream.output_tag import OutputTag
from pyflink.datastream.state import MapStateDescriptor, StateTtlConfig, ValueStateDescriptor

from flink_jobs.environment import job_log_dir
from operators.batching import MicroBatcher, failover_pending
from operators.config import JobConfig
from operators.gc_watch import pauses, settle
from operators.hotswap import CONTROL_MODEL, CONTROL_SHADOW, ModelLoader, SwapResult
from operators.live_metrics import RecentValues
from operators.serving import DEAD_LETTER, FORGOTTEN, LIST, QUARANTINE, Deferred, Output, ServingCore
from operators.shadow import ShadowScorer
from operators.trending import CONTROL_TRENDING, ItemCount, LocalCounts, TrendingBoard, bump

__all__ = [
    "INPUT_VALUE_FIELDS",
    "KEYED_RECORD_TYPE_INFO",
    "DEAD_LETTER_TAG",
    "QUARANTINE_TAG",
    "ACCEPTED_TAG",
    "CONTROL_RESULT_TAG",
    "SHADOW_TAG",
    "ACCEPTED_TYPE_INFO",
    "CONTROL_STATE",
    "STATE_NAME",
    "user_state_descriptor",
    "RecommendFunction",
    "TrendingFunction",
    "subtask_info",
]

log = logging.getLogger("streamrec.job")

INPUT_VALUE_FIELDS = ("key", "payload", "partition", "offset", "source_ts")
"""The value row each event reaches Python with; the key is repeated in it (reading Flink's current key
would cost one more call into Java)."""
KEYED_RECORD_TYPE_INFO = Types.ROW_NAMED(["k", "v"], [Types.STRING(), Types.PRIMITIVE_ARRAY(Types.BYTE())])
DEAD_LETTER_TAG = OutputTag("dead-letter", KEYED_RECORD_TYPE_INFO)
QUARANTINE_TAG = OutputTag("quarantine", KEYED_RECORD_TYPE_INFO)
ACCEPTED_VALUE_TYPE_INFO = Types.ROW([Types.STRING(), Types.LONG(), Types.DOUBLE()])
ACCEPTED_TYPE_INFO = Types.ROW([Types.STRING(), ACCEPTED_VALUE_TYPE_INFO])
"""Row(item_id, Row(item_id, ts, weight)): an accepted event, keyed by item on the Java side (field 0)."""
ACCEPTED_TAG = OutputTag("accepted", ACCEPTED_TYPE_INFO)
CONTROL_RESULT_TAG = OutputTag("control-result", KEYED_RECORD_TYPE_INFO)
"""Each subtask's verdict on a model or shadow message, to the control-result topic."""
SHADOW_TAG = OutputTag("shadow", KEYED_RECORD_TYPE_INFO)
"""The shadow model's lists, to the shadow topic."""
MODEL_HISTORY = 5
"""Model messages kept in broadcast state: a restored job re-verifies them, newest first, and serves the first
that passes (else the bundle it was started with)."""
CONTROL_STATE = MapStateDescriptor("control", Types.STRING(), Types.PICKLED_BYTE_ARRAY())
"""Broadcast state: the newest item-rules message (a restored job keeps the rules in force)."""
ITEM_COUNT_STATE = "item_count_v1"
STATE_NAME = "user_state_v1"
"""One packed value per user (:mod:`operators.state`; the layout version is inside the bytes, so the state's
name, and savepoint compatibility, stay the same across layouts)."""
REPORT_EVERY_NS = 5_000_000_000
PUBLISH_EVERY_NS = 1_000_000_000
METRIC_COUNTS = (("lists", "lists_emitted"), ("cold_start", "lists_cold_start"),
                 ("dead_letter", "events_dead_lettered"), ("rebuilds", "state_rebuilds"),
                 ("late_rebuilds", "late_event_rebuilds"), ("errors", "processing_errors"),
                 ("forgotten", "users_forgotten"),
                 ("quarantined", "events_quarantined"), ("trending_updates", "trending_updates"),
                 ("control_errors", "control_errors"), ("model_swaps", "model_swaps"),
                 ("models_refused", "models_refused"))


class PushedGauges:
    """Gauges whose values the task thread pushes, as Flink counters moved to each new value.

    PyFlink's own Python gauges are called back from the metric reporter's thread; in thread mode that call
    waits for the task's Python interpreter, and a Prometheus scrape of the TaskManager hangs (seen with
    pyflink 2.0.2). A counter is a plain Java object: ``inc`` from the task thread, read from any thread.
    Values are integers (round to the unit in the metric's name)."""

    def __init__(self, group) -> None:  # noqa: ANN001 - pyflink metric group
        self.group = group
        self.counters: dict[tuple, object] = {}
        self.values: dict[tuple, int] = {}

    def set(self, name: str, value: float, label: tuple[str, str] | None = None) -> None:
        key = (name, label)
        counter = self.counters.get(key)
        if counter is None:
            group = self.group if label is None else self.group.add_group(*label)
            counter = self.counters[key] = group.counter(name)
            self.values[key] = 0
        delta = round(value) - self.values[key]
        if delta:
            counter.inc(delta)
            self.values[key] += delta


def _side_output_context():  # noqa: ANN202 - pyflink's internal SideOutputContext, or None
    """The side-output context of the operator whose ``process_element`` is running (called from inside it).

    PyFlink 2.0's thread mode routes ``(OutputTag, value)`` records to side outputs for everything a
    ``KeyedBroadcastProcessFunction`` yields from ``process_element`` and ``process_broadcast_element``, but
    not from ``on_timer``: its ``on_timer_func`` (``pyflink/fn_execution/datastream/embedded/operations.py``,
    ``extract_process_function``) skips the routing, so a tagged record from a timer fails the task
    (``'tuple' object has no attribute '_values'``). The routing closure holds the context; it is the
    caller of our generator, so it is found a few frames up."""
    frame = sys._getframe(1)
    for _ in range(8):
        if frame is None:
            break
        context = frame.f_locals.get("side_output_context")
        if context is not None and hasattr(context, "collect"):
            return context
        frame = frame.f_back
    return None


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {"ts": round(record.created, 3), "level": record.levelname, "logger": record.name,
               "msg": record.getMessage()}
        doc.update(getattr(record, "fields", {}))
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc)


_LOGGING_LOCK = threading.Lock()


def _dump_stacks_if_asked() -> None:
    """``STREAMREC_DUMP_STACKS_S=N`` (diagnosing a hang): every N seconds, every Python thread's stack to
    ``python-stacks.txt`` in the log directory."""
    seconds = os.environ.get("STREAMREC_DUMP_STACKS_S")
    if seconds:
        import faulthandler

        faulthandler.dump_traceback_later(float(seconds), repeat=True,
                                          file=(job_log_dir() / "python-stacks.txt").open("a"))


def _ensure_file_logging() -> None:
    """JSON-lines logs to ``streamrec-job.log`` in Flink's log directory.

    In thread mode the task JVM's stderr is a pipe nobody reads: writing to it could block the task,
    so the logger must never fall back to stderr.
    """
    with _LOGGING_LOCK:  # the subtasks of one worker open at once
        _add_file_handler()


def _add_file_handler() -> None:
    logger = logging.getLogger("streamrec")
    if any(isinstance(h, logging.FileHandler) for h in logger.handlers):
        return
    _dump_stacks_if_asked()
    handler = logging.FileHandler(job_log_dir() / "streamrec-job.log")
    handler.setFormatter(_JsonFormatter())
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    logging.getLogger("operators").addHandler(handler)
    logging.getLogger("operators").setLevel(logging.INFO)
    logging.getLogger("operators").propagate = False


def subtask_info(runtime_context: RuntimeContext) -> tuple[int, int]:
    """(index of this subtask, parallelism): pyflink 2.0's thread mode lacks the wrappers, the Java runtime
    context has them."""
    try:
        info = runtime_context._runtime_context.getTaskInfo()  # noqa: SLF001 - no public API in thread mode
        return int(info.getIndexOfThisSubtask()), int(info.getNumberOfParallelSubtasks())
    except Exception:  # noqa: BLE001 - process mode has the wrappers
        return runtime_context.get_index_of_this_subtask(), runtime_context.get_number_of_parallel_subtasks()


def user_state_descriptor(ttl_ms: int) -> ValueStateDescriptor:
    """The user's packed state (:mod:`operators.state`): one value per user, expiring ``ttl_ms`` after its last
    write. PICKLED_BYTE_ARRAY: pyflink 2.0's thread mode mishandles PRIMITIVE_ARRAY(BYTE) state; pickling bytes
    is cheap."""
    ttl = (
        StateTtlConfig.new_builder(Time.milliseconds(ttl_ms))
        .set_update_type(StateTtlConfig.UpdateType.OnCreateAndWrite)
        .set_state_visibility(StateTtlConfig.StateVisibility.NeverReturnExpired)
        .build()
    )
    descriptor = ValueStateDescriptor(STATE_NAME, Types.PICKLED_BYTE_ARRAY())
    descriptor.enable_time_to_live(ttl)
    return descriptor


class RecommendFunction(KeyedBroadcastProcessFunction):
    """Keyed by user (the Kafka record key): packed state in, one list or dead letter out; the control topic
    as the broadcast input. What to do with an event is decided by the pure parts it holds: the serving core
    (:class:`operators.serving.ServingCore`), the micro-batcher (:class:`operators.batching.MicroBatcher`), the
    shadow (:class:`operators.shadow.ShadowScorer`) and the model loader (:class:`operators.hotswap.ModelLoader`);
    this class reads and writes Flink state, sets timers and emits records."""

    def __init__(self, cfg: JobConfig) -> None:
        self.cfg = cfg
        self._control_restored = False
        self._counts_timer = 0  # the processing-time timer that flushes waiting counts when events stop (0: none)
        self._side = None  # pyflink's side-output context, for records from on_timer (see _side_output_context)
        self._held: list = []  # side-output records from on_timer while that context is unknown
        self.loader: ModelLoader | None = None  # made in open()
        self.shadow = ShadowScorer(k=cfg.top_k)
        self._io = [0, 0, 0, 0, 0]  # events, python total, state read, state write, longest event (ns)
        self.gc: dict[str, float] = {}  # collector pauses of the last report interval

    def open(self, runtime_context: RuntimeContext) -> None:
        _ensure_file_logging()
        cfg = self.cfg
        self.core = ServingCore.from_config(cfg)
        bundle, model = self.core.bundle, self.core.model
        log.info("recommender open", extra={"fields": {
            "model_version": bundle.version, "onnx_provider": model.active_provider, "items": bundle.n_items,
            "recurrent": bundle.recurrent, "state_floats": bundle.state_size,
            "code": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}})
        self.state = runtime_context.get_state(user_state_descriptor(cfg.state_ttl_ms))
        self.metrics = PushedGauges(runtime_context.get_metrics_group().add_group("streamrec"))
        self.subtask = subtask_info(runtime_context)[0]
        self.loader = ModelLoader(build=lambda path: ServingCore.from_config(cfg, bundle_path=str(path)),
                                  smoke=lambda core: core.smoke())
        self.shadow = ShadowScorer(k=cfg.top_k)
        self.latency_ms = RecentValues()
        self._versions: set[tuple[str, str]] = set()
        self.timing: dict[str, float] = {}
        self._published = 0
        self._publish_metrics()
        self._io = [0, 0, 0, 0, 0]  # events, python total, state read, state write, longest event (ns)
        self._reported = time.perf_counter_ns()
        # cross-key micro-batching (cfg.batch_size > 1, a recurrent model): the batcher holds the deferred events
        # and finished users' states waiting for their key to be current again (pending events themselves are
        # in keyed state, with a timer)
        self.batcher = MicroBatcher(cfg.batch_size, cfg.micro_batch_wait_ms, enabled=bundle.recurrent)
        self._batched = False
        self._control_restored = False
        self.local_counts = LocalCounts(cfg.trending)
        # the bundle and pyflink are loaded: keep that heap out of the collector's walks (operators/gc_watch.py)
        frozen = settle()
        self._gc = pauses().reader()
        log.info("garbage collector settled", extra={"fields": {"frozen_objects": frozen}})

    def close(self) -> None:
        if getattr(self, "_gc", None) is not None:
            self._gc.close()  # a restarted subtask in the same TaskManager counts with a new reader

    def process_broadcast_element(self, value, ctx):  # noqa: ANN001, ANN201 - pyflink signature
        """A control-topic record: trending board or item rules (kept in broadcast state); never fails."""
        try:
            message = json.loads(bytes(value[1]))
        except (TypeError, ValueError) as exc:
            self.core.counts["control_errors"] += 1
            log.error("unreadable control record %r: %s", value[0], exc)
            return
        if not isinstance(message, dict):
            self.core.counts["control_errors"] += 1
            log.error("control record %r is not a JSON object", value[0])
            return
        yield from self._swap_results()
        if message.get("type") in (CONTROL_MODEL, CONTROL_SHADOW):
            self._request_model(message)
            history = self._model_history(ctx)
            history = [m for m in history if m.get("type") != message.get("type")][-(MODEL_HISTORY - 1):] + [message]
            ctx.get_broadcast_state(CONTROL_STATE).put("models", json.dumps(history).encode())
            return
        refused = self.core.counts["control_errors"]
        self.core.control(message)
        applied = self.core.counts["control_errors"] == refused
        if applied and message.get("type") != CONTROL_TRENDING:  # trending boards come again every second
            ctx.get_broadcast_state(CONTROL_STATE).put(str(message.get("type")), bytes(value[1]))
        return
        yield  # a generator, as pyflink expects

    def _restore_control(self, ctx) -> None:  # noqa: ANN001 - pyflink context
        """After a restore the control messages before the checkpoint are not read again: take the served
        model (re-verified) and the item rules from broadcast state (once, at the first event)."""
        self._control_restored = True
        try:
            stored = ctx.get_broadcast_state(CONTROL_STATE).get("item_rules")
        except Exception:  # noqa: BLE001 - no broadcast state yet
            stored = None
        if stored:
            self.core.control(json.loads(bytes(stored)))
        history = self._model_history(ctx)
        for kind in (CONTROL_MODEL, CONTROL_SHADOW):
            for message in reversed([m for m in history if m.get("type") == kind]):
                fetched, error = self._fetch(message)
                result = self.loader.load_now(kind, message, fetched) if error is None else None
                if result is not None and result.ok:
                    self._apply(result)
                    log.info("restored %s model %s", kind, result.version)
                    break

    @staticmethod
    def _model_history(ctx) -> list[dict]:  # noqa: ANN001 - pyflink context
        try:
            raw = ctx.get_broadcast_state(CONTROL_STATE).get("models")
        except Exception:  # noqa: BLE001 - no broadcast state yet
            return []
        return json.loads(bytes(raw)) if raw else []

    def _fetch(self, message: dict) -> tuple[Path | None, str | None]:
        """A bundle named by a URI (``file://``, ``hdfs://``, ``s3://``: whatever filesystems the cluster has
        plugins for) is copied to local disk through Flink's filesystems, here on the task thread (a JNI call);
        a plain path is read as it is. Verification runs on the loader thread. Returns (local copy or None,
        error or None)."""
        uri = str(message.get("uri", ""))
        if "://" not in uri:
            return None, None
        try:
            from pemja import findClass

            flink_path = findClass("org.apache.flink.core.fs.Path")
            file_utils = findClass("org.apache.flink.util.FileUtils")
            target = Path(tempfile.mkdtemp(prefix="streamrec-bundle-"))
            file_utils.copy(flink_path(uri), flink_path(target.as_uri() + "/bundle"), False)
            return target / "bundle", None
        except Exception as exc:  # noqa: BLE001 - refused with the reason
            return None, str(exc).splitlines()[0] if str(exc) else type(exc).__name__

    def _request_model(self, message: dict) -> None:
        kind = str(message.get("type"))
        fetched, error = self._fetch(message)
        log.info("%s message for version %s: verifying off the hot path", kind, message.get("version"))
        self.loader.request(kind, message, fetched, error)

    def _apply(self, result: SwapResult) -> None:
        if result.kind == CONTROL_MODEL:
            result.core.adopt(self.core)
            self.core = result.core
            self.core.counts["model_swaps"] += 1
        else:
            self.shadow.core = result.core
        result.core = None

    def _swap_results(self):  # noqa: ANN202 - generator of records
        """Finished verifications (usually none: one attribute read): swap the verified core in, count a refused
        one; either way each subtask reports on the control-result topic."""
        for result in self.loader.poll():
            if result.ok:
                if result.kind == CONTROL_MODEL and len(self.batcher):
                    yield from self._flush()  # events deferred under the serving model are scored by it
                self._apply(result)
            else:
                self.core.counts["models_refused"] += 1
            doc = result.message(self.subtask, time.time_ns() // 1_000_000)
            log.info("%s bundle %s: %s", result.kind, result.version, result.reason)
            yield CONTROL_RESULT_TAG, Row(f"{result.kind}/{self.subtask}", json.dumps(doc).encode())

    def _publish_metrics(self) -> None:
        """Every metric's current value (from the task thread, at most once a second: :class:`PushedGauges`)."""
        self._published = time.perf_counter_ns()
        m, counts = self.metrics, self.core.counts
        for name, metric in METRIC_COUNTS:
            m.set(metric, counts[name])
        for q in (50, 90, 99):
            m.set(f"latency_p{q}_ms", self.latency_ms.quantile(q / 100))
            m.set(f"model_p{q}_us", self.core.model_us.quantile(q / 100))
        for field in ("python_total", "state_read", "state_write", "parse", "state_decode", "model", "rerank", "output",
                      "other"):
            m.set(f"{field}_us", self.timing.get(field, 0.0))
        m.set("gc_pause_ms_max", self.gc.get("pause_ms_max", 0.0))  # the last report interval's
        m.set("gc_pause_ms_total", self.gc.get("pause_ms_total", 0.0))
        a = self.shadow.agreement
        m.set("shadow_lists", a.compared)
        m.set("shadow_overlap_at_k_pct", 100 * a.overlap)
        m.set("next_events_judged", a.judged)
        m.set("serving_next_event_hits", a.serving_hits)
        m.set("shadow_next_event_hits", a.shadow_hits)
        m.set("lists_cold_start_pct", 100 * counts["cold_start"] / counts["lists"] if counts["lists"] else 0)
        # streamrec_<role>_model{model_version="..."}: 1 for the version in that role now, 0 for earlier ones
        roles = {"serving": self.core.version, "shadow": self.shadow.version}
        for role, version in roles.items():
            if version is not None:
                self._versions.add((role, version))
        for role, version in self._versions:
            m.set(f"{role}_model", 1 if roles[role] == version else 0, ("model_version", version))

    def process_element(self, value, ctx):  # noqa: ANN001, ANN201 - pyflink signature
        """The second line of defence: whatever escapes the core (which turns bad input into dead letters
        itself) dead-letters this one event, counted and logged, instead of failing the task and with it
        every other user's lists. Its whole time (emitting the records included) counts as ``python_total``."""
        started = time.perf_counter_ns()
        if self._side is None:
            self._side = _side_output_context() or False
            if not self._side:
                log.warning("no side-output context found: records from timers wait for the next event")
        if self._held:
            held, self._held = self._held, []
            yield from held
        if self.loader is not None and self.loader.busy:
            yield from self._swap_results()
        try:
            yield from self._process_element(value, ctx)
        except Exception as exc:
            yield from self._emit(self.core.failed(value[1], value[2], value[3], value[4], exc,
                                                   time.time_ns() // 1_000_000, key=value[0]))
        took = time.perf_counter_ns() - started
        self._io[1] += took
        if took > self._io[4]:
            self._io[4] = took

    def _process_element(self, value, ctx):  # noqa: ANN001, ANN202 - pyflink signature
        t0 = time.perf_counter_ns()
        if not self._control_restored:
            self._restore_control(ctx)
        key = value[0]
        batcher = self.batcher
        if batcher.waiting(key):
            yield from self._flush()  # this user's previous event is still waiting: score it first
        done = batcher.finished_state(key)
        state = self.state
        stored = done if done is not None else state.value()
        now_ms = time.time_ns() // 1_000_000
        if failover_pending(done, stored):  # its batch was lost with a failover: serve it before this one
            previous = self.core.resolve(key, stored, now_ms)
            if previous is not None:
                stored = done = previous.state
                yield from self._emit(previous)
        t1 = time.perf_counter_ns()
        defer = batcher.defer(t0)
        out = self.core.process(key, value[1], value[2], value[3], value[4], stored, now_ms, defer=defer)
        t2 = time.perf_counter_ns()
        if out.state == b"":  # forget_user: everything held for this user goes, in state and in memory
            state.clear()
            self._forget(key)
        elif out.state is not None:
            state.update(out.state)
        elif done is not None:
            state.update(done)
        t3 = time.perf_counter_ns()
        io = self._io
        io[0] += 1
        io[2] += t1 - t0
        io[3] += t3 - t2
        if t3 - self._reported > REPORT_EVERY_NS:
            self._report()
        if t3 - self._published > PUBLISH_EVERY_NS:
            self._publish_metrics()
        if isinstance(out, Deferred):
            if out.accepted is not None:  # counted now; its list follows with the batch
                accepted, out.accepted = out.accepted, None
                yield from self._accepted(accepted)
            # the shadow scores it once the batch has served the user's list
            full = batcher.add(out, (value, stored) if self.shadow.core is not None else None)
            ctx.timer_service().register_processing_time_timer(now_ms + self.cfg.micro_batch_wait_ms)
            if full:
                yield from self._flush()
        else:
            yield from self._emit(out)
            if out.kind == LIST:
                if value[4]:
                    self.latency_ms.add(time.time_ns() / 1e6 - value[4])
                yield from self._shadow(key, value, stored, now_ms, out)
        if out.state != b"":  # never a timer on a forgotten user's key: it would keep the key in state
            self._counts_timer_for(ctx, now_ms)

    def _forget(self, key: str) -> None:
        """``forget_user``: nothing of the user stays in this function's memory either (the user's waiting event,
        if any, was scored before the forget event was processed: see ``batch_keys``)."""
        self.batcher.forget(key)
        self.shadow.forget(key)

    def _shadow(self, key: str, value, stored: bytes | None, now_ms: int, served: Output):  # noqa: ANN001, ANN202
        """The shadow's list of the same event (:class:`operators.shadow.ShadowScorer`), to the shadow topic."""
        out = self.shadow.score(key, value, stored, now_ms, served, self.core.counts)
        if out is not None:
            yield SHADOW_TAG, Row(out.key, out.value)

    def _counts_timer_for(self, ctx, now_ms: int) -> None:  # noqa: ANN001 - pyflink context
        """Counts are waiting in :class:`LocalCounts` and no timer will send them: one timer (on the current
        event's key, a user with state) sends them if no event comes first."""
        if self.local_counts.items and not self._counts_timer:
            self._counts_timer = now_ms + self.local_counts.every_ms
            ctx.timer_service().register_processing_time_timer(self._counts_timer)

    def on_timer(self, timestamp, ctx):  # noqa: ANN001, ANN201 - pyflink signature
        """Side outputs from a timer go to pyflink's side-output context directly (pyflink does not route them
        here: :func:`_side_output_context`). Its Python time counts towards ``python_total``."""
        t0 = time.perf_counter_ns()
        for record in self._on_timer(timestamp, ctx):
            if isinstance(record, tuple):
                if self._side:
                    self._side.collect(record[0].tag_id, record[1])
                else:
                    self._held.append(record)
            else:
                yield record
        self._io[1] += time.perf_counter_ns() - t0

    def _on_timer(self, timestamp, ctx):  # noqa: ANN001, ANN202 - pyflink signature
        """A deferred event's wait is over: run its batch if it has not run, and store the user's new state.
        After a failover (nothing in memory) the pending event is scored from the state alone. Counts waiting
        in :class:`LocalCounts` are sent when the counts timer fires."""
        current = ctx.get_current_key()
        key = current if isinstance(current, str) else current[0]
        now_ms = time.time_ns() // 1_000_000
        if self._counts_timer and timestamp >= self._counts_timer:
            # everything waiting goes now: a flush at an event since this timer was set would otherwise leave
            # the later counts waiting with no timer (none is set on this key: it may be a forgotten user's)
            self._counts_timer = 0
            yield from self._accepted_rows(self.local_counts.flush(now_ms))
        if self.batcher.waiting(key):
            yield from self._flush()
        done = self.batcher.finished_state(key)
        if done is not None:
            self.state.update(done)
        else:
            out = self.core.resolve(key, self.state.value(), now_ms)
            if out is not None:
                self.state.update(out.state)
                yield from self._emit(out)
        # no new counts timer here: the current key may be a user with no state left (forgotten, expired), and a
        # timer re-registered on it would keep that key in the timer state for as long as counts keep coming.
        # The next event registers one on its own key.

    def _flush(self):  # noqa: ANN202 - generator of records
        batch = self.batcher.take()
        if len(batch.events) > 1 and not self._batched:
            self._batched = True
            log.info("first cross-key micro-batch", extra={"fields": {"batch_events": len(batch.events)}})
        source_ts = [d.user.pending.source_ts if d.user.pending is not None else None for d in batch.events]
        now_ms = time.time_ns() // 1_000_000
        for deferred, sent, out in zip(batch.events, source_ts, self.core.run_deferred(batch.events, now_ms),
                                       strict=True):
            self.batcher.finish(deferred.key, out.state)  # stored when this user's key is current again
            yield from self._emit(out)
            if out.kind == LIST:  # the same gauges and shadow scoring as an event served at once
                if sent:
                    self.latency_ms.add(time.time_ns() / 1e6 - sent)
                inputs = batch.shadow_inputs.get(deferred.key)
                if inputs is not None:
                    yield from self._shadow(deferred.key, inputs[0], inputs[1], now_ms, out)

    def _accepted(self, accepted: tuple[str, int, float]):  # noqa: ANN202 - generator of records
        """Combined per item before they go to the item counts (:class:`operators.trending.LocalCounts`)."""
        return self._accepted_rows(self.local_counts.add(*accepted, time.time_ns() // 1_000_000))

    @staticmethod
    def _accepted_rows(records: list[tuple[str, int, float]]):  # noqa: ANN205 - generator of records
        for item, ts, count in records:
            yield ACCEPTED_TAG, Row(item, Row(item, ts, count))

    def _emit(self, out: Output):  # noqa: ANN202 - generator of records
        if out.accepted is not None:
            yield from self._accepted(out.accepted)
        if out.kind == DEAD_LETTER:
            yield DEAD_LETTER_TAG, Row(out.key, out.value)
        elif out.kind == FORGOTTEN:
            return
        elif out.kind == QUARANTINE:
            yield (QUARANTINE_TAG if self.cfg.quarantine_topic else DEAD_LETTER_TAG), Row(out.key, out.value)
        else:
            yield Row(out.key, out.value)

    def _report(self) -> None:
        """Log (JSON) and expose as gauges where the Python time of the last events went, in microseconds per
        event: every part (the core's, batched work included, and the state access) summed over the interval
        and divided by the same event count, ``other`` the rest of ``python_total`` (the adapter, timers,
        emitting), so the parts add up to ``python_total``."""
        io, self._io = self._io, [0, 0, 0, 0, 0]
        self._reported = time.perf_counter_ns()
        n = max(io[0], 1)
        core = self.core.take_timing(events=n)
        parts = {"state_read": io[2] / n / 1e3, "state_write": io[3] / n / 1e3,
                 **{k: v for k, v in core.items() if k != "events"}}
        total = io[1] / n / 1e3
        self.timing = {"python_total": total, **parts, "other": max(total - sum(parts.values()), 0.0)}
        self.gc = self._gc.take()
        log.info("per-event python time", extra={"fields": {"per_event_us": self.timing, "events": io[0],
                                                            "python_max_us": io[4] / 1e3, "gc": self.gc,
                                                            "counts": dict(self.core.counts)}})


class TrendingFunction(KeyedProcessFunction):
    """Keyed by item: the item's decayed count in keyed state (:func:`operators.trending.bump`), this subtask's
    board in memory, published to the control topic every ``publish_every_ms`` (processing time)."""

    def __init__(self, cfg: JobConfig) -> None:
        self.cfg = cfg

    def open(self, runtime_context: RuntimeContext) -> None:
        _ensure_file_logging()
        tcfg = self.cfg.trending
        self.half_life_ms = tcfg.half_life_minutes * 60_000
        self.board = TrendingBoard(tcfg)
        self.subtask, self.parallelism = subtask_info(runtime_context)
        ttl_ms = int(max(10 * self.half_life_ms, 86_400_000))  # a count this old has decayed to nothing
        ttl = (StateTtlConfig.new_builder(Time.milliseconds(ttl_ms))
               .set_update_type(StateTtlConfig.UpdateType.OnCreateAndWrite)
               .set_state_visibility(StateTtlConfig.StateVisibility.NeverReturnExpired).build())
        descriptor = ValueStateDescriptor(ITEM_COUNT_STATE, Types.PICKLED_BYTE_ARRAY())
        descriptor.enable_time_to_live(ttl)
        self.state = runtime_context.get_state(descriptor)
        self.next_publish = 0
        self.published = 0
        self.metrics = PushedGauges(runtime_context.get_metrics_group().add_group("streamrec"))
        log.info("trending open", extra={"fields": {"subtask": self.subtask, "of": self.parallelism,
                                                    "half_life_minutes": tcfg.half_life_minutes}})

    def process_element(self, value, ctx):  # noqa: ANN001, ANN201 - pyflink signature
        item, ts, weight = value[0], value[1], value[2]
        if weight <= 0:
            return
        count = bump(ItemCount.unpack(self.state.value()), ts, weight, self.half_life_ms)
        self.state.update(count.pack())
        self.board.observe(item, count)
        now = time.time_ns() // 1_000_000
        if now >= self.next_publish:  # one timer at a time for the whole subtask
            self.next_publish = now + self.cfg.trending.publish_every_ms
            ctx.timer_service().register_processing_time_timer(self.next_publish)
        return
        yield  # a generator, as pyflink expects

    def on_timer(self, timestamp, ctx):  # noqa: ANN001, ANN201 - pyflink signature
        message = self.board.message(self.subtask, self.parallelism)
        self.published += 1
        self.metrics.set("trending_boards_published", self.published)
        self.metrics.set("trending_board_items", len(self.board.items))
        yield Row(f"trending/{self.subtask}", json.dumps(message, separators=(",", ":")).encode())
