"""A user's short- and long-term interests by item category, and the score bonus they give the candidates.

Pure logic, run by :class:`operators.serving.ServingCore` on every event, clock-free (everything is
event time, so the replay and the job agree):

- **Event weights.** An interaction counts ``weight_<type>`` (view < click < add_to_cart < purchase, checked at
  start); a rating whose value is below ``negative_rating_below`` counts ``-weight_rating`` (negative feedback:
  its categories lose affinity). The window stores that as the type code with :data:`NEGATIVE` set.
- **Short term**: the weighted categories of the user's window events within the last ``short_term_minutes``
  of event time, each also weighted ``short_term_decay ** (events after it)``, so the newest few dominate
  (no extra state: the window has the events and their times).
- **Long term**: an exponentially decayed affinity per category (half-life ``long_term_half_life_days``),
  kept in the user's state (one float per category, :mod:`operators.state`), updated by every stored event, so
  it remembers what has left the window.
- **Bonus** (:meth:`Interests.preference_vector`): each profile is scaled to unit mass
  (``sum |affinity|``), the candidate's bonus is
  ``short_term_boost * short . rows[item] + long_term_boost * long . rows[item]`` (``rows``: the item's
  categories, weights summing to 1, :class:`operators.catalog.CategoryMatrix`), in the model's score unit
  (z-scores): a user who only watched comedies for the last hour gives every pure comedy ``short_term_boost``.
  After a switch of category the short-term profile follows within a few events, and the lists with it.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from operators.catalog import CategoryMatrix
from operators.events import EVENT_TYPES

__all__ = ["InterestConfig", "Interests", "NEGATIVE", "type_code"]

NEGATIVE = 0x80
"""Flag on a window entry's type code: negative feedback (a rating below ``negative_rating_below``)."""
_CODES = {name: code for code, name in enumerate(EVENT_TYPES)}
_NO_AFFINITY = np.zeros(0, dtype=np.float32)


