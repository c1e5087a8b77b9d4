"""From an event log to a served-ready bundle: load, split, train, evaluate, export, report."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from model_export.data import DataFormat, build_sequences, k_core, load_interactions, loo_split
from model_export.export import export_bundle
from model_export.metrics import DEFAULT_KS, metrics_from_ranks, target_ranks
from model_export.train import TrainConfig, left_pad, popularity_scores, train_sasrec

__all__ = ["TrainJob", "run_training"]

log = logging.getLogger(__name__)


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


def run_training(job: TrainJob) -> dict[str, Any]:
    """Train and export; writes ``<out>/`` (the bundle) and ``<out>/metrics.json``. Returns the metrics."""
    started = time.perf_counter()
    df = load_interactions(job.data, job.fmt)
    df = k_core(df, job.min_count)
    data = build_sequences(df, dedupe=job.fmt == "events")
    data_5core = data
    if job.fmt == "events":
        # Deduplication can leave users below the threshold: re-apply the core on the sequences' events.
        keep = [u for u, s in zip(data.user_ids, data.sequences, strict=True) if len(s) >= 3]
        data_5core = build_sequences(df[df["user_id"].isin(set(keep))], dedupe=True)
    data = data_5core
    split = loo_split(data)
    log.info("data: users=%d items=%d events=%d", data.n_users, data.n_items, data.n_events)

    pop = popularity_scores(split.train, data.n_items)
    pop_scores = np.tile(pop, (1, 1))
    baselines = {
        "popular": {
            split_name: metrics_from_ranks(
                target_ranks(np.broadcast_to(pop_scores, (len(t), pop.size)), t, inputs), DEFAULT_KS
            )
            for split_name, inputs, t in (
                ("valid", split.valid_inputs, split.valid_targets),
                ("test", split.test_inputs, split.test_targets),
            )
        }
    }
    result = train_sasrec(data, split, job.train)
    popular_items = [data.item_vocab[i - 1] for i in np.argsort(-pop, kind="stable")[:500] if i > 0]
    created = datetime.now(UTC)
    version = f"sasrec-{data.fingerprint[:8]}-{created.strftime('%Y%m%dT%H%M%SZ')}"
    rng = np.random.default_rng(0)
    samples = [
        left_pad([split.test_inputs[i] for i in rng.integers(0, data.n_users, size=b)], job.train.max_seq_len)
        for b in (1, 7, 32)
    ]
    samples.append(np.zeros((2, job.train.max_seq_len), dtype=np.int64))  # cold start rows
    metrics: dict[str, Any] = {
        "protocol": job.protocol,
        "data": str(job.data),
        "format": job.fmt,
        "n_users": data.n_users,
        "n_items": data.n_items,
        "n_events": data.n_events,
        "valid": result.valid,
        "test": result.test,
        "baselines": baselines,
        "best_epoch": result.best_epoch,
        "curve": result.curve,
        "train_seconds": result.train_seconds,
    }
    bundle = export_bundle(
        result.model,
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
            "config": result.summary()["config"],
            "best_epoch": result.best_epoch,
            "metrics": {"valid": result.valid, "test": result.test},
        },
        popular_items=popular_items,
        sample_inputs=samples,
    )
    metrics["model_version"] = bundle.version
    metrics["total_seconds"] = time.perf_counter() - started
    Path(job.out, "metrics.json").write_text(json.dumps(metrics, indent=1), "utf-8")
    return metrics
