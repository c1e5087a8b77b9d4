"""The recommendation core shared by the Flink function and the offline path.

window -> model input -> ONNX top-C over the full catalog -> seen items out -> top-K.
Users with no history the model knows get the popularity fallback (cold start), seen items out too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from operators.inference import OnnxScorer
from operators.ranking import top_k_excluding
from operators.window import Interaction, item_sequence

__all__ = ["Recommendation", "Recommender"]


@dataclass(frozen=True, slots=True)
class Recommendation:
    """A ranked list and how it was made."""

    items: list[tuple[str, float]]
    strategy: str
    """``model`` or ``popular`` (cold start)."""


class Recommender:
    """Stateless: all per-user data comes in as the window."""

    def __init__(self, scorer: OnnxScorer, *, top_k: int) -> None:
        self.scorer = scorer
        self.top_k = top_k
        popular = scorer.bundle.popular_items
        n = len(popular)
        # Fallback scores decrease with rank so that consumers can still sort by score.
        self._popular_ids = list(popular)
        self._popular_scores = np.linspace(1.0, 1.0 / max(n, 1), num=n, dtype=np.float32)

    @property
    def model_version(self) -> str:
        """Version of the bundle being served."""
        return self.scorer.bundle.version

    def recommend_batch(self, windows: Sequence[Sequence[Interaction]]) -> list[Recommendation]:
        """One list per window, computed in one model call."""
        histories = [item_sequence(w) for w in windows]
        encoded = self.scorer.encode(histories)
        warm = np.flatnonzero(encoded[:, -1] != 0)
        results: list[Recommendation | None] = [None] * len(windows)
        if warm.size:
            scores, items = self.scorer.score_batch(encoded[warm])
            for row, idx in enumerate(warm.tolist()):
                picked = top_k_excluding(items[row], scores[row], set(histories[idx]), self.top_k)
                results[idx] = Recommendation(picked, "model")
        for idx, result in enumerate(results):
            if result is None:
                picked = top_k_excluding(
                    self._popular_ids, self._popular_scores, set(histories[idx]), self.top_k
                )
                results[idx] = Recommendation(picked, "popular")
        return [r for r in results if r is not None]

    def recommend(self, window: Sequence[Interaction]) -> Recommendation:
        """One list for one user's window."""
        return self.recommend_batch([window])[0]
