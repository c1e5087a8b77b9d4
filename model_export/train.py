"""Training: full-softmax next-item cross-entropy at every position, early stopping on validation NDCG@10."""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from model_export.data import LooSplit, SequenceData, left_pad
from model_export.metrics import DEFAULT_KS, metrics_from_ranks, target_ranks
from model_export.model import RECURRENT_ARCHS, SASRecConfig, build_model
from model_export.settings import DEFAULT_SEEDS, TrainConfig

__all__ = ["DEFAULT_SEEDS", "TrainConfig", "TrainResult", "train_model", "evaluate", "popularity_scores", "left_pad"]

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """The best model (by validation NDCG@10) and how training went."""

    model: nn.Module
    config: TrainConfig
    best_epoch: int
    valid: dict[str, float]
    test: dict[str, float]
    curve: list[dict[str, float]]
    train_seconds: float

    def summary(self) -> dict:
        """JSON-able summary."""
        return {
            "config": self.config.model_dump(),
            "best_epoch": self.best_epoch,
            "valid": self.valid,
            "test": self.test,
            "curve": self.curve,
            "train_seconds": self.train_seconds,
        }


def popularity_scores(train: Sequence[np.ndarray], n_items: int) -> np.ndarray:
    """Interaction counts per item index ``[V + 1]`` (index 0 = padding, count 0)."""
    counts = np.bincount(np.concatenate(list(train)) if train else np.array([], dtype=np.int64),
                         minlength=n_items + 1).astype(np.float64)
    counts[0] = 0.0
    return counts


def input_length(model: nn.Module, sequences: Sequence[np.ndarray]) -> int:
    """How much of each history the model reads: the newest ``max_seq_len`` items, or for a recurrent model
    (whose serving state carries the whole stream) all of it."""
    if model.cfg.arch in RECURRENT_ARCHS:
        return max([len(s) for s in sequences] + [1])
    return model.cfg.max_seq_len


@torch.no_grad()
def score_sequences(model: nn.Module, inputs: Sequence[np.ndarray], batch_size: int = 256) -> np.ndarray:
    """Full-catalog scores ``[U, V + 1]`` after each input sequence."""
    model.eval()
    out = np.zeros((len(inputs), model.cfg.n_items + 1), dtype=np.float32)
    lengths = np.array([len(s) for s in inputs])
    order = np.argsort(lengths, kind="stable")  # similar lengths together: little padding
    budget = batch_size * model.cfg.max_seq_len  # padded tokens per forward pass
    start = 0
    while start < len(order):
        stop = start + 1
        while stop < len(order) and stop - start < batch_size and (stop - start + 1) * lengths[order[stop]] <= budget:
            stop += 1
        rows = order[start:stop]
        chunk = [inputs[i] for i in rows]
        out[rows] = model(torch.from_numpy(left_pad(chunk, input_length(model, chunk)))).numpy()
        start = stop
    return out


def evaluate(
    model: nn.Module, inputs: Sequence[np.ndarray], targets: np.ndarray, ks: Sequence[int] = DEFAULT_KS
) -> dict[str, float]:
    """Full-catalog metrics with each user's input history excluded from the ranking."""
    scores = score_sequences(model, inputs)
    return metrics_from_ranks(target_ranks(scores, targets, inputs), ks)


