"""From an event log to a served-ready bundle: load, split (LOO-5core), baselines, train, blend, export, report.

Everything is chosen on the validation split: the co-occurrence configuration, the sequence architecture,
the blend weight and the epoch. The test split is only reported.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from itertools import groupby
from operator import attrgetter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from model_export.baselines import Cooccurrence, CooccurrenceConfig, fit_cooccurrence, pair_counts
from model_export.data import (
    DataFormat,
    LooSplit,
    SequenceData,
    build_sequences,
    first_interactions,
    k_core,
    left_pad,
    load_interactions,
    loo_split,
)
from model_export.export import export_bundle
from model_export.metrics import DEFAULT_KS, metrics_from_ranks, spread, target_ranks
from model_export.model import decay_weights, standardize
from model_export.report import write_report
from model_export.train import (
    DEFAULT_SEEDS,
    TrainConfig,
    TrainResult,
    popularity_scores,
    score_sequences,
    train_model,
)
from operators.catalog import CategoryMatrix, catalog_path, load_catalog
from operators.errors import ConfigError

__all__ = ["TrainJob", "run_training", "choose_blend", "item_features", "DEFAULT_COOC_GRID", "DEFAULT_BETAS"]

log = logging.getLogger(__name__)

DEFAULT_COOC_GRID: tuple[CooccurrenceConfig, ...] = tuple(
    CooccurrenceConfig(window=w, decay=d, alpha=a, gap_decay=g, backward=b)
    for w in (10, 30, 100)
    for d in (0.5, 0.7, 0.85)
    for a in (0.0, 0.5)
    for g in (1.0, 0.95, 0.9)
    for b in (1.0, 0.5)
)
"""Co-occurrence configurations tried on validation (108, from 18 counting passes). Plain symmetric counting
(``gap_decay = backward = 1``) is among them; on ml-latest-small distance-weighted, forward-leaning pairs win
(validation NDCG@10 0.0965 -> 0.1097, ``perf/results/model-experiments/session26/``)."""
DEFAULT_BETAS: tuple[float, ...] = tuple(round(b, 2) for b in np.linspace(0.0, 1.0, 11))


@dataclass(frozen=True)
class TrainJob:
    """One ``streamrec train`` invocation."""

    data: str
    out: str
    fmt: DataFormat = "events"
    protocol: str = "loo-5core"
    min_count: int = 5
    n_candidates: int = 300
    train: TrainConfig = TrainConfig()
    archs: tuple[str, ...] = (TrainConfig.model_fields["arch"].default,)
    seeds: tuple[int, ...] = DEFAULT_SEEDS
    """Every seed is trained and evaluated; the best on validation is exported, and ``metrics.json`` reports the
    mean and standard error over all of them (one seed's test figure moves by ~0.01 on 610 users)."""
    cooc_grid: tuple[CooccurrenceConfig, ...] = field(default=DEFAULT_COOC_GRID)
    betas: tuple[float, ...] = DEFAULT_BETAS
    report: bool = True
    search_trials: int = 0
    """> 0: a hyper-parameter search of this many trials first (:mod:`model_export.search`); its best
    configuration replaces ``train``'s searched fields."""
    search_timeout_s: float | None = None
    catalog: str | None = None
    """Item categories (``item_id,categories`` CSV or a ``movies.csv``) for the item side information
    (``train.item_features``); MovieLens data uses its own ``movies.csv`` when this is None
    (:func:`operators.catalog.catalog_path`)."""

    def __post_init__(self) -> None:
        if self.protocol != "loo-5core":
            msg = f"unknown protocol {self.protocol!r}; supported: loo-5core"
            raise ConfigError(msg)
        if not self.archs or not self.seeds:
            msg = "archs and seeds must not be empty"
            raise ConfigError(msg)
        if self.search_trials < 0:
            msg = f"search_trials must be >= 0, got {self.search_trials}"
            raise ConfigError(msg)
        if any(not 0.0 <= b <= 1.0 for b in self.betas):
            msg = f"blend weights must be in [0, 1], got {self.betas}"
            raise ConfigError(msg)


def _load(job: TrainJob, frame: pd.DataFrame | None = None) -> tuple[SequenceData, LooSplit]:
    raw = load_interactions(job.data, job.fmt) if frame is None else frame
    df = first_interactions(raw)  # what the job's model sees (operators.window)
    data = build_sequences(k_core(df, job.min_count))
    if data.n_users == 0:
        msg = f"no user has {job.min_count}+ events in {job.data}; nothing to train on"
        raise ConfigError(msg)
    return data, loo_split(data)


def _metrics(scores: np.ndarray, targets: np.ndarray, inputs: list[np.ndarray]) -> dict[str, float]:
    return metrics_from_ranks(target_ranks(scores, targets, inputs), DEFAULT_KS)


def _standardize(x: np.ndarray) -> np.ndarray:
    """The served graph's per-row z-score (:func:`model_export.model.standardize`) on numpy scores."""
    return standardize(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()


def _choose_cooc(job: TrainJob, data: SequenceData, split: LooSplit, history: int) -> dict[str, Any]:
    best: tuple[float, CooccurrenceConfig, np.ndarray] | None = None
    counting = attrgetter("window", "gap_decay", "backward")  # the pair counts depend on these only
    for _, group in groupby(sorted(job.cooc_grid, key=counting), key=counting):
        configs = list(group)
        counts = pair_counts(split.valid_inputs, data.n_items, configs[0])  # shared by the group's decays and alphas
        for cfg in configs:
            cfg = replace(cfg, history=cfg.horizon(history))
            scores = fit_cooccurrence(split.valid_inputs, data.n_items, cfg, counts).score(split.valid_inputs)
            score = _metrics(scores, split.valid_targets, split.valid_inputs)["ndcg@10"]
            if best is None or score > best[0]:
                best = (score, cfg, scores)
    assert best is not None
    _, cfg, valid_scores = best
    test_model = fit_cooccurrence(split.test_inputs, data.n_items, cfg)
    return {"config": cfg, "valid_scores": valid_scores, "test_scores": test_model.score(split.test_inputs)}


def _run_seed(
    job: TrainJob, data: SequenceData, split: LooSplit, seed: int, cooc: dict[str, Any],
    features: np.ndarray | None = None,
) -> dict[str, Any]:
    """Train every architecture with one seed, keep the best on validation, choose the blend weight."""
    results: dict[str, TrainResult] = {}
    for arch in job.archs:
        results[arch] = train_model(data, split, job.train.replace(arch=arch, seed=seed), item_features=features)
    arch = max(results, key=lambda a: results[a].valid["ndcg@10"])
    chosen = results[arch]
    blend = choose_blend(split, score_sequences(chosen.model, split.valid_inputs),
                         score_sequences(chosen.model, split.test_inputs), cooc, job.betas)
    return {"seed": seed, "arch": arch, **blend, "results": results}


def choose_blend(split: LooSplit, valid_scores: np.ndarray, test_scores: np.ndarray, cooc: dict[str, Any],
                 betas: tuple[float, ...] = DEFAULT_BETAS) -> dict[str, Any]:
    """The blend weight of model scores ``[U, V + 1]`` (valid and test inputs) with co-occurrence
    (:func:`_choose_cooc`), chosen on validation NDCG@10 (ties: the smaller weight); test only reported."""
    z_valid, z_test = _standardize(valid_scores), _standardize(test_scores)
    c_valid, c_test = _standardize(cooc["valid_scores"]), _standardize(cooc["test_scores"])
    by_beta = {
        beta: _metrics((1 - beta) * z_valid + beta * c_valid, split.valid_targets, split.valid_inputs)
        for beta in betas
    }
    beta = max(by_beta, key=lambda b: (by_beta[b]["ndcg@10"], -b))
    test = _metrics((1 - beta) * z_test + beta * c_test, split.test_targets, split.test_inputs)
    return {
        "beta": beta,
        "valid": by_beta[beta],
        "test": test,
        "blend_curve": {str(b): m["ndcg@10"] for b, m in by_beta.items()},
    }


def item_features(job: TrainJob, data: SequenceData) -> tuple[np.ndarray | None, dict[str, Any] | None]:
    """The item side information ``[V + 1, C]`` (each item's categories, weights summing to 1; the same matrix
    the job's interests read, :class:`operators.catalog.CategoryMatrix`) and what it was made of; ``(None,
    None)`` when ``train.item_features`` is off or there is no catalog."""
    path = catalog_path(job.catalog, job.data, job.fmt) if job.train.item_features else None
    matrix = CategoryMatrix.build(load_catalog(path), data.item_vocab) if path else None
    if matrix is None:
        return None, None
    covered = int((matrix.rows[1:].sum(axis=1) > 0).sum())
    return matrix.rows, {"catalog": path, "categories": matrix.n, "items_with_a_category": covered}


def _spread(runs: list[dict[str, Any]], split: str = "test") -> dict[str, dict[str, float]]:
    """:func:`model_export.metrics.spread` over the seeds' served models, per reported figure."""
    keys = ("recall@10", "ndcg@10", "mrr@10", "recall@5", "ndcg@5")
    return {key: spread(r[split][key] for r in runs) for key in keys}


def run_training(job: TrainJob, frame: pd.DataFrame | None = None) -> dict[str, Any]:
    """Train and export; writes the bundle, ``metrics.json`` and ``report.md`` into ``job.out``.

    ``frame`` (columns ``user_id, item_id, ts, event_type``) replaces reading ``job.data`` (the replay trains on
    the events before its cut-off)."""
    started = time.perf_counter()
    data, split = _load(job, frame)
    log.info("data: users=%d items=%d events=%d", data.n_users, data.n_items, data.n_events)
    features, side_info = item_features(job, data)
    if side_info is not None:
        log.info("item side information: %d categories of %s (%d of %d items have one)", side_info["categories"],
                 side_info["catalog"], side_info["items_with_a_category"], data.n_items)
    searched = None
    if job.search_trials:
        from model_export.search import run_search, searched_config

        searched = run_search(data, split, job.train.replace(arch=job.archs[0]), job.search_trials,
                              seed=job.seeds[0], timeout_s=job.search_timeout_s,
                              train=partial(train_model, item_features=features))
        log.info("search: best %s valid ndcg@10 %.4f", searched.best, searched.best_valid_ndcg10)
        job = replace(job, train=searched_config(job.train, searched.best))
    pop = popularity_scores(split.train, data.n_items)
    baselines: dict[str, Any] = {
        "popular": {
            "valid": _metrics(np.tile(pop, (data.n_users, 1)), split.valid_targets, split.valid_inputs),
            "test": _metrics(np.tile(pop, (data.n_users, 1)), split.test_targets, split.test_inputs),
        }
    }
    cooc = _choose_cooc(job, data, split, job.train.max_seq_len)
    baselines["cooccurrence"] = {
        "config": asdict(cooc["config"]),
        "valid": _metrics(cooc["valid_scores"], split.valid_targets, split.valid_inputs),
        "test": _metrics(cooc["test_scores"], split.test_targets, split.test_inputs),
    }
    train_started = time.perf_counter()
    runs = [_run_seed(job, data, split, seed, cooc, features) for seed in job.seeds]
    train_seconds = (time.perf_counter() - train_started) / len(job.seeds)
    best = max(runs, key=lambda r: r["valid"]["ndcg@10"])
    chosen: TrainResult = best["results"][best["arch"]]

    # Served co-occurrence: fitted on every known interaction (no target is held out in production).
    serve_cooc: Cooccurrence = fit_cooccurrence(data.sequences, data.n_items, cooc["config"])
    history = serve_cooc.cfg.history
    popular_items = [data.item_vocab[i - 1] for i in np.argsort(-pop, kind="stable")[:500] if i > 0]
    created = datetime.now(UTC)
    served = best["arch"] if best["beta"] == 0 else f"{best['arch']}+cooccurrence"
    version = f"{served.replace('+', '-')}-{data.fingerprint[:8]}-{created.strftime('%Y%m%dT%H%M%SZ')}"
    rng = np.random.default_rng(0)
    samples = [
        left_pad([split.test_inputs[i] for i in rng.integers(0, data.n_users, size=b)], job.train.max_seq_len)
        for b in (1, 7, 32)
    ]
    samples.append(np.zeros((2, job.train.max_seq_len), dtype=np.int64))  # cold-start rows
    models = {
        arch: {"valid": r.valid, "test": r.test, "best_epoch": r.best_epoch, "train_seconds": r.train_seconds}
        for arch, r in best["results"].items()
    }
    metrics: dict[str, Any] = {
        "protocol": job.protocol,
        "data": str(job.data),
        "format": job.fmt,
        "n_users": data.n_users,
        "n_items": data.n_items,
        "n_events": data.n_events,
        "served": served,
        "item_features": side_info,
        "valid": best["valid"],
        "test": best["test"],
        "baselines": baselines,
        "models": models,
        "blend": {"beta": best["beta"], "valid_ndcg@10_by_beta": best["blend_curve"]},
        "seeds": {
            "runs": [{"seed": r["seed"], "arch": r["arch"], "beta": r["beta"], "valid": r["valid"], "test": r["test"]}
                     for r in runs],
            "summary": _spread(runs),
            "valid_summary": _spread(runs, "valid"),
            "exported": {"seed": best["seed"], "arch": best["arch"], "beta": best["beta"],
                         "config": job.train.replace(arch=best["arch"], seed=best["seed"]).model_dump()},
        },
        "best_epoch": chosen.best_epoch,
        "curve": chosen.curve,
        "train_seconds": train_seconds,
    }
    bundle = export_bundle(
        chosen.model,
        job.out,
        version=version,
        item_vocab=data.item_vocab,
        n_candidates=job.n_candidates,
        training={
            "data_fingerprint": data.fingerprint,
            "data": str(job.data),
            "format": job.fmt,
            "protocol": job.protocol,
            "n_users": data.n_users,
            "n_items": data.n_items,
            "n_events": data.n_events,
            "created_at": created.isoformat(),
            "config": job.train.replace(arch=best["arch"], seed=best["seed"]).model_dump(),
            "cooccurrence": asdict(serve_cooc.cfg),
            "item_features": side_info,
            "best_epoch": chosen.best_epoch,
            "metrics": {"valid": best["valid"], "test": best["test"]},
        },
        popular_items=popular_items,
        sample_inputs=samples,
        cooc=(serve_cooc.neighbors, serve_cooc.weights, decay_weights(serve_cooc.cfg.decay, history)),
        beta=best["beta"],
    )
    metrics["model_version"] = bundle.version
    out = Path(job.out)
    if searched is not None:
        from model_export.search import summary, write_search

        write_search(searched, out)
        metrics["search"] = summary(searched)
    metrics["total_seconds"] = time.perf_counter() - started
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1), "utf-8")
    if job.report:
        curves = {f"{arch} seed {best['seed']}": r.curve for arch, r in best["results"].items()}
        write_report(metrics, curves, out)
    return metrics
