"""ONNX inference latency of a bundle at batch 1, 8 and 32 (one intra-op thread, CPU unless told otherwise).

    python -m perf.bench_onnx [--bundle DIR] [--providers CUDAExecutionProvider,CPUExecutionProvider]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from flink_jobs.demo import bundle_or_demo
from model_export.bundle import load_bundle
from operators.inference import OnnxScorer
from operators.stats import latency_summary

RESULTS = Path(__file__).resolve().parent / "results"


def bench(scorer: OnnxScorer, batch: int, iters: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    n, length = scorer.bundle.n_items, scorer.bundle.max_seq_len
    inputs = [rng.integers(1, n + 1, size=(batch, length)).astype(np.int64) for _ in range(16)]
    for x in inputs:
        scorer.score_batch(x)  # warm-up
    times = []
    for i in range(iters):
        x = inputs[i % len(inputs)]
        t0 = time.perf_counter_ns()
        scores, items = scorer.score_batch(x)
        times.append((time.perf_counter_ns() - t0) / 1e6)
        assert scores.shape == (batch, scorer.bundle.n_candidates) and items.shape == scores.shape
    summary = latency_summary(times)
    summary["events_per_s"] = batch * 1000.0 / summary["p50_ms"]
    summary["per_event_p50_ms"] = summary["p50_ms"] / batch
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--bundle", default=None, help="default: the demo bundle (trained if missing)")
    p.add_argument("--providers", default="CPUExecutionProvider")
    p.add_argument("--iters", type=int, default=2000)
    p.add_argument("--out", default=str(RESULTS / "onnx.json"))
    args = p.parse_args(argv)
    bundle = load_bundle(bundle_or_demo(args.bundle))
    scorer = OnnxScorer(bundle, providers=args.providers.split(","))
    result = {
        "bundle": bundle.version,
        "n_items": bundle.n_items,
        "max_seq_len": bundle.max_seq_len,
        "n_candidates": bundle.n_candidates,
        "provider": scorer.active_provider,
        "machine": platform.machine(),
        "batches": {str(b): bench(scorer, b, args.iters if b < 32 else args.iters // 4) for b in (1, 8, 32)},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    for b, s in result["batches"].items():
        print(f"batch {b:>2}: p50 {s['p50_ms']:.3f} ms  p99 {s['p99_ms']:.3f} ms  ({s['events_per_s']:.0f} events/s)")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
