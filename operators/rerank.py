"""Re-ranking the model's candidates into the list a user sees: repeat suppression, diversity, explanations.

Pure logic, run by :class:`operators.serving.ServingCore` on the model graph's top-C candidates of every event;
the arithmetic of the rules below and of the interest bonus (:mod:`operators.interests`) is one compiled call
(:mod:`operators.kernels`, ~25-50 us per event with the defaults), MMR and the category cap order its adjusted
scores in numpy:

1. **Repeat suppression.** The user's last ``repeat_window`` lists live in state (:class:`ShownHistory`,
   32-bit item hashes and the list's age). An item shown there and not interacted with since (an interacted
   item is in the window, hence excluded) loses ``repeat_penalty * sum(repeat_decay ** age)`` of its score
   (age 0 = the newest list), so a user does not see the same list again and again.
2. **Diversity** (``diversity_lambda`` > 0): maximal marginal relevance over the bundle's item embeddings:
   greedily pick ``argmax (1 - lambda) * relevance - lambda * max cosine similarity to the items already
   picked``, relevance being the (penalised) score scaled to [0, 1] over the candidates.
3. **Explanations**: each item carries ``{"because": item_id}``, the user's recent item most similar to it
   (embeddings), or the path that produced the list (``{"cold_start": "popular"}``).

Every knob is a field of :class:`RerankConfig` (typed, validated, documented; ``streamrec config
--print-defaults`` lists them).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from operators.settings import parse_knobs

if TYPE_CHECKING:
    from operators.interests import Interests

log = logging.getLogger(__name__)
_NO_ROWS = np.zeros((1, 0), dtype=np.float32)

__all__ = ["RerankConfig", "ShownHistory", "Reranked", "Reranker", "item_hash32", "parse_rerank"]


class RerankConfig(BaseModel):
    """Re-ranking knobs (section ``[rerank]`` of the config file)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    repeat_window: int = Field(3, ge=0, le=32, description="lists of each user remembered for repeat "
                                                              "suppression (0 = off); bounded state")
    repeat_penalty: float = Field(0.3, ge=0.0, description="score taken from an item shown in the newest list "
                                                           "(scores are z-scores, the top item is ~5-10)")
    repeat_decay: float = Field(0.5, ge=0.0, le=1.0, description="the penalty of an item shown in a list of age "
                                                                 "a is repeat_penalty * repeat_decay ** a")
    diversity_lambda: float = Field(0.0, ge=0.0, le=1.0, description="maximal-marginal-relevance trade-off: "
                                                                     "0 = pure relevance, 1 = pure diversity")
    diversity_pool: int = Field(2, ge=1, le=20, description="MMR picks from the best pool * top_k candidates")
    neighbor_cold_start: int = Field(2, ge=0, le=20, description="users with at most this many known items get "
                                                                "item-to-item neighbours instead of the model "
                                                                "(0 = the model from the first item)")
    neighbor_refresh: bool = Field(True, description="refresh the bundle's item-to-item neighbours in the stream: "
                                                     "decayed co-visit counts of the subtask's users, added to "
                                                     "the offline lists (bounded, in memory)")
    neighbor_stream_weight: float = Field(0.5, ge=0, description="an item's strongest in-stream co-visit counts "
                                                                 "this times its strongest offline neighbour")
    neighbor_half_life_minutes: float = Field(360.0, gt=0, description="half-life (event time) of the in-stream "
                                                                       "co-visit counts")
    neighbor_stream_items: int = Field(50_000, ge=1, description="items whose in-stream neighbours are kept per "
                                                                 "subtask (the least recently seen leave first)")
    category_cap: int = Field(0, ge=0, le=100, description="at most this many items of one category in the top K "
                                                           "(0 = no cap; needs --catalog; an item counts for each "
                                                           "of its categories)")
    never_repeat_purchased: bool = Field(True, description="a purchased item is never recommended to that user "
                                                           "again, also after it left the window")
    purchased_memory: int = Field(256, ge=0, le=65_535, description="purchases remembered per user for that "
                                                                    "(bounded state; the oldest go first)")
    viewed_penalty: float | None = Field(None, ge=0, description="unset: every window item is excluded; a number: "
                                                                 "items the window holds only views of stay "
                                                                 "candidates, with this taken off their score")
    explain: bool = Field(True, description="attach a reason to each recommended item")
    explain_recent: int = Field(20, ge=1, le=200, description="recent items considered for 'because'")


def item_hash32(keys: np.ndarray) -> np.ndarray:
    """32-bit hashes of 64-bit item keys (the low half: keys are already uniform hashes) for the shown history."""
    return (np.asarray(keys, dtype=np.uint64) & np.uint64(0xFFFFFFFF)).astype(np.uint32)


