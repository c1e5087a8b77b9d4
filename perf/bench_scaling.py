"""How the per-event cost and the per-user state grow: catalog 10k / 100k / 1M items, history 50 / 200 / 1,000.

For each bench bundle (LRU, random weights, exported through the real export path; see
:mod:`perf.bench_bundle`) the step graph (what the job runs per event) and the full-sequence graph (what
rebuilds state) are timed at batch 1, one intra-op thread, and the packed state of one user with a full
window is measured in bytes. Writes JSON (``perf/results/scaling.json``) and a PNG beside it.

    python -m perf.bench_scaling [--catalogs 10000,100000,1000000] [--histories 50,200,1000]
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import numpy as np
from tqdm import tqdm

from operators.bundle import load_bundle
from operators.inference import OnnxModel
from operators.state import UserState, decode_state, encode_state
from perf.bench_bundle import bench_bundle
from perf.bench_onnx import bench

RESULTS = Path(__file__).resolve().parent / "results"
BUNDLES = Path(".streamrec/bench/bundles")


def state_bytes(history: int, state_size: int) -> int:
    """Bytes of one user's packed state with ``history`` events and the model state (round-trip checked)."""
    rng = np.random.default_rng(0)
    keys = rng.integers(1, 2**63, size=history, dtype=np.uint64)
    ts = np.sort(rng.integers(1_700_000_000_000, 1_700_100_000_000, size=history))
    model = rng.standard_normal(state_size).astype(np.float32)
    state = UserState(keys, ts, np.zeros(history, np.uint8), model, 7, int(ts[-1]))
    data = encode_state(state)
    back = decode_state(data)
    assert np.array_equal(back.keys, keys) and np.array_equal(back.ts, ts), "state layout round trip failed"
    return len(data)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--catalogs", default="10000,100000,1000000")
    p.add_argument("--histories", default="50,200,1000")
    p.add_argument("--iters", type=int, default=300)
    p.add_argument("--out", default=str(RESULTS / "scaling.json"))
    args = p.parse_args(argv)
    catalogs = [int(x) for x in args.catalogs.split(",")]
    histories = [int(x) for x in args.histories.split(",")]
    # the catalog sweep at a 200-event window, the history sweep at 10k items (window = history)
    cases = [(n, 200) for n in catalogs] + [(catalogs[0], h) for h in histories if h != 200]
    rows = []
    for n_items, hist in tqdm(cases, desc="scaling", unit="bundle"):
        # 1M items: fewer co-occurrence neighbours keep the bundle under ONNX's 2 GB protobuf limit
        path = bench_bundle(BUNDLES, n_items, seq_len=hist, neighbors=100 if n_items <= 100_000 else 20)
        bundle = load_bundle(path)
        model = OnnxModel(bundle, providers=["CPUExecutionProvider"])
        iters = max(args.iters * 10_000 // n_items, 30)
        step = bench(model, "step", 1, hist, iters)
        full = bench(model, "full", 1, hist, max(iters // 5, 20))
        size = sum(f.stat().st_size for f in path.iterdir())
        rows.append({"catalog_items": n_items, "history": hist, "bundle_mb": round(size / 2**20, 1),
                     "step_p50_us": round(step["p50_ms"] * 1000, 1), "step_p99_us": round(step["p99_ms"] * 1000, 1),
                     "full_p50_us": round(full["p50_ms"] * 1000, 1), "full_p99_us": round(full["p99_ms"] * 1000, 1),
                     "state_bytes_per_user": state_bytes(hist, bundle.state_size)})
        tqdm.write(json.dumps(rows[-1]))
    result = {"machine": {"arch": platform.machine(), "processor": platform.processor(), "python":
                          platform.python_version()}, "threads": 1, "batch": 1, "rows": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    _plot(rows, out.with_suffix(".png"))
    print(f"written to {out} and {out.with_suffix('.png')}")
    return 0


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    by_cat = sorted((r for r in rows if r["history"] == 200), key=lambda r: r["catalog_items"])
    a.loglog([r["catalog_items"] for r in by_cat], [r["step_p50_us"] for r in by_cat], "o-", label="step (per event)")
    a.loglog([r["catalog_items"] for r in by_cat], [r["full_p50_us"] for r in by_cat], "s--", label="full rebuild")
    a.set(xlabel="catalog items", ylabel="p50 µs, batch 1", title="model cost vs catalog (history 200)")
    a.legend()
    cat0 = min(r["catalog_items"] for r in rows)
    by_hist = sorted((r for r in rows if r["catalog_items"] == cat0), key=lambda r: r["history"])
    b.plot([r["history"] for r in by_hist], [r["step_p50_us"] for r in by_hist], "o-", label="step (per event)")
    b.plot([r["history"] for r in by_hist], [r["full_p50_us"] for r in by_hist], "s--", label="full rebuild")
    b.set(xlabel="history (events)", ylabel="p50 µs, batch 1", title=f"model cost vs history ({cat0:,} items)")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    raise SystemExit(main())
