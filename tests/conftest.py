"""Shared fixtures: a small generated world and a really trained, exported bundle; and the test tiers.

Tiers (``make test-fast`` runs the first, ``make test`` both): a test is marked ``slow`` when it needs a trained
model (the ``trained_bundle`` fixture, directly or through another fixture), a real broker or Flink
(``tests/integration``), or trains or exports a model itself (``@pytest.mark.slow`` on the test). Everything
else is the fast tier: no training, no JVM, no Maven-built artefacts.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy.harness.generator import GeneratorConfig, generate_events, split_by_time, write_catalog, write_jsonl

WORLD = GeneratorConfig(n_users=600, n_items=300, n_clusters=12, sessions_per_user=3.0, seed=5)


SLOW_FIXTURES = frozenset({"trained_bundle", "kafka"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:  # noqa: ARG001
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if fixtures & SLOW_FIXTURES or "integration" in item.path.parts:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def world_events() -> list[dict]:
    """A deterministic generated stream (ts-sorted)."""
    return generate_events(WORLD)


@pytest.fixture(scope="session")
def trained_bundle(tmp_path_factory: pytest.TempPathFactory, world_events: list[dict]) -> Path:
    """Train a small LRU model on the first 80% of the stream and export it as a bundle (with the item side
    information of the world's catalog, as ``streamrec train --catalog`` does)."""
    from model_export.baselines import CooccurrenceConfig
    from model_export.pipeline import TrainJob, run_training
    from model_export.train import TrainConfig

    root = tmp_path_factory.mktemp("bundle")
    history, _ = split_by_time(world_events)
    data = write_jsonl(history, root / "train.jsonl")
    run_training(
        TrainJob(
            data=str(data),
            out=str(root / "bundle"),
            fmt="events",
            catalog=str(write_catalog(WORLD, root / "catalog.csv")),
            n_candidates=120,
            archs=("lru",),
            seeds=(42,),
            train=TrainConfig(max_seq_len=20, hidden=32, max_epochs=12, patience=3, lr=1e-3, progress=False),
            # distance- and direction-weighted, as streamrec train picks it: every integration test serves it
            cooc_grid=(CooccurrenceConfig(window=5, decay=0.7, alpha=0.5, gap_decay=0.9, backward=0.5, top_n=50),),
            betas=(0.3, 0.6),  # always blended, so the co-occurrence inputs of the graphs are exercised
        )
    )
    return root / "bundle"
