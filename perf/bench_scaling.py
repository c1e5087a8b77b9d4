"""How the per-event cost and the per-user state grow: catalog 10k / 100k / 1M items, history 50 / 200 / 1,000.

For each bench bundle (LRU, random weights on a clustered item table, 20 co-occurrence neighbours per item,
exported through the real export path; see :mod:`perf.bench_bundle`) the step (what the job runs per event:
the state graph, then scoring) and the full-sequence path (what rebuilds state) are timed at batch 1, one
thread, with exact scoring and with the ANN index (the crossover), the ANN candidates' recall@C against exact
scoring is measured on user vectors the model itself produces, and the packed state of one user with a full
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
from operators.scoring import ScorerConfig
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


def recall(exact: OnnxModel, ann: OnnxModel, bundle, rows: int, seed: int = 1) -> float:  # noqa: ANN001
    """Mean share of the exact top-C that the ANN path returns, over ``rows`` users whose vectors the model
    computes from histories drawn from one or two of the catalog's taste clusters (as real users' are)."""
    from deploy.harness.generator import GeneratorConfig, item_categories

    rng = np.random.default_rng(seed)
    clusters = item_categories(GeneratorConfig(n_items=bundle.n_items))
    by: dict[str, list[int]] = {}
    for k, item in enumerate(bundle.item_vocab, 1):
        by.setdefault(clusters.get(item, "?"), []).append(k)
    groups = [np.array(v) for v in by.values()]
    hits = 0
    length = min(bundle.max_seq_len, 30)
    for _ in range(rows):
        picks = [groups[g] for g in rng.integers(0, len(groups), size=2)]
        seq = np.concatenate([rng.choice(p, size=length // 2) for p in picks])[None, :]
        padded = np.zeros((1, bundle.max_seq_len), np.int64)
        padded[0, -length:] = seq[0, :length]
        _, e_items, state = exact.run_full(padded, padded)
        _, a_items, _ = ann.run_full(padded, padded)
        hits += len(set(e_items[0].tolist()) & set(a_items[0].tolist())) / e_items.shape[1]
    return round(hits / rows, 4)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--catalogs", default="10000,100000,1000000")
    p.add_argument("--histories", default="50,200,1000")
    p.add_argument("--iters", type=int, default=300)
    p.add_argument("--recall-rows", type=int, default=300)
    p.add_argument("--out", default=str(RESULTS / "scaling.json"))
    args = p.parse_args(argv)
    catalogs = [int(x) for x in args.catalogs.split(",")]
    histories = [int(x) for x in args.histories.split(",")]
    # the catalog sweep at a 200-event window, the history sweep at 10k items (window = history)
    cases = [(n, 200) for n in catalogs] + [(catalogs[0], h) for h in histories if h != 200]
    rows = []
    for n_items, hist in tqdm(cases, desc="scaling", unit="bundle"):
        path = bench_bundle(BUNDLES, n_items, seq_len=hist, neighbors=20)
        bundle = load_bundle(path)
        exact = OnnxModel(bundle, providers=["CPUExecutionProvider"], scorer_cfg=ScorerConfig(exact_max_items=2**62))
        ann = OnnxModel(bundle, providers=["CPUExecutionProvider"], scorer_cfg=ScorerConfig(exact_max_items=0))
        served = OnnxModel(bundle, providers=["CPUExecutionProvider"])
        iters = args.iters
        step = {"exact": bench(exact, "step", 1, hist, max(iters * 10_000 // n_items, 30)),
                "ann": bench(ann, "step", 1, hist, iters)}
        full = bench(served, "full", 1, hist, max(iters // 5, 20))
        size = sum(f.stat().st_size for f in path.iterdir())
        rows.append({"catalog_items": n_items, "history": hist, "bundle_mb": round(size / 1e6, 1),
                     "bundle_bytes_per_item": round(size / n_items, 1), "served_scoring": served.scorer.mode,
                     **{f"step_{m}_p50_us": round(s["p50_ms"] * 1000, 1) for m, s in step.items()},
                     **{f"step_{m}_p99_us": round(s["p99_ms"] * 1000, 1) for m, s in step.items()},
                     "step_p50_us": round(step[served.scorer.mode]["p50_ms"] * 1000, 1),
                     "full_p50_us": round(full["p50_ms"] * 1000, 1), "full_p99_us": round(full["p99_ms"] * 1000, 1),
                     "ann_recall_at_c": recall(exact, ann, bundle, args.recall_rows),
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
    for mode, style in (("exact", "o-"), ("ann", "d-")):
        a.loglog([r["catalog_items"] for r in by_cat], [r[f"step_{mode}_p50_us"] for r in by_cat], style,
                 label=f"step, {mode} scoring")
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
