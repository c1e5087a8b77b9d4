"""The per-event serving core: raw Kafka record + the user's stored state -> a ranked list or a dead letter.

Everything the job decides happens here, without pyflink: the Flink function
(:class:`flink_jobs.functions.RecommendFunction`) only reads and writes the state bytes and forwards the
output, and the offline paths (tests, replay) run this same code with an in-memory state store.

Per event: validate (:func:`~operators.events.decode_event`, record key = user id; a ``forget_user`` control
event deletes the user's state) -> add to the window (:class:`~operators.state.UserState`) -> abuse check
(:mod:`operators.abuse`: an implausible event is quarantined, not stored) -> model input
(:func:`~operators.window.model_input`) -> score: a recurrent model advances its per-user state by one step
(``step.onnx``, cost independent of the history); its state is rebuilt from the window with the full-sequence
graph only when missing, written by another model, or after a late event: a late event (older than the user's
newest) goes to its event-time place in the window and the state is rebuilt from the window, so that the model
sees the user's events in event-time order, as training does (stepping it in arrival order instead moved
NDCG@10 on a replay with late arrivals: ``perf/results/train-serve-skew-*.json``); a stateless model reads the
window every event -> top-C candidates (scored outside the graph, :mod:`operators.scoring`, with the
window's exclusion rule; users with one or two known items get item-to-item neighbours instead) -> item rules
and re-ranking
(:mod:`operators.item_rules`, :mod:`operators.rerank`) -> JSON bytes.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import os
import time
from dataclasses import dataclass

import numpy as np

from operators.abuse import AbuseConfig, abuse_reason
from operators.bundle import load_bundle
from operators.catalog import CategoryMatrix, load_catalog
from operators.config import JobConfig
from operators.covisits import StreamNeighbors
from operators.errors import ConfigError, EventValidationError, StateLayoutError
from operators.events import (
    FORGET_USER,
    Event,
    SourcePosition,
    check_record_key,
    dead_letter_record,
    decode_event,
    encode_record,
    recommendation_record,
    redact_dead_letter,
)
from operators.inference import OnnxModel
from operators.interests import InterestConfig, Interests, type_code
from operators.item_rules import CONTROL_ITEM_RULES, ItemRulesWatcher
from operators.items import ItemIndex, item_key
from operators.live_metrics import RecentValues
from operators.rerank import RerankConfig, Reranker, ShownHistory, item_hash32
from operators.state import EVENT_CODES, Pending, UserState, decode_state, encode_state, model_tag
from operators.trending import CONTROL_TRENDING, TrendingConfig, TrendingTable
from operators.window import ModelInput, advances_model, left_pad_row, model_input

__all__ = ["pseudonym", "user_id_key", "ServingCore", "Output", "Deferred", "LIST", "DEAD_LETTER",
           "FORGOTTEN", "QUARANTINE", "TIMING_FIELDS"]

log = logging.getLogger(__name__)

LIST = 0
DEAD_LETTER = 1
FORGOTTEN = 2
"""A ``forget_user`` control event: delete the user's state (``Output.state == b""``), emit nothing."""
QUARANTINE = 3
"""An implausible event (:mod:`operators.abuse`): not stored, no list, a record for the quarantine topic."""
TIMING_FIELDS = ("parse", "state_decode", "model", "output")
_NEG_HALF = -5e8  # scores below this are masked (excluded or padding)
_NO_SHOWN = ShownHistory.empty()


@dataclass(frozen=True, slots=True)
class Output:
    """What one record produces: the state to store (None: leave it unchanged) and one record to emit."""

    state: bytes | None
    """``None``: leave the stored state as it is; ``b""``: delete it (:data:`FORGOTTEN`)."""
    kind: int
    """:data:`LIST` (to the output topic), :data:`DEAD_LETTER`, :data:`QUARANTINE` or :data:`FORGOTTEN`."""
    key: str
    value: bytes
    accepted: tuple[str, int, float] | None = None
    """An event stored for its user: ``(item_id, ts, weight)`` for the in-stream item counts
    (:mod:`operators.trending`); None for dead letters, quarantined and control events."""


@dataclass(slots=True)
class Deferred:
    """An event whose list waits for a cross-key micro-batch (:meth:`ServingCore.process` with ``defer``).

    ``state`` must be stored at once: it holds the updated window and the event itself (``PENDING``), so a
    failover before the batch runs loses nothing (:meth:`ServingCore.resolve` computes it from the state alone).
    """

    key: str
    state: bytes
    user: UserState
    exclude: np.ndarray
    recent: np.ndarray
    item: int
    indices: np.ndarray | None = None
    reshown: np.ndarray | None = None
    accepted: tuple[str, int, float] | None = None
    covisit: tuple[list[int], int, int] | None = None
    """``(window tail, item, ts)`` for the in-stream neighbour counts, observed once the list is made."""


