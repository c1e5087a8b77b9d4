"""Sequence models: SASRec (causal self-attention, Kang & McAuley 2018, pre-LN blocks) and GRU4Rec
(Hidasi et al. 2016, trained with full-catalog cross-entropy), plus the exported serving head that can
blend a model with item-to-item co-occurrence.

``forward(item_seq)`` takes tensors only. Padding id 0, sequences left-padded, newest item last.
Scores are dot products with the (shared) item embedding table over the full catalog.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

__all__ = [
    "SASRecConfig",
    "SASRec",
    "GRU4Rec",
    "build_model",
    "ServingHead",
    "blend_scores",
    "cooccurrence_scores",
    "standardize",
    "decay_weights",
]

NEG = -1e9  # finite mask value: -inf would turn fully padded rows into NaN


@dataclass(frozen=True)
class SASRecConfig:
    """Architecture hyper-parameters."""

    n_items: int
    max_seq_len: int = 50
    hidden: int = 64
    n_blocks: int = 2
    n_heads: int = 1
    dropout: float = 0.2
    arch: str = "sasrec"
    """``sasrec`` or ``gru4rec``."""


class _Block(nn.Module):
    def __init__(self, d: int, heads: int, dropout: float) -> None:
        super().__init__()
        if d % heads:
            msg = f"hidden ({d}) must be divisible by n_heads ({heads})"
            raise ValueError(msg)
        self.heads, self.d_head = heads, d // heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ffn = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Dropout(dropout), nn.Linear(d, d))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # x: [B, L, D]; mask: [B, 1, L, L] additive (0 keep, NEG drop)
        b, length, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, length, 3, self.heads, self.d_head).permute(2, 0, 3, 1, 4)
        att = (q @ k.transpose(-1, -2)) / math.sqrt(self.d_head) + mask  # [B, H, L, L]
        att = self.drop(torch.softmax(att, dim=-1))
        y = (att @ v).transpose(1, 2).reshape(b, length, d)  # [B, L, D]
        x = x + self.drop(self.proj(y))
        return x + self.drop(self.ffn(self.ln2(x)))


class SASRec(nn.Module):
    """Item sequence -> next-item logits over the catalog."""

    def __init__(self, cfg: SASRecConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.hidden
        self.item_emb = nn.Embedding(cfg.n_items + 1, d, padding_idx=0)
        self.pos_emb = nn.Embedding(cfg.max_seq_len, d)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(_Block(d, cfg.n_heads, cfg.dropout) for _ in range(cfg.n_blocks))
        self.ln = nn.LayerNorm(d)
        causal = torch.triu(torch.full((cfg.max_seq_len, cfg.max_seq_len), NEG), diagonal=1)
        self.register_buffer("causal", causal, persistent=False)
        nn.init.normal_(self.item_emb.weight, std=0.02)
        nn.init.normal_(self.pos_emb.weight, std=0.02)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    def encode(self, item_seq: torch.Tensor) -> torch.Tensor:
        """Hidden state at every position: ``[B, L] -> [B, L, D]``."""
        length = item_seq.shape[1]
        pad = item_seq == 0  # [B, L]
        pos = torch.arange(length, device=item_seq.device)
        x = self.item_emb(item_seq) * math.sqrt(self.cfg.hidden) + self.pos_emb(pos)  # [B, L, D]
        x = self.drop(x) * (~pad).unsqueeze(-1)
        key_mask = pad.unsqueeze(1).unsqueeze(2).to(x.dtype) * NEG  # [B, 1, 1, L]
        mask = self.causal[:length, :length] + key_mask  # [B, 1, L, L]
        for block in self.blocks:
            x = block(x, mask) * (~pad).unsqueeze(-1)
        return self.ln(x)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """``[..., D] -> [..., V + 1]`` (index 0 is padding)."""
        return hidden @ self.item_emb.weight.T

    def forward(self, item_seq: torch.Tensor) -> torch.Tensor:
        """Next-item logits after the newest item: ``[B, L] -> [B, V + 1]``."""
        return self.logits(self.encode(item_seq)[:, -1, :])


class GRU4Rec(nn.Module):
    """Item sequence -> next-item logits with a GRU; same interface as :class:`SASRec`."""

    def __init__(self, cfg: SASRecConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.hidden
        self.item_emb = nn.Embedding(cfg.n_items + 1, d, padding_idx=0)
        self.drop = nn.Dropout(cfg.dropout)
        self.gru = nn.GRU(d, d, num_layers=cfg.n_blocks, batch_first=True,
                          dropout=cfg.dropout if cfg.n_blocks > 1 else 0.0)
        self.ln = nn.LayerNorm(d)
        nn.init.normal_(self.item_emb.weight, std=0.02)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    def encode(self, item_seq: torch.Tensor) -> torch.Tensor:
        """``[B, L] -> [B, L, D]``; left padding is zero input, so the state starts at the first item."""
        x = self.drop(self.item_emb(item_seq))  # [B, L, D]
        out, _ = self.gru(x)  # [B, L, D]
        return self.ln(self.drop(out))

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """``[..., D] -> [..., V + 1]``."""
        return hidden @ self.item_emb.weight.T

    def forward(self, item_seq: torch.Tensor) -> torch.Tensor:
        """``[B, L] -> [B, V + 1]``."""
        return self.logits(self.encode(item_seq)[:, -1, :])


def build_model(cfg: SASRecConfig) -> nn.Module:
    """The architecture ``cfg.arch`` names."""
    if cfg.arch == "sasrec":
        return SASRec(cfg)
    if cfg.arch == "gru4rec":
        return GRU4Rec(cfg)
    msg = f"unknown arch {cfg.arch!r}; use 'sasrec' or 'gru4rec'"
    raise ValueError(msg)


def decay_weights(decay: float, history: int) -> np.ndarray:
    """``[decay ** (history - 1), ..., decay, 1]``: the weight of each of the newest ``history`` positions."""
    return (decay ** np.arange(history - 1, -1, -1)).astype(np.float32)


def standardize(x: torch.Tensor) -> torch.Tensor:
    """Per-row z-score over the catalog (column 0, padding, excluded from the statistics)."""
    items = x[:, 1:]
    mean = items.mean(dim=1, keepdim=True)
    std = items.std(dim=1, keepdim=True)
    return (x - mean) / (std + 1e-6)


def cooccurrence_scores(
    item_seq: torch.Tensor, neighbors: torch.Tensor, weights: torch.Tensor, decay: torch.Tensor
) -> torch.Tensor:
    """``sum_t decay[t] * S[h_t, :]`` over the newest ``len(decay)`` items: ``[B, L] -> [B, V + 1]``.

    ``S`` is given as top-N neighbour lists ``neighbors``/``weights`` ``[V + 1, N]`` (row 0 = padding, zero).
    """
    tail = item_seq[:, -decay.shape[0] :]  # [B, H]
    w = decay[-tail.shape[1] :] * (tail != 0).to(weights.dtype)  # [B, H]
    idx = neighbors[tail].flatten(1)  # [B, H * N]
    val = (weights[tail] * w.unsqueeze(-1)).flatten(1)  # [B, H * N]
    out = torch.zeros((item_seq.shape[0], neighbors.shape[0]), dtype=weights.dtype, device=item_seq.device)
    return out.scatter_add(1, idx, val)  # [B, V + 1]


def blend_scores(
    logits: torch.Tensor,
    item_seq: torch.Tensor,
    neighbors: torch.Tensor,
    weights: torch.Tensor,
    decay: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """``(1 - beta) * z(model logits) + beta * z(co-occurrence scores)``, both ``[B, V + 1]``."""
    co = cooccurrence_scores(item_seq, neighbors, weights, decay)
    return (1.0 - beta) * standardize(logits) + beta * standardize(co)


class ServingHead(nn.Module):
    """What gets exported: ``item_seq [B, L] -> (scores [B, C], items [B, C])``, best first, padding never.

    With ``cooc`` (top-N neighbour arrays) and ``beta > 0`` the scores are the blend of
    :func:`blend_scores`; otherwise the model's logits.
    """

    def __init__(
        self,
        model: nn.Module,
        n_candidates: int,
        cooc: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
        beta: float = 0.0,
    ) -> None:
        super().__init__()
        self.model = model
        self.n_candidates = n_candidates
        self.beta = float(beta) if cooc is not None else 0.0
        penalty = torch.zeros(model.cfg.n_items + 1)
        penalty[0] = NEG
        self.register_buffer("penalty", penalty, persistent=False)
        if cooc is not None and self.beta > 0:
            neighbors, weights, decay = cooc
            self.register_buffer("neighbors", torch.as_tensor(neighbors, dtype=torch.long), persistent=False)
            self.register_buffer("weights", torch.as_tensor(weights, dtype=torch.float32), persistent=False)
            self.register_buffer("decay", torch.as_tensor(decay, dtype=torch.float32), persistent=False)

    def full_scores(self, item_seq: torch.Tensor) -> torch.Tensor:
        """Scores over the whole catalog ``[B, V + 1]`` (padding column included, not yet masked)."""
        logits = self.model(item_seq)  # [B, V + 1]
        if self.beta > 0:
            logits = blend_scores(logits, item_seq, self.neighbors, self.weights, self.decay, self.beta)
        return logits

    def forward(self, item_seq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores = self.full_scores(item_seq) + self.penalty  # [B, V + 1]
        top_scores, items = torch.topk(scores, self.n_candidates, dim=-1)  # [B, C] each
        return top_scores, items
