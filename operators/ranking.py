"""Candidate filtering: from the model's best-first candidates to the list a user sees."""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np

__all__ = ["top_k_excluding"]


def top_k_excluding(
    candidate_ids: Sequence[str],
    scores: np.ndarray,
    exclude: Collection[str],
    k: int,
) -> list[tuple[str, float]]:
    """Best ``k`` candidates, skipping excluded items and duplicates.

    Args:
        candidate_ids: Candidate item ids, best first (the model's top-C over the full catalog).
        scores: Their scores, same order.
        exclude: Items the user already interacted with.
        k: List length.

    Returns:
        Up to ``k`` ``(item_id, score)`` pairs, best first. Shorter only when the candidates run out.
    """
    picked: list[tuple[str, float]] = []
    seen: set[str] = set()
    for item, score in zip(candidate_ids, scores.tolist(), strict=True):
        if item in exclude or item in seen:
            continue
        seen.add(item)
        picked.append((item, float(score)))
        if len(picked) == k:
            break
    return picked
