"""Model cost per event: the step graph (recurrent bundles) and the full-sequence graph, batch 1/8/32,
one intra-op thread, CPU unless told otherwise. Inputs are random histories of the bundle's catalog.

    python -m perf.bench_onnx [--bundle DIR] [--history 200] [--providers CPUExecutionProvider]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from deploy.harness.demo_bundle import bundle_or_demo
from operators.bundle import load_bundle
from operators.inference import OnnxModel
from operators.stats import latency_summary

RESULTS = Path(__file__).resolve().parent / "results"


def _inputs(model: OnnxModel, batch: int, history: int, rng: np.random.Generator) -> dict:
    bundle = model.bundle
    seq = rng.integers(1, bundle.n_items + 1, size=(batch, history)).astype(np.int64)
    padded = np.zeros((batch, bundle.max_seq_len), dtype=np.int64)
    tail = seq[:, -bundle.max_seq_len :]
    padded[:, bundle.max_seq_len - tail.shape[1] :] = tail
    out = {"seq": padded, "exclude": seq}
    if bundle.recurrent:
        out["state"] = rng.standard_normal((batch, bundle.state_size)).astype(np.float32) * 0.1
        out["item"] = seq[:, -1].copy()
        out["recent"] = seq[:, -bundle.recent_len :]
    return out


def bench(model: OnnxModel, path: str, batch: int, history: int, iters: int, seed: int = 0) -> dict:
    """p50/p99 per call and per event of one graph; checks every output's shape inside the timed loop."""
    rng = np.random.default_rng(seed)
    inputs = [_inputs(model, batch, history, rng) for _ in range(16)]
    c = model.bundle.n_candidates

    def call(x: dict):  # noqa: ANN202
        if path == "step":
            return model.run_step(x["state"], x["item"], x["recent"], x["exclude"])
        return model.run_full(x["seq"], x["exclude"])

    for x in inputs:
        call(x)  # warm-up
    times = []
    for i in range(iters):
        x = inputs[i % len(inputs)]
        t0 = time.perf_counter_ns()
        scores, items, _ = call(x)
        times.append((time.perf_counter_ns() - t0) / 1e6)
        assert scores.shape == (batch, c) and items.shape == (batch, c)
    summary = latency_summary(times)
    summary["per_event_p50_us"] = summary["p50_ms"] * 1000 / batch
    summary["events_per_s"] = batch * 1000.0 / summary["p50_ms"]
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--bundle", default=None, help="default: the demo bundle (trained if missing)")
    p.add_argument("--providers", default="CPUExecutionProvider")
    p.add_argument("--history", type=int, default=200, help="events in each user's window")
    p.add_argument("--iters", type=int, default=2000)
    p.add_argument("--batches", default="1,8,32", help="comma-separated batch sizes")
    p.add_argument("--out", default=str(RESULTS / "onnx.json"))
    args = p.parse_args(argv)
    bundle = load_bundle(bundle_or_demo(args.bundle))
    model = OnnxModel(bundle, providers=args.providers.split(","))
    paths = ["step", "full"] if bundle.recurrent else ["full"]
    result = {
        "bundle": bundle.version, "n_items": bundle.n_items, "max_seq_len": bundle.max_seq_len,
        "n_candidates": bundle.n_candidates, "history": args.history, "provider": model.active_provider,
        "machine": platform.machine(),
        "graphs": {path: {str(b): bench(model, path, b, args.history, args.iters if b < 32 else args.iters // 4)
                          for b in (int(x) for x in args.batches.split(","))} for path in paths},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    for path, batches in result["graphs"].items():
        for b, s in batches.items():
            print(f"{path:>4} batch {b:>2}: p50 {s['p50_ms']:.3f} ms  p99 {s['p99_ms']:.3f} ms  "
                  f"({s['per_event_p50_us']:.0f} us/event, {s['events_per_s']:.0f} events/s)")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
