"""Baselines on the LOO protocol: most-popular and sequence-aware item-to-item co-occurrence.

Co-occurrence (the strong, cheap baseline of the evaluation protocol, docs/evaluation/protocol.md): two items are
similar when they occur within ``window`` positions of each other in a user's ordered history, a pair weighted by
how far apart the two are and by direction (``a`` before ``b`` counts fully towards recommending ``b`` after ``a``;
the reverse, ``b`` recommending an earlier ``a``, by ``backward``):

    C[a, b] = sum over (u, i, j) with s_u[i] = a, s_u[j] = b, 0 < |j - i| <= window of
              gap_decay ** (|j - i| - 1) * (1 if j > i else backward)
    S[a, b] = C[a, b] / (n_a ** alpha * n_b ** alpha)          (alpha = 0: raw counts)

``gap_decay = backward = 1`` is plain symmetric counting within the window.

and a user's score for item b is  sum_t S[h_t, b] * decay ** (steps back from the newest item).
Only each item's ``top_n`` strongest neighbours are kept, which is also how the model is served.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from model_export.data import left_pad

MIN_WEIGHT = 1e-3

__all__ = ["MIN_WEIGHT", "CooccurrenceConfig", "Cooccurrence", "fit_cooccurrence", "pair_counts"]


@dataclass(frozen=True)
class CooccurrenceConfig:
    """Hyper-parameters, chosen on validation."""

    window: int = 30
    decay: float = 0.7
    alpha: float = 0.0
    gap_decay: float = 1.0
    """A pair ``g`` positions apart counts ``gap_decay ** (g - 1)`` (1: every pair in the window alike)."""
    backward: float = 1.0
    """Weight of the reverse direction (a later item recommending an earlier one); 1: symmetric."""
    top_n: int = 300
    history: int = 50
    """Only the newest ``history`` items of a user contribute (at most; see :meth:`horizon`)."""

    def horizon(self, cap: int | None = None) -> int:
        """How many of the newest items contribute: those whose weight ``decay ** steps_back`` is at least
        :data:`MIN_WEIGHT` of the newest item's (20 at decay 0.7), at most ``history`` (and ``cap``). Older
        items would change scores by less than that share; the served graph gathers and scatters the
        neighbours of every contributing item for every event, so this bounds its cost."""
        steps = self.history if self.decay >= 1 else int(math.floor(math.log(MIN_WEIGHT) / math.log(self.decay))) + 1
        return max(1, min(self.history, steps, cap if cap is not None else self.history))


@dataclass(frozen=True)
class Cooccurrence:
    """Top-N neighbour lists: ``neighbors[i]`` (item indices) with weights ``weights[i]``; row 0 = padding."""

    cfg: CooccurrenceConfig
    neighbors: np.ndarray  # [V + 1, N] int64
    weights: np.ndarray  # [V + 1, N] float32

    @property
    def n_items(self) -> int:
        """Catalog size (padding excluded)."""
        return self.neighbors.shape[0] - 1

    def score(self, inputs: Sequence[np.ndarray], batch_size: int = 256) -> np.ndarray:
        """Scores ``[U, V + 1]`` for each user history (oldest first), computed by the same function the
        exported graph uses (:func:`model_export.model.cooccurrence_scores`)."""
        import torch

        from model_export.model import cooccurrence_scores, decay_weights

        neighbors, weights = torch.from_numpy(self.neighbors), torch.from_numpy(self.weights)
        decay = torch.from_numpy(decay_weights(self.cfg.decay, self.cfg.history))
        out = []
        with torch.no_grad():
            for start in range(0, len(inputs), batch_size):
                seq = torch.from_numpy(left_pad(inputs[start : start + batch_size], self.cfg.history))
                out.append(cooccurrence_scores(seq, neighbors, weights, decay).numpy())
        return np.concatenate(out) if out else np.zeros((0, self.n_items + 1), dtype=np.float32)


def pair_counts(train: Sequence[np.ndarray], n_items: int, cfg: CooccurrenceConfig) -> np.ndarray:
    """``C [V + 1, V + 1]`` of the module's formula (before normalisation and the top-N cut); it depends only on
    ``cfg.window``, ``cfg.gap_decay`` and ``cfg.backward``, so a grid shares it across decays and alphas."""
    n = n_items + 1
    matrix = np.zeros(n * n, dtype=np.float64)
    codes: list[np.ndarray] = []
    weights_of: list[np.ndarray] = []
    pending = 0

    def flush() -> None:  # counted in chunks: memory stays bounded on long logs and wide windows
        nonlocal pending
        if codes:
            matrix[:] += np.bincount(np.concatenate(codes), weights=np.concatenate(weights_of), minlength=n * n)
        codes.clear()
        weights_of.clear()
        pending = 0

    for seq in train:
        seq = np.asarray(seq, dtype=np.int64)
        for gap in range(1, min(cfg.window, len(seq) - 1) + 1):
            a, b = seq[:-gap], seq[gap:]  # a comes gap positions before b
            weight = cfg.gap_decay ** (gap - 1)
            codes += [a * n + b, b * n + a]
            weights_of += [np.full(len(a), weight), np.full(len(a), weight * cfg.backward)]
            pending += 2 * len(a)
        if pending > 4_000_000:
            flush()
    flush()
    return matrix.reshape(n, n)


def fit_cooccurrence(train: Sequence[np.ndarray], n_items: int, cfg: CooccurrenceConfig,
                     counts: np.ndarray | None = None) -> Cooccurrence:
    """Count co-occurrences within the window, normalise, keep each item's top-N neighbours. ``counts``:
    :func:`pair_counts` of the same ``train`` and counting fields, when already computed (not modified)."""
    n = n_items + 1
    matrix = pair_counts(train, n_items, cfg) if counts is None else counts.copy()
    np.fill_diagonal(matrix, 0.0)
    if cfg.alpha:
        freq = np.bincount(np.concatenate(list(train)), minlength=n).astype(np.float64)
        norm = np.power(np.maximum(freq, 1.0), cfg.alpha)
        matrix = matrix / norm[:, None] / norm[None, :]
    matrix[0, :] = 0.0
    matrix[:, 0] = 0.0
    top_n = min(cfg.top_n, n - 1)
    neighbors = np.argpartition(-matrix, top_n - 1, axis=1)[:, :top_n]
    weights = np.take_along_axis(matrix, neighbors, axis=1)
    order = np.argsort(-weights, axis=1, kind="stable")
    neighbors = np.take_along_axis(neighbors, order, axis=1)
    weights = np.take_along_axis(weights, order, axis=1).astype(np.float32)
    neighbors[weights == 0] = 0  # padding neighbour with weight 0: contributes nothing
    return Cooccurrence(cfg, neighbors.astype(np.int64), weights)


# --------------------------------------------------------------------------- baselines as servable bundles
class _BaselineHead:
    """Shared by the baseline graphs: ``(item_seq [B, L], exclude [B, X]) -> (scores [B, C], items [B, C])``,
    the contract of every full-sequence bundle, so the job (and the replay) serves a baseline like a model."""

    recurrent = False


def popular_head(popularity: np.ndarray, n_candidates: int, seq_len: int):  # noqa: ANN201 - an nn.Module
    """Most-popular: the same scores for everyone (``popularity [V + 1]``), the user's window excluded."""
    import torch
    from torch import nn

    from model_export.model import NEG, _mask_and_rank

    class PopularHead(nn.Module, _BaselineHead):
        def __init__(self) -> None:
            super().__init__()
            pop = torch.as_tensor(popularity, dtype=torch.float32).clone()
            self.register_buffer("pop", pop, persistent=False)
            penalty = torch.zeros(len(pop))
            penalty[0] = NEG
            self.register_buffer("penalty", penalty, persistent=False)
            self.n_candidates = min(n_candidates, len(pop) - 1)
            self.seq_len = seq_len

        def full_scores(self, item_seq: torch.Tensor) -> torch.Tensor:
            return self.pop.unsqueeze(0).expand(item_seq.shape[0], -1) + item_seq[:, :1] * 0.0

        def forward(self, item_seq: torch.Tensor, exclude: torch.Tensor):  # noqa: ANN202
            return _mask_and_rank(self.full_scores(item_seq), exclude, self.penalty, self.n_candidates)

    return PopularHead().eval()


