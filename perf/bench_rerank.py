"""Cost of the re-ranking step alone (:class:`operators.rerank.Reranker`) per event, rule by rule.

The bench bundle's item embeddings, 100 candidates (the graph's top-C), 3 remembered lists of 10, a 200-item
history; median of ``--iters`` calls per configuration. Writes ``perf/results/rerank.json``.

    python -m perf.bench_rerank [--bundle DIR] [--candidates 100]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from operators.bundle import load_bundle
from operators.rerank import RerankConfig, Reranker, ShownHistory
from perf.bench_bundle import bench_bundle

RESULTS = Path(__file__).resolve().parent / "results"

CONFIGS = {
    "model order only": {"repeat_window": 0, "diversity_lambda": 0, "explain": False},
    "repeat suppression": {"diversity_lambda": 0, "explain": False},
    "explanations": {"repeat_window": 0, "diversity_lambda": 0},
    "defaults": {},
    "MMR diversity (lambda 0.3)": {"repeat_window": 0, "diversity_lambda": 0.3, "explain": False},
    "everything (lambda 0.3)": {"diversity_lambda": 0.3},
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--bundle", default=None, help="default: the 10,000-item bench bundle")
    p.add_argument("--candidates", type=int, default=100)
    p.add_argument("--iters", type=int, default=3000)
    p.add_argument("--out", default=str(RESULTS / "rerank.json"))
    args = p.parse_args(argv)
    bundle = load_bundle(args.bundle or bench_bundle(Path(".streamrec/bench/bundles"), 10_000))
    emb = bundle.item_embeddings()
    if emb is None:
        msg = f"bundle {bundle.path} has no item embeddings; re-export it"
        raise SystemExit(msg)
    rng = np.random.default_rng(0)
    items = rng.choice(np.arange(1, bundle.n_items + 1), args.candidates, replace=False)
    scores = (np.sort(rng.standard_normal(args.candidates))[::-1] * 2 + 5).astype(np.float32)
    hashes = rng.integers(0, 2**32, args.candidates).astype(np.uint32)
    shown = ShownHistory.empty()
    for _ in range(3):
        shown = shown.push(hashes[rng.choice(args.candidates, 10, replace=False)], 3)
    recent = rng.integers(1, bundle.n_items + 1, 200)
    rows = {}
    for name, knobs in CONFIGS.items():
        reranker = Reranker(RerankConfig(**knobs), emb, 10)
        for _ in range(200):
            out = reranker.rerank(items, scores, hashes, shown, recent)
        assert len(out.order) == 10 and len(set(out.order.tolist())) == 10, "re-ranking must return 10 distinct items"
        times = []
        for _ in range(args.iters):
            t0 = time.perf_counter_ns()
            reranker.rerank(items, scores, hashes, shown, recent)
            times.append(time.perf_counter_ns() - t0)
        rows[name] = {"p50_us": float(np.percentile(times, 50) / 1e3), "p99_us": float(np.percentile(times, 99) / 1e3),
                      "knobs": knobs}
        print(f"{name:<28} p50 {rows[name]['p50_us']:6.1f} us  p99 {rows[name]['p99_us']:6.1f} us")
    result = {"machine": platform.processor() or platform.machine(), "bundle": bundle.version,
              "candidates": args.candidates, "top_k": 10, "shown_lists": 3, "configs": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
