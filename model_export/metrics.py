"""Top-K ranking metrics for one held-out target per user, over the full catalog.

With ``rank`` the 0-based position of the target among all candidates (items scored strictly higher
than the target, after the user's input history is removed from the ranking):

- Recall@K (= HR@K with one target) = 1[rank < K]
- NDCG@K = 1[rank < K] / log2(rank + 2)   (ideal DCG is 1 with one relevant item)
- MRR@K = 1[rank < K] / (rank + 1)

Each is averaged over users.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from operators.window import excluded_items

__all__ = ["target_ranks", "metrics_from_ranks", "spread", "DEFAULT_KS"]

DEFAULT_KS: tuple[int, ...] = (5, 10, 20)


def target_ranks(
    scores: np.ndarray, targets: np.ndarray, histories: Sequence[Iterable[int]] | None = None
) -> np.ndarray:
    """0-based rank of each target in its row of ``scores`` ``[B, V + 1]`` (column 0 = padding).

    Padding and the items in each row's history are excluded (scored -inf) before ranking; a target
    that is itself in the history is excluded too and so counts as a miss. Ties rank the target first
    among equals (optimistic), which only matters for degenerate scorers.
    """
    scores = np.array(scores, dtype=np.float64, copy=True)
    scores[:, 0] = -np.inf
    if histories is not None:
        for row, history in enumerate(histories):
            idx = excluded_items(history)  # the job's exclusion rule
            if idx.size:
                scores[row, idx] = -np.inf
    rows = np.arange(len(targets))
    target_scores = scores[rows, targets]
    ranks = (scores > target_scores[:, None]).sum(axis=1)
    ranks[np.isneginf(target_scores)] = scores.shape[1]  # excluded target: never retrieved
    return ranks


def metrics_from_ranks(ranks: np.ndarray, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """``{"recall@K", "ndcg@K", "mrr@K"}`` averaged over users."""
    ranks = np.asarray(ranks, dtype=np.float64)
    out: dict[str, float] = {}
    for k in ks:
        hit = ranks < k
        out[f"recall@{k}"] = float(hit.mean())
        out[f"ndcg@{k}"] = float(np.where(hit, 1.0 / np.log2(ranks + 2), 0.0).mean())
        out[f"mrr@{k}"] = float(np.where(hit, 1.0 / (ranks + 1), 0.0).mean())
    return out


def spread(values: Iterable[float]) -> dict[str, float]:
    """Mean, standard deviation, standard error of the mean, min, max and count of one figure over seeds (or any
    repeats): how a multi-seed figure is reported (``metrics.json``, ``perf/model_experiments.py``)."""
    arr = np.asarray(list(values), dtype=np.float64)
    std = float(arr.std(ddof=1)) if len(arr) > 1 else 0.0
    return {"mean": float(arr.mean()), "std": std, "sem": std / float(np.sqrt(len(arr))),
            "min": float(arr.min()), "max": float(arr.max()), "n": len(arr)}
