"""The demo bundle: an LRU model trained on a generated world, reused while it verifies. The demo serves it,
and the benchmarks and the fault suite serve it when not given a bundle."""

from __future__ import annotations

import logging
from pathlib import Path

from deploy.harness.extras import require
from deploy.harness.generator import GeneratorConfig, generate_events, split_by_time, write_jsonl
from deploy.harness.paths import runtime_dir
from operators.bundle import load_bundle
from operators.errors import BundleError

__all__ = ["DEMO_WORLD", "ensure_demo_bundle", "bundle_or_demo"]

log = logging.getLogger("streamrec.demo")

DEMO_WORLD = GeneratorConfig(n_users=3_000, n_items=1_000)
"""The generated world the demo model is trained on and the demo replays."""
DEMO_TRAINING = {"max_epochs": 10, "patience": 3, "max_train_seconds": 240.0}
"""The demo's quick training (one seed): ``streamrec train``'s defaults (``TrainConfig``), fewer epochs."""


def ensure_demo_bundle(home: Path, *, bundle: str | None = None, retrain: bool = False,
                       world: GeneratorConfig = DEMO_WORLD, history: list[dict] | None = None) -> Path:
    """Reuse the demo bundle if it verifies; otherwise train one on the generated history
    (the first 80% of ``world`` by event time; pass it as ``history`` when already generated)."""
    path = Path(bundle) if bundle else home / "models" / "demo"
    if not retrain:
        try:
            load_bundle(path)
            log.info("using model bundle %s", path)
            return path
        except BundleError as err:
            if bundle:
                raise
            log.info("no usable demo bundle (%s); training one", err)
    require("torch", "training the demo model (none verifies at " + str(path) + "; or pass --bundle)")
    if history is None:
        history, _ = split_by_time(generate_events(world))
    from model_export.pipeline import TrainJob, run_training

    data = write_jsonl(history, home / "data" / "demo-train.jsonl")
    print(f"training an LRU model on {len(history)} generated events -> {path}", flush=True)
    from model_export.train import TrainConfig

    train = TrainConfig(**DEMO_TRAINING)
    metrics = run_training(TrainJob(data=str(data), out=str(path), fmt="events", seeds=(train.seed,), train=train))
    base = metrics["baselines"]
    print(
        f"trained {metrics['model_version']}: test ndcg@10={metrics['test']['ndcg@10']:.4f} "
        f"recall@10={metrics['test']['recall@10']:.4f} (popularity {base['popular']['test']['ndcg@10']:.4f}, "
        f"co-occurrence {base['cooccurrence']['test']['ndcg@10']:.4f}) in {metrics['train_seconds']:.1f}s; "
        f"report: {path / 'report.md'}",
        flush=True,
    )
    return path


def bundle_or_demo(path: str | None) -> str:
    """``path`` if given, else the demo bundle (trained first if missing): the benchmarks' default."""
    return path if path is not None else str(ensure_demo_bundle(runtime_dir()))