@dataclass(slots=True)
class ShownHistory:
    """The items of a user's last lists: ``hashes`` (uint32) with ``ages`` (uint8, 0 = newest list)."""

    hashes: np.ndarray
    ages: np.ndarray

    @classmethod
    def empty(cls) -> ShownHistory:
        return cls(np.zeros(0, np.uint32), np.zeros(0, np.uint8))

    def __len__(self) -> int:
        return len(self.hashes)

    def push(self, shown: np.ndarray, window: int) -> ShownHistory:
        """A new list shown (``shown``: its item hashes): older lists age by one, lists older than ``window``
        are forgotten. The serving path does this inside the compiled step (:mod:`operators.kernels`,
        tested to agree); this builds histories for tests and tools."""
        if window <= 0:
            return ShownHistory.empty()
        keep = self.ages < window - 1  # window <= 32: no uint8 overflow
        return ShownHistory(np.concatenate((self.hashes[keep], shown.astype(np.uint32, copy=False))),
                            np.concatenate((self.ages[keep] + np.uint8(1), np.zeros(len(shown), np.uint8))))


def _by_age(penalty: float, decay: float) -> np.ndarray:
    """``float32 [256]``: the repeat penalty of an item shown in a list of each age."""
    return (penalty * np.power(decay, np.arange(256, dtype=np.float64))).astype(np.float32)


_EMPTY = ShownHistory.empty()


@dataclass(frozen=True, slots=True)
class Reranked:
    """The list: positions into the candidate arrays, the items there, final scores, a reason per item, and the
    user's shown history after it."""

    order: np.ndarray
    picked: np.ndarray
    """``items[order]``: the catalog indices of the list, best first."""
    scores: list[float]
    """The final (adjusted) scores, rounded to 6 decimals."""
    because: np.ndarray | None
    """Per item, the index (into the model's catalog) of the recent item most similar to it."""
    shown: ShownHistory | None
    """The shown history with this list pushed (None when ``repeat_window`` is 0)."""