def user_id_key(cfg: JobConfig) -> bytes | None:
    """The secret that pseudonymises user ids on the output topic (``cfg.pseudonymize_users``), read from the
    environment variable ``cfg.user_id_secret_env`` on the worker: it is never part of the job's config, its
    description or its logs."""
    if not cfg.pseudonymize_users:
        return None
    secret = os.environ.get(cfg.user_id_secret_env, "")
    if len(secret) < 16:
        msg = (f"pseudonymize_users is on but ${cfg.user_id_secret_env} is unset or shorter than 16 characters; "
               f"export a long random secret in {cfg.user_id_secret_env} (e.g. `openssl rand -hex 32`) on every "
               "machine that runs the job")
        raise ConfigError(msg)
    return secret.encode("utf-8")


def pseudonym(key: bytes, user_id: str) -> str:
    """Keyed pseudonym of a user id: hex HMAC-SHA256 (first 128 bits); stable for one secret, not reversible
    without it."""
    return hmac.new(key, user_id.encode("utf-8"), hashlib.sha256).hexdigest()[:32]


class ServingCore:
    """Stateless between calls (all per-user data comes in as ``stored`` bytes), so one instance serves every
    key of a Flink subtask."""

    def __init__(
        self,
        model: OnnxModel,
        *,
        top_k: int,
        history_len: int,
        input_topic: str,
        max_event_bytes: int = 16_384,
        max_future_ms: int = 86_400_000,
        rerank: RerankConfig | None = None,
        user_id_key: bytes | None = None,
        item_rules: str | None = None,
        abuse: AbuseConfig | None = None,
        catalog: dict[str, frozenset[str]] | None = None,
        interests: InterestConfig | None = None,
        trending: TrendingConfig | None = None,
        redact_dead_letters: bool = False,
    ) -> None:
        bundle = model.bundle
        if top_k > bundle.n_candidates:
            msg = (f"top_k={top_k} is larger than the {bundle.n_candidates} candidates model bundle "
                   f"{bundle.version} returns; use --top-k {bundle.n_candidates} or less, or export the model "
                   f"with more candidates")
            raise ConfigError(msg)
        self.model = model
        self.bundle = bundle
        self.top_k = top_k
        self.history_len = history_len
        self.input_topic = input_topic
        self.max_event_bytes = max_event_bytes
        self.max_future_ms = max_future_ms
        self.index = ItemIndex(bundle.item_vocab)
        self.tag = model_tag(bundle.version)
        self.version = bundle.version
        self.provider = model.active_provider
        self.seq_len = bundle.max_seq_len
        self.recent_len = bundle.recent_len
        self.vocab = model.vocab
        popular = np.array([self.index.index(item_key(i)) for i in bundle.popular_items], dtype=np.int64)
        self._popular = popular[popular != 0]
        n = len(self._popular)
        # Fallback scores decrease with rank so that consumers can still sort by score.
        self._popular_scores = np.round(np.linspace(1.0, 1.0 / max(n, 1), num=n), 6)
        # the output's pseudonym of a user id (None: ids go out as they are), built once for lists and dead letters
        self._pseudonym = None if user_id_key is None else functools.partial(pseudonym, user_id_key)
        self._redact = redact_dead_letters
        self.abuse = abuse or AbuseConfig()
        self.rules = ItemRulesWatcher(item_rules, bundle.item_vocab)
        self.rerank_cfg = rerank or RerankConfig()
        self.interest_cfg = interests or InterestConfig()
        self.categories = CategoryMatrix.build(catalog or {}, bundle.item_vocab)
        if catalog and self.categories is None:
            log.warning("the catalog names no category for any of the model's %d items: interests and the "
                        "category cap are off", bundle.n_items)
        self.interests = (Interests(self.interest_cfg, self.categories)
                          if self.categories is not None and self.interest_cfg.enabled else None)
        # event weights for the item counts: the interest weights, negative feedback counting nothing
        weights = Interests.event_weights(self.interest_cfg)
        self._count_weight = np.maximum(weights, 0.0).tolist()
        self.trending_cfg = trending or TrendingConfig()
        self.trending = (TrendingTable(self.trending_cfg, {i: n for n, i in enumerate(bundle.item_vocab, 1)},
                                       bundle.n_items)
                         if self.trending_cfg.enabled else None)
        wants_emb = self.rerank_cfg.diversity_lambda > 0 or self.rerank_cfg.explain
        self.reranker = Reranker(self.rerank_cfg, bundle.item_embeddings() if wants_emb else None, top_k,
                                 None if self.categories is None else self.categories.rows, self.interests)
        if self.rerank_cfg.category_cap and self.categories is None:
            log.warning("rerank.category_cap=%d needs a catalog (--catalog): no cap", self.rerank_cfg.category_cap)
        self._neighbors = bundle.item_neighbors() if self.rerank_cfg.neighbor_cold_start else None
        self.stream_neighbors = (StreamNeighbors(half_life_minutes=self.rerank_cfg.neighbor_half_life_minutes,
                                                 max_items=self.rerank_cfg.neighbor_stream_items)
                                 if self._neighbors is not None and self.rerank_cfg.neighbor_refresh else None)
        vocab_keys = np.fromiter((item_key(i) for i in bundle.item_vocab), dtype=np.uint64, count=bundle.n_items)
        self._hash32 = np.concatenate(([0], item_hash32(vocab_keys))).astype(np.uint32)  # by catalog index
        self._popular_reasons = [{"cold_start": "popular"}] * self.top_k
        self._reshow = self.rerank_cfg.viewed_penalty is not None
        self._purchase_code = EVENT_CODES["purchase"]
        self.timing = [0] * (len(TIMING_FIELDS) + 1)  # events, then ns per field
        self._rerank_ns = 0  # part of "model" (ranking), reported on its own
        self.rebuild_late = True
        """Rebuild a recurrent state at a late event (training's order); False steps it in arrival order (the
        previous behaviour, kept to measure the difference: ``perf.train_serve_skew``)."""
        self.counts = {"lists": 0, "cold_start": 0, "dead_letter": 0, "rebuilds": 0, "late_rebuilds": 0,
                       "steps": 0, "errors": 0,
                       "batches": 0, "state_resets": 0, "forgotten": 0,
                       "quarantined": 0, "trending_updates": 0, "control_errors": 0, "model_swaps": 0,
                       "models_refused": 0}
        self.control_log: dict[str, dict] = {}  # the newest control message per kind (and board): see adopt
        self.model_us = RecentValues()  # model (and re-ranking) time of the last events, for quantile metrics

    @classmethod
    def from_config(cls, cfg: JobConfig, bundle_path: str | None = None) -> ServingCore:
        """The core exactly as the job builds it from its config (the offline replay uses this too)."""
        bundle = load_bundle(bundle_path or cfg.bundle_path)
        model = OnnxModel(bundle, providers=cfg.onnx_providers, intra_op_threads=cfg.onnx_threads)
        return cls(model, top_k=cfg.top_k, history_len=cfg.history_len, input_topic=cfg.input_topic,
                   max_event_bytes=cfg.max_event_bytes, max_future_ms=cfg.max_future_ms, rerank=cfg.rerank,
                   user_id_key=user_id_key(cfg), item_rules=cfg.item_rules_path, abuse=cfg.abuse,
                   redact_dead_letters=cfg.redact_dead_letters,
                   catalog=load_catalog(cfg.catalog_path), interests=cfg.interests, trending=cfg.trending)

    # ------------------------------------------------------------------ control messages
    def control(self, message: dict) -> None:
        """A control-topic message (the broadcast input): a trending board (:mod:`operators.trending`) or
        item rules (:mod:`operators.item_rules`). A malformed one is logged and counted, never fatal."""
        try:
            kind = message.get("type")
            if kind == CONTROL_TRENDING:
                if self.trending is not None:
                    self.trending.update(message)
                    self.counts["trending_updates"] += 1
                    self.control_log[f"{kind}/{message.get('subtask')}"] = message
            elif kind == CONTROL_ITEM_RULES:
                self.rules.apply_message(message)
                self.control_log[kind] = message
            else:
                msg = f"unknown control message type {kind!r}"
                raise ValueError(msg)
        except Exception as exc:  # noqa: BLE001 - a bad control message must not stop serving
            self.counts["control_errors"] += 1
            log.error("control message refused: %s (%s)", exc, str(message)[:200])

    def smoke(self) -> None:
        """One inference on a made-up history (the most popular item); raises unless the scores are finite
        (a bundle is verified this way before it serves: :mod:`operators.hotswap`)."""
        first = int(self._popular[0]) if len(self._popular) else 1
        seq = np.zeros((1, self.seq_len), dtype=np.int64)
        seq[0, -1] = first
        exclude = np.zeros((1, 1), dtype=np.int64)
        scores, items, state = self.model.run_full(seq, exclude)
        if not np.isfinite(scores).all() or items.shape[1] < self.top_k:
            msg = f"smoke inference gave {items.shape[1]} candidates with non-finite or too few scores"
            raise ValueError(msg)
        if self.bundle.recurrent:
            recent = np.zeros((1, self.recent_len), dtype=np.int64)
            scores, _, _ = self.model.run_step(state, np.array([first], dtype=np.int64), recent, exclude)
            if not np.isfinite(scores).all():
                msg = "smoke inference of the step graph gave non-finite scores"
                raise ValueError(msg)

    def adopt(self, old: ServingCore) -> None:
        """Take over from the core this one replaces (a model swap): its counters (the metrics read them) and
        the control messages in force (trending boards, item rules)."""
        self.counts = old.counts
        self.timing = old.timing
        self.model_us = old.model_us
        for message in old.control_log.values():
            self.control(message)

    # ------------------------------------------------------------------ one record
    def process(
        self,
        key: str | None,
        payload: bytes | None,
        partition: int,
        offset: int,
        source_ts: int | None,
        stored: bytes | None,
        now_ms: int,
        *,
        defer: bool = False,
    ) -> Output | Deferred:
        """One Kafka record. Never raises on input: a record that cannot be served becomes a dead letter.

        With ``defer``, an event the step graph would score is returned as a :class:`Deferred` instead (to be
        scored with others by :meth:`run_deferred`); every other event is served at once as without it.
        """
        t0 = time.perf_counter_ns()
        self.rules.refresh()  # a stat call at most once a second
        source = SourcePosition(self.input_topic, partition, offset, source_ts)
        try:
            event = decode_event(payload, source=source, now_ms=now_ms, max_bytes=self.max_event_bytes,
                                 max_future_ms=self.max_future_ms)
            check_record_key(event, key)
        except EventValidationError as err:
            return self._dead(payload, err, source, now_ms, key)
        except Exception as exc:  # a validation bug must not stop every other user's lists either
            return self._failed(payload, exc, source, now_ms, key)
        if event.event_type == FORGET_USER:
            self.counts["forgotten"] += 1
            return Output(b"", FORGOTTEN, event.user_id, b"")
        t1 = time.perf_counter_ns()
        try:
            state = self._decode(stored)
            # a late event goes to its event-time place in the window; the model takes events as they arrive
            key_of_item = item_key(event.item_id)
            code = type_code(event.event_type, event.value, self.interest_cfg)
            newest_before = state.newest
            state.add(key_of_item, event.event_type, event.ts, self.history_len, code)
            suspicious = abuse_reason(state.keys, state.ts, state.types, self.abuse)
            if suspicious is not None:
                self.counts["quarantined"] += 1
                err = EventValidationError(f"user {event.user_id[:64]!r}: {suspicious}", "quarantined")
                return Output(None, QUARANTINE, source.event_id(), self._dead_letter(payload, err, source, now_ms,
                                                                                     key))
            state.pending = Pending(event.event_id, event.item_id, event.ts, source_ts)
            event_item = self.index.index(key_of_item)
            if code == self._purchase_code and self.rerank_cfg.never_repeat_purchased:
                state.remember_purchase(key_of_item, self.rerank_cfg.purchased_memory)
            if self.interests is not None:
                state.affinity = self.interests.update_long(state.affinity, newest_before, state.newest, event_item,
                                                            code, event.ts)
            accepted = (event.item_id, event.ts, self._count_weight[code]) if self.trending is not None else None
            indices = self.index.lookup(state.keys)
            # the event's co-visits count from the moment its own list is made (in both modes, so a micro-batch
            # gives every cold-start list the table one-at-a-time serving would)
            covisit = ((indices[-8:].tolist(), event_item, event.ts)
                       if self.stream_neighbors is not None and event_item else None)
            item = self._step_item(indices, event_item)
            inp = self._input(indices, state)
            if self.rebuild_late and newest_before and event.ts < newest_before and self.bundle.recurrent:
                # training reads a user's events in event-time order: a late event rebuilds the state from the
                # window (in that order) rather than stepping it in arrival order
                state.model = None
                self.counts["late_rebuilds"] += 1
            self._start_fresh(state, inp, item)
            t2 = time.perf_counter_ns()
            if defer and self._steppable(state) and (not inp.cold or item):
                self._account(t1 - t0, t2 - t1, 0, 0)
                return Deferred(event.user_id, encode_state(state), state, self._exclude(inp, item),
                                left_pad_row(inp.sequence, self.recent_len), item, indices, inp.reshown, accepted,
                                covisit)
            items, scores, reasons, strategy = self.rank(state, item, inp, indices)
            if covisit is not None:
                self.stream_neighbors.observe(*covisit)  # type: ignore[union-attr]
            t3 = time.perf_counter_ns()
            out = self._list(event.user_id, state, items, scores, strategy, now_ms, reasons, accepted)
        except Exception as exc:  # a bug or a broken model must not stop every other user's lists
            return self._failed(payload, exc, source, now_ms, key)
        t4 = time.perf_counter_ns()
        self._account(t1 - t0, t2 - t1, t3 - t2, t4 - t3)
        return out

    def _decode(self, stored: bytes | None) -> UserState:
        """The stored state; state this version cannot read is logged, counted and started afresh (the user's
        lists go on, cold) rather than failing every later event of that user until the TTL expires."""
        try:
            return decode_state(stored)
        except StateLayoutError as exc:
            self.counts["state_resets"] += 1
            log.warning("user state unreadable, starting afresh: %s", exc)
            return UserState.empty()

    def _input(self, indices: np.ndarray, state: UserState) -> ModelInput:
        """The model input and exclusion set of the user's window (:func:`~operators.window.model_input`)."""
        purchased = None if state.purchased is None else self.index.lookup(state.purchased)
        return model_input(indices, state.types, purchased, reshow_viewed=self._reshow)

    @staticmethod
    def _exclude(inp: ModelInput, item: int) -> np.ndarray:
        """The exclusion rule: every item of the window, and the event's own item (a late event older than the
        whole window is not in it)."""
        return np.append(inp.exclude, item) if item else inp.exclude

    @staticmethod
    def _step_item(indices: np.ndarray, item: int) -> int:
        """The item a recurrent model advances by: the event's, unless the item was already in the window (a
        repeat is not a new entry of the model's sequence, :func:`~operators.window.advances_model`), then 0."""
        return item if advances_model(indices, item) else 0

    def _start_fresh(self, state: UserState, inp: ModelInput, item: int) -> None:
        """A user whose only known item is this event's: the empty state advanced by one step is exactly what
        the full-sequence graph would rebuild (at a fraction of its cost), so start from zeros."""
        if (self.bundle.recurrent and item and not self._steppable(state) and inp.sequence.size == 1
                and int(inp.sequence[0]) == item):
            state.model, state.tag = np.zeros(self.bundle.state_size, dtype=np.float32), self.tag

    def _steppable(self, state: UserState) -> bool:
        """Whether the stored model state can be advanced (else it is rebuilt from the window)."""
        return (self.bundle.recurrent and state.model is not None and state.tag == self.tag
                and state.model.size == self.bundle.state_size)

    def _list(self, user_id: str, state: UserState, items: list[str], scores: list[float], strategy: str,
              now_ms: int, reasons: list | None = None, accepted: tuple[str, int, float] | None = None) -> Output:
        """The list record for ``state.pending`` and the state to store (pending cleared)."""
        pending = state.pending
        assert pending is not None
        if self._pseudonym is not None:
            user_id = self._pseudonym(user_id)
        record = recommendation_record(
            Event(user_id, pending.item_id, "", pending.ts, pending.event_id), list(zip(items, scores, strict=True)),
            reasons=reasons, model_version=self.version, emit_ms=now_ms, source_ts_ms=pending.source_ts,
            strategy=strategy, history_len=len(state), provider=self.provider,
        )
        value = encode_record(record)
        state.pending = None
        self.counts["lists"] += 1
        if strategy != "model":
            self.counts["cold_start"] += 1
        return Output(encode_state(state), LIST, user_id, value, accepted)

    def _account(self, parse: int, state: int, model: int, output: int) -> None:
        timing = self.timing
        timing[0] += 1
        timing[1] += parse
        timing[2] += state
        timing[3] += model
        timing[4] += output
        self.model_us.add(model / 1e3)

    def _dead_letter(self, payload: bytes | None, err: EventValidationError, source: SourcePosition, now_ms: int,
                     key: str | None) -> bytes:
        """The dead-letter record's bytes; redacted (:func:`~operators.events.redact_dead_letter`) when the job
        promises that user ids stay off the dead-letter and quarantine topics."""
        record = dead_letter_record(payload, err, source, now_ms=now_ms)
        if self._redact:
            record = redact_dead_letter(record, payload, key, self._pseudonym)
        return encode_record(record)

    def _dead(self, payload: bytes | None, err: EventValidationError, source: SourcePosition, now_ms: int,
              key: str | None = None) -> Output:
        self.counts["dead_letter"] += 1
        return Output(None, DEAD_LETTER, source.event_id(), self._dead_letter(payload, err, source, now_ms, key))

    def failed(self, payload: bytes | None, partition: int, offset: int, source_ts: int | None, exc: Exception,
               now_ms: int, key: str | None = None) -> Output:
        """The dead letter for a record whose processing raised outside :meth:`process` (in the adapter:
        state access, timers); counted as a processing error and logged with the exception."""
        return self._failed(payload, exc, SourcePosition(self.input_topic, partition, offset, source_ts), now_ms,
                            key)

    def _failed(self, payload: bytes | None, exc: Exception, source: SourcePosition, now_ms: int,
                key: str | None = None) -> Output:
        self.counts["errors"] += 1
        log.exception("processing failed for %s; dead-lettered", source.event_id())
        err = EventValidationError(f"processing failed: {exc!r}", "processing_error")
        return self._dead(payload, err, source, now_ms, key)

    # ------------------------------------------------------------------ cross-key micro-batches
    def run_deferred(self, batch: list[Deferred], now_ms: int) -> list[Output]:
        """Score deferred events of different users in one step-graph call; one list each, in order.

        Each output's ``state`` is that user's state with the model advanced and the pending event cleared:
        store it when the user's key is current again. Never raises: if the batched call fails, each event is
        retried alone, and one that still fails becomes a dead letter (its state cleared of the pending event).
        """
        if not batch:
            return []
        stale = [not self._steppable(d.user) for d in batch]
        if any(stale):  # deferred under another model (a swap between defer and run): rebuilt, one by one
            fresh = self.run_deferred([d for d, old in zip(batch, stale, strict=True) if not old], now_ms)
            rebuilt = iter(self._alone(self._revocab(d), now_ms) for d, old in zip(batch, stale, strict=True) if old)
            fresh_it = iter(fresh)
            return [next(rebuilt) if old else next(fresh_it) for old in stale]
        t0 = time.perf_counter_ns()
        try:
            width = max(d.exclude.size for d in batch)
            exclude = np.zeros((len(batch), width), dtype=np.int64)
            for row, d in enumerate(batch):
                exclude[row, : d.exclude.size] = d.exclude
            states = np.stack([d.user.model for d in batch])
            items = np.array([d.item for d in batch], dtype=np.int64)
            recent = np.stack([d.recent for d in batch])
            scores, idx, new = self.model.run_step(states, items, recent, exclude)
        except Exception:
            log.exception("micro-batch of %d failed; serving its events one by one", len(batch))
            return [self._alone(d, now_ms) for d in batch]
        self.counts["steps"] += len(batch)
        self.counts["batches"] += 1
        t1 = time.perf_counter_ns()
        reranked_before = self._rerank_ns
        outs = []
        for row, d in enumerate(batch):
            d.user.model, d.user.tag = new[row], self.tag
            indices = d.indices if d.indices is not None else self.index.lookup(d.user.keys)
            ids, values, reasons, strategy = self._finish(scores[row], idx[row], d.user, d.recent[d.recent != 0],
                                                          d.exclude, indices, d.reshown)
            outs.append(self._list(d.key, d.user, ids, values, strategy, now_ms, reasons, d.accepted))
            if d.covisit is not None:
                self.stream_neighbors.observe(*d.covisit)  # type: ignore[union-attr]
        rerank = self._rerank_ns - reranked_before  # counted with the model, as in single-event mode
        self.timing[3] += t1 - t0 + rerank
        self.timing[4] += time.perf_counter_ns() - t1 - rerank
        return outs

    def _revocab(self, d: Deferred) -> Deferred:
        """A deferred event as this core's vocabulary sees it (it was deferred under another model): the step
        item recomputed from the state, nothing else carried over (:meth:`rank` recomputes the rest)."""
        pending = d.user.pending
        assert pending is not None
        item = self._step_item(self.index.lookup(d.user.keys), self.index.index(item_key(pending.item_id)))
        return Deferred(d.key, d.state, d.user, np.zeros(0, np.int64), np.zeros(0, np.int64), item,
                        accepted=d.accepted)

    def _alone(self, d: Deferred, now_ms: int) -> Output:
        try:
            items, scores, reasons, strategy = self.rank(d.user, d.item)
            if d.covisit is not None:
                self.stream_neighbors.observe(*d.covisit)  # type: ignore[union-attr]
            return self._list(d.key, d.user, items, scores, strategy, now_ms, reasons, d.accepted)
        except Exception as exc:
            pending = d.user.pending
            d.user.pending = None
            out = self._failed(None, exc, SourcePosition(self.input_topic, -1, -1, pending.source_ts if pending
                                                         else None), now_ms)
            return Output(encode_state(d.user), DEAD_LETTER, out.key, out.value)

    def resolve(self, key: str, stored: bytes | None, now_ms: int) -> Output | None:
        """The list of a user's pending event computed from the stored state alone (after a failover lost the
        batch it was waiting in), or None when nothing is pending (or the state is unreadable). Its event was
        counted for trending before the failover (or is lost to the counts: they are approximate by design)."""
        state = self._decode(stored)
        if state.pending is None:
            return None
        item = self._step_item(self.index.lookup(state.keys), self.index.index(item_key(state.pending.item_id)))
        return self._alone(Deferred(key, b"", state, np.zeros(0, np.int64), np.zeros(0, np.int64), item), now_ms)

    # ------------------------------------------------------------------ ranking
    def rank(self, state: UserState, item: int, inp: ModelInput | None = None, indices: np.ndarray | None = None
             ) -> tuple[list[str], list[float], list | None, str]:
        """The user's top-K (item ids, scores, reasons) and the strategy; advances or rebuilds ``state.model``
        and records the list in ``state.shown`` (repeat suppression).

        ``item`` is the index of the event's item (0 if the model does not know it, or if it is a repeat of an
        item already in the window). A recurrent model advances its state by that item in arrival order; it
        rebuilds the state from the window (in event-time order) only when the state is missing or was written
        by another model.
        """
        if indices is None:
            indices = self.index.lookup(state.keys)
        if inp is None:
            inp = self._input(indices, state)
        if inp.cold and not item:
            return self._cold(inp)
        exclude = self._exclude(inp, item)[None, :]
        if self.bundle.recurrent:
            if self._steppable(state):
                recent = left_pad_row(inp.sequence, self.recent_len)[None, :]
                scores, items, new = self.model.run_step(state.model[None, :], np.array([item]), recent, exclude)
                self.counts["steps"] += 1
            else:
                scores, items, new = self.model.run_full(left_pad_row(inp.sequence, self.seq_len)[None, :], exclude)
                self.counts["rebuilds"] += 1
            state.model, state.tag = new[0], self.tag
        else:
            scores, items, _ = self.model.run_full(left_pad_row(inp.sequence, self.seq_len)[None, :], exclude)
        return self._finish(scores[0], items[0], state, inp.sequence, exclude[0], indices, inp.reshown)

    def _cold(self, inp: ModelInput) -> tuple[list[str], list[float], list | None, str]:
        """A user with no item the model knows: the trending list (``strategy: trending``) while there is one,
        else the bundle's popular list; item rules apply to both."""
        mask = self.rules.mask
        trending = self.trending
        if trending is not None and self.trending_cfg.cold_start and trending.items.size:
            picked = trending.cold_list(self.top_k, mask, inp.exclude)
            if picked.size == self.top_k:
                reasons = ([{"trending": int(r)} for r in trending.rank[picked].tolist()]
                           if self.rerank_cfg.explain else None)
                return (self.vocab[picked].tolist(), self._popular_scores[: len(picked)].tolist(), reasons,
                        "trending")
        popular = self._popular if mask is None else self._popular[mask[self._popular]]
        picked = popular[: self.top_k]  # all popular items are known, so none is in a cold window
        reasons = self._popular_reasons[: len(picked)] if self.rerank_cfg.explain else None
        return self.vocab[picked].tolist(), self._popular_scores[: len(picked)].tolist(), reasons, "popular"

    def _finish(self, scores: np.ndarray, items: np.ndarray, state: UserState, sequence: np.ndarray,
                exclude: np.ndarray, indices: np.ndarray, reshown: np.ndarray | None
                ) -> tuple[list[str], list[float], list | None, str]:
        """The model's candidates -> the list and its strategy. A user with at most ``neighbor_cold_start`` known
        items gets item-to-item neighbours instead (the model's state has advanced all the same, so it serves
        from the next events on)."""
        if self._neighbors is not None and sequence.size <= self.rerank_cfg.neighbor_cold_start:
            n_scores, n_items = self._neighbor_candidates(sequence, exclude, state.newest)
            if n_items.size >= self.top_k:  # else too few neighbours: the model's list after all
                ids, values, reasons = self._top(n_scores, n_items, state, sequence, indices, reshown)
                return ids, values, reasons, "neighbors"
        ids, values, reasons = self._top(scores, items, state, sequence, indices, reshown)
        return ids, values, reasons, "model"

    def _neighbor_candidates(self, sequence: np.ndarray, exclude: np.ndarray, ts: int
                             ) -> tuple[np.ndarray, np.ndarray]:
        """Item-to-item neighbours of the user's few known items (the bundle's served co-occurrence lists,
        refreshed with the in-stream co-visits as of event time ``ts``: :mod:`operators.covisits`), summed,
        excluded items dropped, as z-scores best first (the model's score scale, for the re-ranker)."""
        neighbors, weights = self._neighbors  # type: ignore[misc]
        stream, share = self.stream_neighbors, self.rerank_cfg.neighbor_stream_weight
        n_items = self.bundle.n_items
        total: dict[int, float] = {}
        for a in sequence.tolist():
            row = [(b, w) for b, w in zip(neighbors[a].tolist(), weights[a].tolist(), strict=True) if b and w > 0]
            for b, w in (row if stream is None else stream.blend(a, row, ts, share).items()):
                if 0 < b <= n_items:  # (a table filled before a swap to a smaller catalog)
                    total[b] = total.get(b, 0.0) + w
        uniq = np.fromiter(total.keys(), dtype=np.int64, count=len(total))
        summed = np.fromiter(total.values(), dtype=np.float64, count=len(total))
        by_index = np.argsort(uniq, kind="stable")  # ties in catalog order
        uniq, summed = uniq[by_index], summed[by_index]
        ok = ~np.isin(uniq, exclude)
        uniq, summed = uniq[ok], summed[ok]
        order = np.argsort(-summed, kind="stable")[: self.bundle.n_candidates]
        top = summed[order]
        spread = top.std()
        return ((top - top.mean()) / spread if spread > 0 else top - top.mean()).astype(np.float32), uniq[order]

    def _top(self, scores: np.ndarray, items: np.ndarray, state: UserState, recent: np.ndarray,
             indices: np.ndarray, reshown: np.ndarray | None) -> tuple[list[str], list[float], list | None]:
        """One row of graph output (top-C candidates, best first) -> the re-ranked top-K item ids, scores and
        reasons (:mod:`operators.rerank`; masked candidates dropped); the list is recorded in ``state.shown``."""
        t0 = time.perf_counter_ns()
        mask = self.rules.mask
        if mask is not None or (scores.size and scores[-1] <= _NEG_HALF):  # best first: the last is the lowest
            valid = scores > _NEG_HALF
            if mask is not None:  # blocked, unavailable, not allowed (operators.item_rules)
                valid &= mask.take(items)
            scores, items = scores[valid], items[valid]
        shown = state.shown if state.shown is not None else _NO_SHOWN
        # one compiled call (operators.kernels): the user's interests (from the window and the long-term
        # affinity), trending and new items, the viewed-only penalty, repeat suppression, top-K, reasons
        profile = (None if self.interests is None else
                   (indices, state.ts, state.types, state.newest, state.affinity))
        trending = self.trending
        out = self.reranker.rerank(items, scores, self._hash32.take(items), shown, recent, profile=profile,
                                   trend=None if trending is None else trending.bonus,
                                   reshown=reshown if reshown is not None and reshown.size else None)
        picked = out.picked
        if out.shown is not None:
            state.shown = out.shown
        reasons = None
        if out.because is not None:
            reasons = [{"because": b} for b in self.vocab.take(out.because).tolist()]
        if self.rerank_cfg.explain and trending is not None and trending.items.size:
            ranks = trending.rank.take(picked).tolist()
            if any(ranks):
                reasons = reasons or [{} for _ in ranks]
                for reason, rank in zip(reasons, ranks, strict=True):
                    if rank:
                        reason["trending"] = rank
        self._rerank_ns += time.perf_counter_ns() - t0
        return self.vocab.take(picked).tolist(), out.scores, reasons

    # ------------------------------------------------------------------ accounting
    def take_timing(self, events: int | None = None) -> dict[str, float]:
        """Microseconds of each part since the last call per event, and the count; resets. ``events``: divide by
        this count (the adapter's events of the same interval, so that every part, batched work included,
        is averaged over the same events and the parts add up to the adapter's total); default: the events
        the core served."""
        timing, self.timing = self.timing, [0] * (len(TIMING_FIELDS) + 1)
        rerank, self._rerank_ns = self._rerank_ns, 0
        n = max(timing[0] if events is None else events, 1)
        out = {"events": timing[0], **{f: timing[i + 1] / n / 1e3 for i, f in enumerate(TIMING_FIELDS)}}
        out["model"] -= rerank / n / 1e3  # the graph call alone
        out["rerank"] = rerank / n / 1e3
        return out