def _batches(
    train: Sequence[np.ndarray], length: int, batch_size: int, rng: np.random.Generator
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every training sequence cut into windows of ``length + 1`` items (from the newest end, with a random
    shift so that window borders move between epochs): input ``w[:-1]`` predicts target ``w[1:]``."""
    crops_in, crops_out = [], []
    for seq in train:
        if len(seq) < 2:
            continue
        end = len(seq)
        if len(seq) > length + 1:
            end -= int(rng.integers(0, length))
        while True:
            window = seq[max(0, end - length - 1) : end]
            if len(window) >= 2:
                crops_in.append(window[:-1])
                crops_out.append(window[1:])
            if end - length - 1 <= 0:
                break
            end -= length
        if end < len(seq) and len(seq) > length + 1:
            window = seq[-length - 1 :]  # the newest window always takes part
            crops_in.append(window[:-1])
            crops_out.append(window[1:])
    order = rng.permutation(len(crops_in))
    batches = []
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        batches.append(
            (left_pad([crops_in[i] for i in idx], length), left_pad([crops_out[i] for i in idx], length))
        )
    return batches


def _full_batches(
    train: Sequence[np.ndarray], batch_size: int, token_budget: int, rng: np.random.Generator
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Whole sequences (for recurrent models, whose serving state carries the whole stream), grouped by
    length so that padding stays small: at most ``batch_size`` sequences and ``token_budget`` padded tokens
    per batch, batches in random order."""
    usable = [s for s in train if len(s) >= 2]
    order = sorted(range(len(usable)), key=lambda i: (len(usable[i]), rng.random()))
    groups: list[list[int]] = []
    for i in order:
        length = len(usable[i]) - 1
        if groups and len(groups[-1]) < batch_size and length * (len(groups[-1]) + 1) <= token_budget:
            groups[-1].append(i)
        else:
            groups.append([i])
    batches = []
    for g in (groups[j] for j in rng.permutation(len(groups))):
        length = max(len(usable[i]) for i in g) - 1
        batches.append((left_pad([usable[i][:-1] for i in g], length), left_pad([usable[i][1:] for i in g], length)))
    return batches


def train_model(data: SequenceData, split: LooSplit, cfg: TrainConfig, *,
                on_eval: Callable[[int, float], None] | None = None, evaluate_test: bool = True,
                item_features: np.ndarray | None = None) -> TrainResult:
    """Train ``cfg.arch`` on ``split.train``; keep the epoch with the best validation NDCG@10.

    ``on_eval(epoch, valid_ndcg10)`` is called after every validation (a search prunes there by raising);
    without ``evaluate_test`` the test split is not scored (``test`` is empty: a search never looks at it).
    ``item_features [V + 1, F]`` (:func:`model_export.pipeline.item_features`): item side information, used by
    the lru when ``cfg.item_features`` (:meth:`LRURec.set_item_features`) and folded into its item table before
    the model is returned, so what is scored, exported and served is a plain item table."""
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    rng = np.random.default_rng(cfg.seed)
    model = build_model(
        SASRecConfig(
            n_items=data.n_items,
            max_seq_len=cfg.max_seq_len,
            hidden=cfg.hidden,
            n_blocks=cfg.n_blocks,
            n_heads=cfg.n_heads,
            dropout=cfg.dropout,
            arch=cfg.arch,
        )
    )
    side = cfg.item_features and item_features is not None and cfg.arch == "lru"
    if side:
        model.set_item_features(torch.from_numpy(np.asarray(item_features, dtype=np.float32)))
    optim = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    best_state, best_score, best_epoch, bad_epochs = None, -1.0, 0, 0
    curve: list[dict[str, float]] = []
    started = time.perf_counter()
    bar = tqdm(range(1, cfg.max_epochs + 1), desc=f"train {cfg.arch}", unit="epoch", disable=not cfg.progress)
    for epoch in bar:
        model.train()
        losses = []
        if cfg.arch in RECURRENT_ARCHS:
            batches = _full_batches(split.train, cfg.batch_size, cfg.batch_size * cfg.max_seq_len, rng)
        else:
            batches = _batches(split.train, cfg.max_seq_len, cfg.batch_size, rng)
        for inp, tgt in batches:
            inp_t, tgt_t = torch.from_numpy(inp), torch.from_numpy(tgt)
            hidden = model.encode(inp_t)  # [B, L, D]
            keep = tgt_t != 0  # [B, L]
            logits = model.logits(hidden[keep])  # [N, V + 1]
            if cfg.label_smoothing > 0:  # smoothing spreads mass over every class: leave padding out, not -inf
                loss = F.cross_entropy(logits[:, 1:], tgt_t[keep] - 1, label_smoothing=cfg.label_smoothing)
            else:
                logits[:, 0] = float("-inf")
                loss = F.cross_entropy(logits, tgt_t[keep])
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            losses.append(loss.item())
        point = {"epoch": float(epoch), "loss": float(np.mean(losses)) if losses else float("nan")}
        if epoch % cfg.eval_every == 0 or epoch == cfg.max_epochs:
            valid = evaluate(model, split.valid_inputs, split.valid_targets, (10,))
            point["valid_ndcg@10"] = valid["ndcg@10"]
            point["valid_recall@10"] = valid["recall@10"]
            if on_eval is not None:
                on_eval(epoch, valid["ndcg@10"])
            if valid["ndcg@10"] > best_score:
                best_score, best_epoch, bad_epochs = valid["ndcg@10"], epoch, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                bad_epochs += 1
        curve.append(point)
        bar.set_postfix(loss=f"{point['loss']:.3f}", val_ndcg10=f"{best_score:.4f}")
        if bad_epochs >= cfg.patience or time.perf_counter() - started > cfg.max_train_seconds:
            break
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    if side:
        model.fold_item_features()
    model.eval()
    seconds = time.perf_counter() - started
    valid = evaluate(model, split.valid_inputs, split.valid_targets, cfg.ks)
    test = evaluate(model, split.test_inputs, split.test_targets, cfg.ks) if evaluate_test else {}
    log.info(cfg.arch + " best epoch %d valid ndcg@10 %.4f test ndcg@10 %.4f (%.1fs)",
             best_epoch, valid["ndcg@10"], test.get("ndcg@10", float("nan")), seconds)
    return TrainResult(model, cfg, best_epoch, valid, test, curve, seconds)

