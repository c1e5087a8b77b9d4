"""Bench bundles: the LRU architecture at a chosen catalog size, exported through the real export path.

Weights are random (seeded): the benchmarks measure cost, which does not depend on what the weights learned
(every graph computes the same operations whatever their values). Accuracy is measured by ``streamrec train``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from model_export.settings import TrainConfig
from operators.bundle import load_bundle
from operators.errors import BundleError

__all__ = ["bench_bundle"]


def bench_bundle(root: Path, n_items: int, *, hidden: int | None = None, n_blocks: int | None = None,
                 seq_len: int = 200, recent: int = 20, neighbors: int = 100, n_candidates: int = 100,
                 seed: int = 0) -> Path:
    """A cached bench bundle of ``n_items`` items (exported once, then reused), of the architecture
    ``streamrec train`` serves by default (``TrainConfig``'s hidden size and blocks, unless given).

    The item table is clustered as a trained one is (the generator's taste clusters: each item its cluster's
    centre plus noise), so that an ANN index over it is measured on realistic geometry, not on random vectors;
    every bench bundle carries the ANN index (served above :data:`operators.scoring.EXACT_MAX_ITEMS`; the
    scaling bench times both paths at every size to find the crossover)."""
    defaults = TrainConfig()
    hidden = defaults.hidden if hidden is None else hidden
    n_blocks = defaults.n_blocks if n_blocks is None else n_blocks
    out = root / f"lru3-{n_items}-d{hidden}-b{n_blocks}-l{seq_len}-n{neighbors}-ann"
    try:
        load_bundle(out)
        return out
    except BundleError:
        pass
    import torch

    from model_export.data import left_pad
    from model_export.export import export_bundle
    from model_export.model import SASRecConfig, build_model, decay_weights

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    from deploy.harness.generator import GeneratorConfig, item_categories

    model = build_model(SASRecConfig(n_items=n_items, max_seq_len=seq_len, hidden=hidden, n_blocks=n_blocks,
                                     dropout=0.0, arch="lru")).eval()
    clusters = item_categories(GeneratorConfig(n_items=n_items))
    names = sorted(set(clusters.values()))
    centres = rng.standard_normal((len(names), hidden)).astype(np.float32)
    of = {name: k for k, name in enumerate(names)}
    cluster = np.array([of[clusters[f"i{i}"]] for i in range(n_items)])
    table = centres[cluster] + 0.5 * rng.standard_normal((n_items, hidden)).astype(np.float32)
    with torch.no_grad():
        model.item_emb.weight[1:] = torch.from_numpy(0.1 * table)
    nbr = rng.integers(1, n_items + 1, size=(n_items + 1, neighbors)).astype(np.int64)
    weights = np.sort(rng.random((n_items + 1, neighbors)).astype(np.float32), axis=1)[:, ::-1].copy()
    nbr[0], weights[0] = 0, 0.0
    vocab = [f"i{i}" for i in range(n_items)]
    samples = [left_pad([rng.integers(1, n_items + 1, size=int(rng.integers(1, seq_len))) for _ in range(b)],
                        seq_len) for b in (1, 7)]
    export_bundle(model, out, version=f"bench-lru-{n_items}", item_vocab=vocab, n_candidates=n_candidates,
                  training={"note": "random weights, for cost benchmarks only"}, popular_items=vocab[:500],
                  sample_inputs=samples, cooc=(nbr, weights, decay_weights(0.7, recent)), beta=0.3,
                  ann_index=True)
    return out
