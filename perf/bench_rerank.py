"""Cost of the whole re-ranking step per event, as the job runs it, rule by rule.

The step is :meth:`operators.serving.ServingCore._top`: the graph's top-C candidates -> item rules mask ->
interest and trending bonus -> repeat suppression, diversity, category cap (:class:`operators.rerank.Reranker`)
-> the user's shown history -> reasons; what the job's ``rerank_us`` gauge times. The bench bundle (10,000
items, 100 candidates), the generator's catalog (20 categories), a user with 200 events and 3 remembered lists,
a trending table of 50 items; median and p99 of ``--iters`` calls per configuration, and the defaults once more
with the caches evicted before every call (as in the job, where the model graph runs in between). Writes
``perf/results/rerank.json``.

    python -m perf.bench_rerank [--bundle DIR] [--iters 3000]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from operators.bundle import load_bundle
from operators.inference import OnnxModel
from operators.interests import InterestConfig
from operators.rerank import RerankConfig
from operators.serving import ServingCore
from operators.state import decode_state
from operators.trending import TrendingBoard, TrendingConfig, bump
from perf.bench_bundle import bench_bundle

RESULTS = Path(__file__).resolve().parent / "results"
TS = 1_767_225_600_000
OFF = {"repeat_window": 0, "diversity_lambda": 0, "explain": False, "neighbor_cold_start": 0}

CONFIGS: dict[str, tuple[dict, dict, dict]] = {  # rerank, interests, trending knobs
    "model order only": (OFF, {"enabled": False}, {"enabled": False}),
    "repeat suppression": ({**OFF, "repeat_window": 3}, {"enabled": False}, {"enabled": False}),
    "explanations": ({**OFF, "explain": True}, {"enabled": False}, {"enabled": False}),
    "interests": (OFF, {}, {"enabled": False}),
    "trending boost": (OFF, {"enabled": False}, {}),
    "category cap 3": ({**OFF, "category_cap": 3}, {"enabled": False}, {"enabled": False}),
    "defaults": ({}, {}, {}),
    "defaults + category cap 3": ({"category_cap": 3}, {}, {}),
    "defaults + MMR (lambda 0.3)": ({"diversity_lambda": 0.3}, {}, {}),
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--bundle", default=None, help="default: the 10,000-item bench bundle")
    p.add_argument("--iters", type=int, default=3000)
    p.add_argument("--out", default=str(RESULTS / "rerank.json"))
    args = p.parse_args(argv)
    from deploy.harness.generator import GeneratorConfig, item_categories

    bundle = load_bundle(args.bundle or bench_bundle(Path(".streamrec/bench/bundles"), 10_000))
    if bundle.item_embeddings() is None:
        msg = f"bundle {bundle.path} has no item embeddings; re-export it"
        raise SystemExit(msg)
    model = OnnxModel(bundle, providers=["CPUExecutionProvider"])
    catalog = {i: frozenset({c}) for i, c in item_categories(GeneratorConfig(n_items=bundle.n_items)).items()}
    rng = np.random.default_rng(0)
    board = TrendingBoard(TrendingConfig())
    for n in range(5000):
        item = bundle.item_vocab[int(rng.zipf(1.3)) % bundle.n_items]
        board.observe(item, bump(board.items.get(item), TS + n, 1.0, 3_600_000))
    steps = {}
    for name, (rerank, interests, trending) in CONFIGS.items():
        core = ServingCore(model, top_k=10, history_len=200, input_topic="bench", rerank=RerankConfig(**rerank),
                           catalog=catalog, interests=InterestConfig(**interests),
                           trending=TrendingConfig(**trending))
        core.control(board.message(0, 1))
        stored = None
        for n in range(203):  # 200 events in the window, 3 lists remembered
            item = bundle.item_vocab[int(rng.integers(0, bundle.n_items))]
            payload = json.dumps({"user_id": "u", "item_id": item, "event_type": "click", "ts": TS + n * 1000})
            stored = core.process("u", payload.encode(), 0, n, TS, stored, TS + 10**9).state
        state = decode_state(stored)
        indices = core.index.lookup(state.keys)
        inp = core._input(indices, state)
        scores, items, _ = core.model.run_step(state.model[None, :], np.array([0]), np.zeros((1, core.recent_len),
                                               np.int64), core._exclude(inp, 0)[None, :])
        shown = state.shown

        def step(state=state, scores=scores[0], items=items[0], indices=indices, inp=inp, core=core, shown=shown
                 ) -> list[str]:
            state.shown = shown  # the step records the list in state.shown: start from the same history
            return core._top(scores, items, state, inp.sequence, indices, inp.reshown)[0]

        for _ in range(200):
            picked = step()
        assert len(picked) == 10 and len(set(picked)) == 10, "re-ranking must return 10 distinct items"
        steps[name] = step
    # rounds over all configurations in turn, so that a noisy stretch of the machine hits each of them alike
    times: dict[str, list[int]] = {name: [] for name in steps}
    rounds = 10
    for _ in range(rounds):
        for name, step in steps.items():
            for _ in range(args.iters // rounds):
                t0 = time.perf_counter_ns()
                step()
                times[name].append(time.perf_counter_ns() - t0)
    # in the job the step runs right after the model graph (megabytes of weights) and the JVM's work: its code and
    # data are out of the caches at every event; the same step with the caches evicted between calls shows that
    evict = np.ones(8_000_000)  # 64 MB
    cold: list[int] = []
    for _ in range(max(args.iters // 10, 100)):
        evict[::512] += 1.0  # one write per 4 KB page: every line of the caches replaced
        evict.sum()
        t0 = time.perf_counter_ns()
        steps["defaults"]()
        cold.append(time.perf_counter_ns() - t0)
    rows = {}
    for name, (rerank, interests, trending) in CONFIGS.items():
        rows[name] = {"p50_us": float(np.percentile(times[name], 50) / 1e3),
                      "p99_us": float(np.percentile(times[name], 99) / 1e3),
                      "rerank": rerank, "interests": interests, "trending": trending}
        print(f"{name:<30} p50 {rows[name]['p50_us']:6.1f} us  p99 {rows[name]['p99_us']:6.1f} us")
    rows["defaults, caches evicted before each call"] = {
        "p50_us": float(np.percentile(cold, 50) / 1e3), "p99_us": float(np.percentile(cold, 99) / 1e3),
        **{k: v for k, v in rows["defaults"].items() if not k.endswith("_us")}}
    print(f"{'defaults, caches evicted':<30} p50 {rows['defaults, caches evicted before each call']['p50_us']:6.1f} us")
    result = {"machine": platform.processor() or platform.machine(), "bundle": bundle.version,
              "candidates": bundle.n_candidates, "top_k": 10, "shown_lists": 3, "history": 200,
              "categories": len({c for s in catalog.values() for c in s}), "trending_items": 50,
              "step": "ServingCore._top (what the job's rerank_us gauge times)", "configs": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