def cooccurrence_head(cooc: Cooccurrence, popularity: np.ndarray, n_candidates: int):  # noqa: ANN201
    """Item-to-item co-occurrence over the user's newest items (:func:`model_export.model.cooccurrence_scores`,
    the function the blended model serves), ties (no co-occurring item) broken by popularity."""
    import torch
    from torch import nn

    from model_export.model import NEG, _mask_and_rank, cooccurrence_scores, decay_weights

    class CooccurrenceHead(nn.Module, _BaselineHead):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("neighbors", torch.as_tensor(cooc.neighbors), persistent=False)
            self.register_buffer("weights", torch.as_tensor(cooc.weights), persistent=False)
            self.register_buffer("decay", torch.as_tensor(decay_weights(cooc.cfg.decay, cooc.cfg.history)),
                                 persistent=False)
            pop = torch.as_tensor(popularity, dtype=torch.float32)
            self.register_buffer("tie", 1e-6 * pop / torch.clamp(pop.max(), min=1e-12), persistent=False)
            penalty = torch.zeros(len(pop))
            penalty[0] = NEG
            self.register_buffer("penalty", penalty, persistent=False)
            self.n_candidates = min(n_candidates, len(pop) - 1)
            self.seq_len = cooc.cfg.history

        def full_scores(self, item_seq: torch.Tensor) -> torch.Tensor:
            return cooccurrence_scores(item_seq, self.neighbors, self.weights, self.decay) + self.tie

        def forward(self, item_seq: torch.Tensor, exclude: torch.Tensor):  # noqa: ANN202
            return _mask_and_rank(self.full_scores(item_seq), exclude, self.penalty, self.n_candidates)

    return CooccurrenceHead().eval()