class Reranker:
    """Applies :class:`RerankConfig` to one user's candidates; ``embeddings`` (``[V + 1, D]``, L2-normalised,
    row 0 zero) come from the model bundle (None: no diversity, no 'because'). The arithmetic of every rule is
    one compiled call (:mod:`operators.kernels`); MMR and the category cap order the adjusted scores here."""

    def __init__(self, cfg: RerankConfig, embeddings: np.ndarray | None, top_k: int,
                 categories: np.ndarray | None = None, interests: Interests | None = None) -> None:
        """``categories``: the catalog's ``rows`` (:class:`operators.catalog.CategoryMatrix`, ``[V + 1, C]``),
        for interest bonuses and the per-category cap; ``interests``: the user-interest rules whose preference
        the kernel computes from the window (``profile`` of :meth:`rerank`)."""
        from operators.imports import import_in_regular_thread

        kernels = import_in_regular_thread("operators.kernels")
        self.cfg = cfg
        self.top_k = top_k
        self.rows = _NO_ROWS if categories is None else np.ascontiguousarray(categories, dtype=np.float32)
        self.member = None if categories is None or not cfg.category_cap else categories > 0  # bool [V + 1, C]
        self._cats = None if self.member is None else [tuple(np.flatnonzero(row).tolist()) for row in self.member]
        self._by_age = _by_age(cfg.repeat_penalty, cfg.repeat_decay)
        self.emb = None if embeddings is None else np.ascontiguousarray(embeddings, dtype=np.float32)
        if cfg.diversity_lambda > 0 and self.emb is None:
            if "diversity_lambda" in cfg.model_fields_set:  # asked for explicitly: refuse to start
                from operators.errors import ConfigError

                msg = ("rerank.diversity_lambda > 0 needs item embeddings in the model bundle "
                       "(item_embeddings.npy); re-export the bundle with this streamrec version or set "
                       "diversity_lambda=0")
                raise ConfigError(msg)
            log.warning("the model bundle has no item embeddings: diversity (the default diversity_lambda=%s) and "
                        "explanations are off; re-export the bundle to get them", cfg.diversity_lambda)
            self.cfg = cfg = cfg.model_copy(update={"diversity_lambda": 0.0})
        icfg = None if interests is None else interests.cfg
        self.kernel = kernels.StepKernel(
            rows=None if categories is None else self.rows, emb=self.emb,
            weights=None if interests is None else interests.weights, by_age=self._by_age,
            decay=1.0 if icfg is None else icfg.short_term_decay,
            short_ms=0 if interests is None else interests.short_ms,
            horizon=1024 if interests is None else interests.horizon,
            short_boost=0.0 if icfg is None else icfg.short_term_boost,
            long_boost=0.0 if icfg is None else icfg.long_term_boost,
            viewed_penalty=float(cfg.viewed_penalty or 0.0), window=cfg.repeat_window,
            explain_recent=cfg.explain_recent if cfg.explain else 0)

    def rerank(self, items: np.ndarray, scores: np.ndarray, item_hashes: np.ndarray, shown: ShownHistory,
               recent: np.ndarray, *, preference: np.ndarray | None = None, profile: tuple | None = None,
               trend: np.ndarray | None = None, reshown: np.ndarray | None = None) -> Reranked:
        """``items``/``scores``: the graph's valid candidates, best first; ``item_hashes``: their
        :func:`item_hash32`; ``recent``: the user's newest model-known items (catalog indices, oldest first).
        Bonuses: the user's interests, either ``profile`` = ``(indices, ts, types, newest, affinity)`` of the
        window (:class:`operators.interests.Interests` rules, computed in the same call) or a ``preference``
        vector (per category: a candidate gains ``rows[item] . preference``); ``trend`` (by catalog index,
        :mod:`operators.trending`); ``reshown``: viewed-only items, which lose ``viewed_penalty``."""
        cfg, k, kernel = self.cfg, self.top_k, self.kernel
        remembered = shown if cfg.repeat_window else _EMPTY
        kernel.load(items, scores, item_hashes, remembered.hashes, remembered.ages, recent, profile=profile,
                    preference=preference, trend=trend,
                    reshown=reshown if cfg.viewed_penalty is not None else None)
        capped = self.member is not None
        if (cfg.diversity_lambda > 0 and self.emb is not None and len(items) > 1) or capped:
            adjusted = kernel.adjusted()
            if cfg.diversity_lambda > 0 and self.emb is not None and len(items) > 1:
                pool = np.argsort(-adjusted, kind="stable")[: max(k * cfg.diversity_pool, k)]
                order = pool[self._mmr(items[pool], adjusted[pool], len(pool) if capped else k)]
            else:
                order = np.argsort(-adjusted, kind="stable")
            kernel.run(k, self._cap(items, order, k) if capped else order[:k])
        else:
            kernel.run(k)
        order, picked, final, because, hashes, ages = kernel.result()
        return Reranked(order, picked, final, because, ShownHistory(hashes, ages) if cfg.repeat_window else None)

    def _cap(self, items: np.ndarray, order: np.ndarray, k: int) -> np.ndarray:
        """The first ``k`` of ``order`` with at most ``category_cap`` items per category (an item counts for
        each of its categories); when the cap leaves fewer than ``k``, the best skipped fill the list. A greedy
        pass over plain lists: it stops after the ``k``-th pick, a dozen steps or so."""
        cap, cats = self.cfg.category_cap, self._cats
        counts: dict[int, int] = {}
        picked: list[int] = []
        skipped: list[int] = []
        for pos, item in zip(order.tolist(), items.take(order).tolist(), strict=True):
            mine = cats[item]  # type: ignore[index]
            if any(counts.get(c, 0) >= cap for c in mine):
                skipped.append(pos)
                continue
            for c in mine:
                counts[c] = counts.get(c, 0) + 1
            picked.append(pos)
            if len(picked) == k:
                break
        if len(picked) < k:
            picked += skipped[: k - len(picked)]
        return np.array(picked, dtype=np.int64)

    def _mmr(self, items: np.ndarray, scores: np.ndarray, k: int) -> np.ndarray:
        """Greedy maximal marginal relevance over ``items`` (already the best pool, best first)."""
        lam = self.cfg.diversity_lambda
        lo = scores.min()
        span = scores.max() - lo
        gain = (1 - lam) * ((scores - lo) / span if span > 0 else np.ones_like(scores))
        vecs = self.emb.take(items, axis=0)  # type: ignore[union-attr]
        sim = (vecs @ vecs.T) * lam  # [M, M], scaled once
        first = int(np.argmax(gain))
        chosen = [first]
        penalty = sim[first].copy()
        gain[first] = -np.inf
        for _ in range(min(k, len(items)) - 1):
            pick = int(np.argmax(gain - penalty))
            chosen.append(pick)
            gain[pick] = -np.inf
            np.maximum(penalty, sim[pick], out=penalty)
        return np.array(chosen, dtype=np.int64)


def parse_rerank(pairs: list[str] | dict[str, object] | None, base: RerankConfig | None = None) -> RerankConfig:
    """:func:`operators.settings.parse_knobs` for :class:`RerankConfig` (``--rerank KEY=VALUE``)."""
    return parse_knobs(RerankConfig, "rerank", pairs, base)
