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
    "LRURec",
    "RECURRENT_ARCHS",
    "build_model",
    "ServingHead",
    "StepHead",
    "EncoderHead",
    "EncoderStepHead",
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
    """``sasrec``, ``gru4rec`` or ``lru``."""


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


class _LRULayer(nn.Module):
    """A linear recurrent unit (Orvieto et al. 2023) in real arithmetic, so that it exports to ONNX.

    ``h_t = lambda * h_{t-1} + gamma * (B z_t)`` with a diagonal complex ``lambda = exp(-exp(nu) + i exp(theta))``
    (stable: ``|lambda| < 1``), output ``y_t = Re(C h_t) + D * z_t``. Training runs the recurrence as a
    parallel doubling scan; serving advances it one step per event (:meth:`step`). Both compute the same
    ``h_t`` (up to float rounding).
    """

    def __init__(self, d: int, r_min: float = 0.8, r_max: float = 0.99, max_phase: float = math.pi / 10) -> None:
        super().__init__()
        u1, u2 = torch.rand(d), torch.rand(d)
        nu = -0.5 * torch.log(u1 * (r_max**2 - r_min**2) + r_min**2)
        self.nu_log = nn.Parameter(torch.log(nu))
        self.theta_log = nn.Parameter(torch.log(max_phase * u2 + 1e-4))
        self.b_re = nn.Parameter(torch.randn(d, d) / math.sqrt(2 * d))
        self.b_im = nn.Parameter(torch.randn(d, d) / math.sqrt(2 * d))
        self.c_re = nn.Parameter(torch.randn(d, d) / math.sqrt(d))
        self.c_im = nn.Parameter(torch.randn(d, d) / math.sqrt(d))
        self.d_skip = nn.Parameter(torch.randn(d) / math.sqrt(d))

    def coefficients(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(lambda_re, lambda_im, gamma)``, each ``[D]``."""
        modulus = torch.exp(-torch.exp(self.nu_log))
        phase = torch.exp(self.theta_log)
        gamma = torch.sqrt(torch.clamp(1.0 - modulus**2, min=1e-8))
        return modulus * torch.cos(phase), modulus * torch.sin(phase), gamma

    def inputs(self, z: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``gamma * B z`` as (re, im), zero where ``keep`` is false: ``[..., D] -> 2 x [..., D]``."""
        _, _, gamma = self.coefficients()
        scale = gamma * keep.unsqueeze(-1).to(z.dtype)
        return (z @ self.b_re.T) * scale, (z @ self.b_im.T) * scale

    def output(self, h_re: torch.Tensor, h_im: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``Re(C h) + D z``."""
        return h_re @ self.c_re.T - h_im @ self.c_im.T + self.d_skip * z

    def scan(self, z: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """All positions at once: ``z [B, L, D] -> (y [B, L, D], h_re, h_im [B, L, D])``, state starting at 0."""
        lam_re, lam_im = self.coefficients()[:2]
        h_re, h_im = self.inputs(z, keep)  # [B, L, D] each
        p_re, p_im = lam_re, lam_im  # lambda ** shift
        shift, length = 1, z.shape[1]
        while shift < length:  # Hillis-Steele: after this round h_t = sum_{j < 2 shift} lambda^j u_{t-j}
            prev_re = nn.functional.pad(h_re[:, :-shift], (0, 0, shift, 0))
            prev_im = nn.functional.pad(h_im[:, :-shift], (0, 0, shift, 0))
            h_re, h_im = h_re + p_re * prev_re - p_im * prev_im, h_im + p_re * prev_im + p_im * prev_re
            p_re, p_im = p_re * p_re - p_im * p_im, 2 * p_re * p_im
            shift *= 2
        return self.output(h_re, h_im, z), h_re, h_im

    def step(
        self, z: torch.Tensor, keep: torch.Tensor, h_re: torch.Tensor, h_im: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One position: ``z [B, D]``, state 2 x ``[B, D]`` -> (y, new h_re, new h_im); unchanged where not ``keep``."""
        lam_re, lam_im = self.coefficients()[:2]
        u_re, u_im = self.inputs(z, keep)
        k = keep.unsqueeze(-1).to(z.dtype)
        new_re = (lam_re * h_re - lam_im * h_im) * k + h_re * (1 - k) + u_re
        new_im = (lam_re * h_im + lam_im * h_re) * k + h_im * (1 - k) + u_im
        return self.output(new_re, new_im, z), new_re, new_im


class _LRUBlock(nn.Module):
    def __init__(self, d: int, dropout: float) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.lru = _LRULayer(d)
        self.ffn = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Dropout(dropout), nn.Linear(4 * d, d))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        y, h_re, h_im = self.lru.scan(self.ln1(x), keep)
        x = x + self.drop(y)
        return x + self.drop(self.ffn(self.ln2(x))), h_re, h_im

    def step(
        self, x: torch.Tensor, keep: torch.Tensor, h_re: torch.Tensor, h_im: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        y, h_re, h_im = self.lru.step(self.ln1(x), keep, h_re, h_im)
        x = x + self.drop(y)
        return x + self.drop(self.ffn(self.ln2(x))), h_re, h_im


class LRURec(nn.Module):
    """Linear recurrent sequential recommender in the spirit of LRURec (Yue et al. 2024): pre-LN blocks of an
    LRU and a position-wise feed-forward network, tied item embeddings.

    Its input is the user's whole stream: the recurrence carries everything seen so far, so serving keeps a
    fixed-size state per user (:meth:`state_size` floats) and advances it one step per event, at a cost that
    does not grow with the history. The state layout is ``[h_re, h_im] per block, then the output vector``.
    """

    def __init__(self, cfg: SASRecConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.hidden
        self.item_emb = nn.Embedding(cfg.n_items + 1, d, padding_idx=0)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(_LRUBlock(d, cfg.dropout) for _ in range(cfg.n_blocks))
        self.ln = nn.LayerNorm(d)
        self.side_emb: nn.Linear | None = None
        nn.init.normal_(self.item_emb.weight, std=0.02)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    def set_item_features(self, features: torch.Tensor) -> None:
        """Item side information ``[V + 1, F]`` (e.g. each item's genres, a row summing to 1; row 0, padding,
        zero): each item's vector becomes ``item_emb + features @ W`` with a learnt ``W [F, D]``, in the input
        and in the (tied) scoring table alike. An additive term of the item table: :meth:`fold_item_features`
        folds it into ``item_emb`` after training, so the exported and served model is unchanged."""
        if features.shape[0] != self.cfg.n_items + 1:
            msg = f"features must have {self.cfg.n_items + 1} rows, got {features.shape[0]}"
            raise ValueError(msg)
        self.register_buffer("item_features", features.to(torch.float32).clone(), persistent=False)
        self.item_features[0].zero_()
        self.side_emb = nn.Linear(features.shape[1], self.cfg.hidden, bias=False)
        nn.init.normal_(self.side_emb.weight, std=0.02)

    def item_table(self) -> torch.Tensor:
        """The item vectors ``[V + 1, D]``: the embedding table plus the side-information term, if any."""
        if self.side_emb is None:
            return self.item_emb.weight
        return self.item_emb.weight + self.side_emb(self.item_features)

    @torch.no_grad()
    def fold_item_features(self) -> None:
        """Fold the side-information term into ``item_emb`` and drop it (scores unchanged)."""
        if self.side_emb is not None:
            self.item_emb.weight.copy_(self.item_table())
            self.side_emb = None
            del self.item_features

    def _embed(self, items: torch.Tensor) -> torch.Tensor:
        if self.side_emb is None:
            return self.item_emb(items)
        return nn.functional.embedding(items, self.item_table(), padding_idx=0)

    @property
    def state_size(self) -> int:
        """Floats of serving state per user."""
        return (2 * self.cfg.n_blocks + 1) * self.cfg.hidden

    def encode(self, item_seq: torch.Tensor) -> torch.Tensor:
        """``[B, L] -> [B, L, D]``; padding (0) leaves the recurrent state untouched."""
        return self._scan(item_seq)[0]

    def _scan(self, item_seq: torch.Tensor, item_vecs: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        keep = item_seq != 0  # [B, L]
        x = self.drop(self._embed(item_seq) if item_vecs is None else item_vecs)  # [B, L, D]
        states = []
        for block in self.blocks:
            x, h_re, h_im = block(x, keep)
            states += [h_re[:, -1], h_im[:, -1]]
        return self.ln(x), states

    def final_state(self, item_seq: torch.Tensor, item_vecs: torch.Tensor | None = None) -> torch.Tensor:
        """Serving state after the newest item of each left-padded row: ``[B, L] -> [B, state_size]``.

        The output vector slot holds the output at the newest non-padding position (zeros for an all-padding
        row), which is what :meth:`step` keeps when it is given padding. ``item_vecs [B, L, D]``: the rows'
        item embeddings gathered by the caller (the served graph reads them from the bundle's item table).
        """
        out, states = self._scan(item_seq, item_vecs)
        keep = (item_seq != 0).to(out.dtype)  # [B, L]
        # index of the newest kept position; rows with none get a zero vector
        pos = torch.arange(item_seq.shape[1], device=item_seq.device).to(out.dtype)
        last = torch.argmax(keep * (pos + 1), dim=1)  # [B]
        vec = out[torch.arange(out.shape[0]), last] * keep.amax(dim=1, keepdim=True)  # [B, D]
        return torch.cat([*states, vec], dim=1)

    def step(self, state: torch.Tensor, item: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Advance by one event: ``state [B, S], item [B] -> (new state [B, S], output vector [B, D])``.

        Item 0 (unknown to the model) leaves the state and the output vector unchanged.
        """
        d = self.cfg.hidden
        keep = item != 0  # [B]
        x = self.drop(self._embed(item))  # [B, D]
        new = []
        for i, block in enumerate(self.blocks):
            h_re, h_im = state[:, 2 * i * d : (2 * i + 1) * d], state[:, (2 * i + 1) * d : (2 * i + 2) * d]
            x, h_re, h_im = block.step(x, keep, h_re, h_im)
            new += [h_re, h_im]
        k = keep.unsqueeze(-1).to(x.dtype)
        vec = self.ln(x) * k + state[:, -d:] * (1 - k)
        return torch.cat([*new, vec], dim=1), vec

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """``[..., D] -> [..., V + 1]``."""
        return hidden @ self.item_table().T

    def forward(self, item_seq: torch.Tensor) -> torch.Tensor:
        """Next-item logits after the newest item: ``[B, L] -> [B, V + 1]``."""
        return self.logits(self.final_state(item_seq)[:, -self.cfg.hidden :])


RECURRENT_ARCHS = ("lru",)
"""Architectures served by advancing a per-user state one step per event."""


def build_model(cfg: SASRecConfig) -> nn.Module:
    """The architecture ``cfg.arch`` names."""
    if cfg.arch == "sasrec":
        return SASRec(cfg)
    if cfg.arch == "gru4rec":
        return GRU4Rec(cfg)
    if cfg.arch == "lru":
        return LRURec(cfg)
    msg = f"unknown arch {cfg.arch!r}; use 'sasrec', 'gru4rec' or 'lru'"
    raise ValueError(msg)


def decay_weights(decay: float, history: int) -> np.ndarray:
    """``[decay ** (history - 1), ..., decay, 1]``: the weight of each of the newest ``history`` positions."""
    return (decay ** np.arange(history - 1, -1, -1)).astype(np.float32)


def _moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row mean and unbiased std over the catalog, column 0 (padding) excluded: 2 x ``[B, 1]``.

    Two reductions over the row and a few ``[B, 1]`` operations (cheaper in the served graph than slicing the
    row and reducing it several times).
    """
    n = int(x.shape[1]) - 1  # a constant in the exported graph (only the batch axis is dynamic)
    first = x[:, :1]  # [B, 1]
    total = x.sum(dim=1, keepdim=True) - first
    squares = (x * x).sum(dim=1, keepdim=True) - first * first
    mean = total / n
    var = torch.clamp((squares - total * mean) / (n - 1), min=0.0)
    return mean, torch.sqrt(var)


def standardize(x: torch.Tensor) -> torch.Tensor:
    """Per-row z-score over the catalog (column 0, padding, excluded from the statistics)."""
    mean, std = _moments(x)
    return (x - mean) / (std + 1e-6)


def cooccurrence_scores(
    item_seq: torch.Tensor, neighbors: torch.Tensor, weights: torch.Tensor, decay: torch.Tensor
) -> torch.Tensor:
    """``sum_t decay[t] * S[h_t, :]`` over the newest ``len(decay)`` items: ``[B, L] -> [B, V + 1]``.

    ``S`` is given as top-N neighbour lists ``neighbors``/``weights`` ``[V + 1, N]`` (row 0 = padding, zero).
    """
    if item_seq.shape[1] < decay.shape[0]:  # shorter than the window: left-pad (padding contributes nothing)
        item_seq = nn.functional.pad(item_seq, (decay.shape[0] - item_seq.shape[1], 0))
    tail = item_seq[:, -int(decay.shape[0]) :]  # [B, H]
    idx = neighbors[tail].flatten(1)  # [B, H * N]
    val = (weights[tail] * decay.unsqueeze(-1)).flatten(1)  # [B, H * N]; padding rows have weight 0
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
    """``(1 - beta) * z(model logits) + beta * z(co-occurrence scores)``, both ``[B, V + 1]``, computed as
    ``a * logits + b * co + c`` with per-row ``[B, 1]`` coefficients (the same value, fewer full-row passes)."""
    co = cooccurrence_scores(item_seq, neighbors, weights, decay)
    m_mean, m_std = _moments(logits)
    c_mean, c_std = _moments(co)
    a = (1.0 - beta) / (m_std + 1e-6)
    b = beta / (c_std + 1e-6)
    return logits * a + co * b - (m_mean * a + c_mean * b)


def _mask_and_rank(
    scores: torch.Tensor, exclude: torch.Tensor, penalty: torch.Tensor, n_candidates: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Padding and ``exclude`` [B, X] pushed to NEG, then the best ``n_candidates``: 2 x [B, C]."""
    scores = (scores + penalty).scatter(1, exclude, NEG)  # [B, V + 1]
    return torch.topk(scores, n_candidates, dim=-1)


class ServingHead(nn.Module):
    """The exported full-sequence graph: ``(item_seq [B, L], exclude [B, X]) -> (scores [B, C], items [B, C])``
    best first, padding and excluded items never; recurrent models also return their serving ``state [B, S]``.

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
        self.recurrent = model.cfg.arch in RECURRENT_ARCHS
        penalty = torch.zeros(model.cfg.n_items + 1)
        penalty[0] = NEG
        self.register_buffer("penalty", penalty, persistent=False)
        self.recent_len = 1
        if cooc is not None and self.beta > 0:
            neighbors, weights, decay = cooc
            self.register_buffer("neighbors", torch.as_tensor(neighbors, dtype=torch.long), persistent=False)
            self.register_buffer("weights", torch.as_tensor(weights, dtype=torch.float32), persistent=False)
            self.register_buffer("decay", torch.as_tensor(decay, dtype=torch.float32), persistent=False)
            self.recent_len = int(len(decay))

    def blend(self, logits: torch.Tensor, recent: torch.Tensor) -> torch.Tensor:
        """Model logits [B, V + 1] blended with co-occurrence over the newest items ``recent`` [B, R]."""
        if self.beta > 0:
            return blend_scores(logits, recent, self.neighbors, self.weights, self.decay, self.beta)
        return logits

    def full_scores(self, item_seq: torch.Tensor) -> torch.Tensor:
        """Scores over the whole catalog ``[B, V + 1]`` (padding column included, nothing masked yet)."""
        return self.blend(self.model(item_seq), item_seq)

    def forward(self, item_seq: torch.Tensor, exclude: torch.Tensor):  # noqa: ANN201 - 2 or 3 tensors
        if self.recurrent:
            state = self.model.final_state(item_seq)  # [B, S]
            logits = self.model.logits(state[:, -self.model.cfg.hidden :])
            top_scores, items = _mask_and_rank(self.blend(logits, item_seq), exclude, self.penalty,
                                               self.n_candidates)
            return top_scores, items, state
        return _mask_and_rank(self.full_scores(item_seq), exclude, self.penalty, self.n_candidates)


class StepHead(nn.Module):
    """The exported one-event graph of a recurrent model:
    ``(state [B, S], item [B], recent [B, R], exclude [B, X]) -> (scores [B, C], items [B, C], state_out [B, S])``.

    Gives the scores of :class:`ServingHead` on the same history (the export's parity check and a test hold it
    to that), at a cost that does not depend on the history's length. Everything that depends only on the
    weights is folded into constants here, so that the graph is a handful of matrix products per block:
    the complex recurrence ``lambda * h + gamma * B z`` becomes ``[h_re, h_im] @ Lambda + z @ B'`` with a real
    ``2D x 2D`` block matrix ``Lambda`` and ``gamma`` folded into ``B'``, and ``Re(C h)`` becomes
    ``[h_re, h_im] @ [C_re; -C_im]``.
    """

    def __init__(self, head: ServingHead) -> None:
        super().__init__()
        if not head.recurrent:
            msg = f"{head.model.cfg.arch} is not recurrent; only {RECURRENT_ARCHS} export a step graph"
            raise ValueError(msg)
        self.head = head
        model = head.model
        with torch.no_grad():
            for i, block in enumerate(model.blocks):
                lam_re, lam_im, gamma = (t.detach() for t in block.lru.coefficients())
                lru = block.lru
                b = torch.cat([(lru.b_re * gamma[:, None]).T, (lru.b_im * gamma[:, None]).T], dim=1)  # [D, 2D]
                lam = torch.cat([torch.cat([torch.diag(lam_re), torch.diag(lam_im)], dim=1),
                                 torch.cat([-torch.diag(lam_im), torch.diag(lam_re)], dim=1)], dim=0)  # [2D, 2D]
                c = torch.cat([lru.c_re.T, -lru.c_im.T], dim=0)  # [2D, D]
                self.register_buffer(f"b{i}", b.contiguous(), persistent=False)
                self.register_buffer(f"lam{i}", lam.contiguous(), persistent=False)
                self.register_buffer(f"c{i}", c.contiguous(), persistent=False)
                self.register_buffer(f"d{i}", lru.d_skip.detach().clone(), persistent=False)
            self.register_buffer("emb_t", model.item_emb.weight.detach().T.contiguous(), persistent=False)

    def advance(self, state: torch.Tensor, item: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The recurrence alone: ``state [B, S]``, ``item [B]`` and its embedding ``x [B, D]`` -> (new state,
        output vector [B, D])."""
        model = self.head.model
        d, n_blocks = model.cfg.hidden, model.cfg.n_blocks
        keep = (item != 0).unsqueeze(-1)  # [B, 1]: an unknown item leaves the state as it was
        parts = torch.split(state, [2 * d] * n_blocks + [d], dim=1)
        new = []
        for i, block in enumerate(model.blocks):
            z = block.ln1(x)
            h = parts[i] @ getattr(self, f"lam{i}") + z @ getattr(self, f"b{i}")  # [B, 2D]
            h = torch.where(keep, h, parts[i])
            x = x + h @ getattr(self, f"c{i}") + z * getattr(self, f"d{i}")
            x = x + block.ffn(block.ln2(x))
            new.append(h)
        vec = torch.where(keep, model.ln(x), parts[-1])  # [B, D]
        return torch.cat([*new, vec], dim=1), vec

    def forward(
        self, state: torch.Tensor, item: torch.Tensor, recent: torch.Tensor, exclude: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        head = self.head
        new, vec = self.advance(state, item, nn.functional.embedding(item, head.model.item_emb.weight))
        scores = head.blend(vec @ self.emb_t, recent)  # [B, V + 1]
        top_scores, items = _mask_and_rank(scores, exclude, head.penalty, head.n_candidates)
        return top_scores, items, new


class EncoderHead(nn.Module):
    """The exported full-sequence graph of a format-3 recurrent bundle: ``(item_seq [B, L], item_vecs [B, L, D])
    -> state [B, S]``. The item table is not in the graph: the caller gathers the rows' embeddings from the
    bundle's table, and scores the output vector (the state's last ``D`` floats) outside the graph
    (:mod:`operators.scoring`), exactly as :class:`ServingHead` defines the scores."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, item_seq: torch.Tensor, item_vecs: torch.Tensor) -> torch.Tensor:
        return self.model.final_state(item_seq, item_vecs)


class EncoderStepHead(nn.Module):
    """The exported one-event graph of a format-3 recurrent bundle: ``(state [B, S], item [B], item_vec [B, D])
    -> state_out [B, S]``: the constants of :class:`StepHead` without the scoring (no item table in the graph)."""

    def __init__(self, head: ServingHead) -> None:
        super().__init__()
        self.step_head = StepHead(head)
        del self.step_head.emb_t

    def forward(self, state: torch.Tensor, item: torch.Tensor, item_vec: torch.Tensor) -> torch.Tensor:
        return self.step_head.advance(state, item, item_vec)[0]