class InterestConfig(BaseModel):
    """User-interest knobs (section ``[interests]``); off without a catalog (``--catalog``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = Field(True, description="boost candidates of the user's categories (needs --catalog)")
    short_term_minutes: float = Field(60.0, gt=0, description="the short-term profile: window events of the "
                                                              "last this many minutes of event time")
    short_term_decay: float = Field(0.7, gt=0, le=1, description="short-term weight of an event = its type's "
                                                                 "weight * this ** (events after it)")
    long_term_half_life_days: float = Field(30.0, gt=0, description="half-life of the long-term, decayed "
                                                                    "per-category affinity kept in state")
    short_term_boost: float = Field(0.5, ge=0, description="score bonus (z-score units) of a candidate wholly in "
                                                           "the user's short-term categories")
    long_term_boost: float = Field(0.25, ge=0, description="score bonus of a candidate wholly in the user's "
                                                           "long-term categories")
    weight_view: float = Field(0.5, ge=0, description="weight of a view")
    weight_click: float = Field(1.0, ge=0, description="weight of a click (at least a view's)")
    weight_add_to_cart: float = Field(2.0, ge=0, description="weight of an add_to_cart (at least a click's)")
    weight_purchase: float = Field(4.0, ge=0, description="weight of a purchase (at least an add_to_cart's)")
    weight_rating: float = Field(2.0, ge=0, description="weight of a rating at or above negative_rating_below "
                                                        "(below it: minus this)")
    negative_rating_below: float | None = Field(2.5, description="a rating whose value is below this is negative "
                                                                 "feedback (unset: every rating is positive)")

    @model_validator(mode="after")
    def _funnel_order(self) -> InterestConfig:
        funnel = [("view", self.weight_view), ("click", self.weight_click),
                  ("add_to_cart", self.weight_add_to_cart), ("purchase", self.weight_purchase)]
        for (a, wa), (b, wb) in zip(funnel, funnel[1:], strict=False):
            if wa > wb:
                msg = (f"weight_{a}={wa} is above weight_{b}={wb}; the weights follow the funnel "
                       "(view <= click <= add_to_cart <= purchase): lower weight_{a} or raise weight_{b}")
                raise ValueError(msg)
        return self


def type_code(event_type: str, value: float | None, cfg: InterestConfig) -> int:
    """The window's type code of an event: its index in ``EVENT_TYPES``, with :data:`NEGATIVE` for a rating
    below ``cfg.negative_rating_below``."""
    code = _CODES[event_type]
    if (event_type == "rating" and value is not None and cfg.negative_rating_below is not None
            and value < cfg.negative_rating_below):
        code |= NEGATIVE
    return code


class Interests:
    """Interest profiles over a :class:`~operators.catalog.CategoryMatrix` (by model catalog index)."""

    def __init__(self, cfg: InterestConfig, categories: CategoryMatrix) -> None:
        self.cfg = cfg
        self.cats = categories
        self.rows = categories.rows
        self.weights = self.event_weights(cfg)
        self.short_ms = int(cfg.short_term_minutes * 60_000)
        # the short-term profile reads at most the newest `horizon` window events: older ones weigh less than
        # 1e-7 of the newest (float32 keeps 7 digits), so they cannot move it (default decay 0.7: 47 events)
        self.horizon = (1024 if cfg.short_term_decay >= 1 else
                        min(1024, int(np.ceil(np.log(1e-7) / np.log(cfg.short_term_decay))) + 1))
        self._half_life_ms = cfg.long_term_half_life_days * 86_400_000
        self._kernel = None

    @staticmethod
    def event_weights(cfg: InterestConfig) -> np.ndarray:
        """``float32 [256]``: the weight of each window type code (negative feedback: minus the rating's)."""
        weights = np.zeros(256, dtype=np.float32)
        for name, code in _CODES.items():
            weights[code] = getattr(cfg, f"weight_{name}", 0.0)
        weights[_CODES["rating"] | NEGATIVE] = -cfg.weight_rating
        return weights

    @property
    def size(self) -> int:
        """Floats of long-term affinity per user."""
        return self.cats.n

    def update_long(self, affinity: np.ndarray | None, newest_before: int, newest_after: int, item: int,
                    code: int, ts: int) -> np.ndarray:
        """The long-term affinity after one stored event of catalog index ``item`` (0: unknown, only decay) at
        event time ``ts``. ``affinity`` is as of the window's newest event time ``newest_before`` (None or the
        wrong size: start from zeros); the result is as of ``newest_after``."""
        aff = (np.zeros(self.size, dtype=np.float32) if affinity is None or affinity.size != self.size
               else affinity.astype(np.float32, copy=True))
        if newest_after > newest_before and newest_before > 0:
            aff *= np.float32(0.5 ** ((newest_after - newest_before) / self._half_life_ms))
        if item:
            weight = self.weights[code] * 0.5 ** (max(newest_after - ts, 0) / self._half_life_ms)
            aff += np.float32(weight) * self.rows[item]
        return aff

    def preference_vector(self, indices: np.ndarray, ts: np.ndarray, types: np.ndarray, newest: int,
                          affinity: np.ndarray | None) -> np.ndarray | None:
        """The per-category bonus vector (``float32 [C]``; a candidate gains ``rows[item] . vector``): the
        short-term profile of the window (catalog ``indices``, event times ``ts`` ascending, type codes
        ``types``, the newest event time; each event of the last ``short_term_minutes`` weighted
        ``weight[type] * short_term_decay ** (events after it)``) and the long-term ``affinity``, each scaled to
        its boost per unit of mass (``sum |profile|``); None when the user has neither yet. Computed by the
        compiled step (:mod:`operators.kernels`), the same code that serves; the serving path computes it
        inside the re-ranking call (:meth:`operators.rerank.Reranker.rerank` ``profile``)."""
        if self._kernel is None:
            from operators.imports import import_in_regular_thread

            kernels = import_in_regular_thread("operators.kernels")
            cfg = self.cfg
            self._kernel = kernels.StepKernel(rows=self.rows, weights=self.weights, decay=cfg.short_term_decay,
                                              short_ms=self.short_ms, horizon=self.horizon,
                                              short_boost=cfg.short_term_boost, long_boost=cfg.long_term_boost)
        return self._kernel.preference(indices, ts, types, newest, affinity)

    def top_category(self, preference: np.ndarray | None) -> str | None:
        """The category the user leans to most (for logs and tests)."""
        if preference is None or not (preference > 0).any():
            return None
        return self.cats.names[int(np.argmax(preference))]
