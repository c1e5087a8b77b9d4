"""Where the job's Python time goes per event, without Flink: :class:`operators.serving.ServingCore` driven
exactly as the job drives it (raw record bytes + stored state bytes in, state bytes + record out), on the bench
bundle and the generator's catalog, users with full windows. Prints and writes the job's own gauges (µs per
event, averaged over the same events) and, with ``--cprofile``, the top functions.

    python -m perf.profile_serving [--items 10000] [--events 4000] [--users 500] [--micro-batch 1] [--gap-ms 0]

``--gap-ms N`` sleeps N ms before each event (the timing excludes the sleep): events spaced as a stream at
``1000 / N`` events/s delivers them, which is how the job meets them below saturation. On the 2-core VM the same
events then cost 2-4x more each than back to back (every part alike, parse included: after an idle gap the
vCPU runs the same code slower, and bursts of 20 recover only part of it), which is what the job's gauges read
at low rates (``perf/README.md``, "Idle gaps").
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import time
from pathlib import Path

import numpy as np

from deploy.harness.generator import GeneratorConfig, item_categories
from operators.bundle import load_bundle
from operators.gc_watch import pauses, settle
from operators.inference import OnnxModel
from operators.serving import LIST, Deferred, ServingCore
from perf.bench_bundle import bench_bundle

RESULTS = Path(__file__).resolve().parent / "results"
BUNDLES = Path(".streamrec/bench/bundles")


def _records(n: int, users: int, items: int, seed: int, t0: int) -> list[tuple[str, bytes]]:
    rng = np.random.default_rng(seed)
    u = rng.integers(0, users, size=n)
    i = np.minimum(rng.zipf(1.2, size=n), items) - 1
    pairs = enumerate(zip(u.tolist(), i.tolist(), strict=True))
    return [(f"bu{a}", f'{{"user_id":"bu{a}","item_id":"i{b}","event_type":"view","event_id":"e{k}-{seed}",'
                        f'"ts":{t0 + k}}}'.encode()) for k, (a, b) in pairs]


def run(items: int, events: int, users: int, history: int, micro_batch: int, profile: bool,
        neighbors: int = 100, settle_gc: bool = True, gap_ms: float = 0.0, hidden: int | None = None,
        n_blocks: int | None = None) -> dict:
    path = bench_bundle(BUNDLES, items, neighbors=neighbors, hidden=hidden, n_blocks=n_blocks)
    bundle = load_bundle(path)
    catalog = {i: frozenset({c}) for i, c in item_categories(GeneratorConfig(n_items=bundle.n_items)).items()}
    core = ServingCore(OnnxModel(bundle, providers=["CPUExecutionProvider"]), top_k=10, history_len=history,
                       input_topic="bench", catalog=catalog)
    store: dict[str, bytes] = {}
    now = int(time.time() * 1000)
    warm = _records(users * history, users, items, 1, now - 10 * users * history)

    def drive(records: list[tuple[str, bytes]], gap_s: float = 0.0) -> int:
        batch: list[Deferred] = []
        lists = 0
        for off, (key, payload) in enumerate(records):
            if gap_s:
                pause(gap_s)
            if micro_batch > 1 and any(d.key == key for d in batch):
                lists += _flush(batch)
                batch = []
            out = core.process(key, payload, 0, off, now, store.get(key), now, defer=micro_batch > 1)
            if isinstance(out, Deferred):
                store[key] = out.state
                batch.append(out)
                if len(batch) >= micro_batch:
                    lists += _flush(batch)
                    batch = []
                continue
            if out.state:
                store[key] = out.state
            lists += out.kind == LIST
        return lists + _flush(batch)

    def _flush(batch: list[Deferred]) -> int:
        outs = core.run_deferred(batch, now)
        for d, o in zip(batch, outs, strict=True):
            store[d.key] = o.state
        return sum(o.kind == LIST for o in outs)

    drive(warm)
    if settle_gc:  # as the job's worker does once it has loaded (operators/gc_watch.py)
        settle()
    core.take_timing()
    gc_pauses = pauses().reader()
    records = _records(events, users, items, 2, now - events)
    prof = cProfile.Profile() if profile else None
    paused = [0]

    def pause(seconds: float) -> None:  # not counted in the wall time
        t = time.perf_counter_ns()
        time.sleep(seconds)
        paused[0] += time.perf_counter_ns() - t

    t0 = time.perf_counter_ns()
    if prof:
        prof.enable()
    lists = drive(records, gap_ms / 1e3)
    if prof:
        prof.disable()
    wall = (time.perf_counter_ns() - t0 - paused[0]) / events / 1e3
    timing = core.take_timing()
    out = {"bundle": path.name, "items": items, "neighbors": neighbors,
           "scoring": core.model.scorer.mode if core.model.scorer else "graph",
           "events": events, "lists": lists, "micro_batch": micro_batch, "gap_ms": gap_ms, "wall_us_per_event": wall,
           "per_event_us": {k: round(v, 1) for k, v in timing.items() if k != "events"},
           "state_bytes_mean": float(np.mean([len(v) for v in store.values()])),
           "gc": {"settled": settle_gc, **gc_pauses.take()}}
    if prof:
        stats = pstats.Stats(prof)
        stats.sort_stats("tottime").print_stats(25)
        stats.sort_stats("cumulative").print_stats("operators", 40)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=4000)
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--history", type=int, default=200)
    parser.add_argument("--micro-batch", type=int, default=1)
    parser.add_argument("--neighbors", type=int, default=100, help="co-occurrence neighbours per item")
    parser.add_argument("--hidden", type=int, default=None, help="bundle width (default: train's)")
    parser.add_argument("--blocks", type=int, default=None, help="its recurrent blocks (default: streamrec train's)")
    parser.add_argument("--cprofile", action="store_true")
    parser.add_argument("--gap-ms", type=float, default=0.0,
                        help="sleep before each event (not timed): events spaced as a stream below saturation")
    parser.add_argument("--no-gc-settle", action="store_true",
                        help="leave the garbage collector as CPython starts it (the job settles it at open)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    result = run(args.items, args.events, args.users, args.history, args.micro_batch, args.cprofile, args.neighbors,
                 settle_gc=not args.no_gc_settle, gap_ms=args.gap_ms, hidden=args.hidden, n_blocks=args.blocks)
    print(json.dumps(result, indent=1))
    if result["lists"] != args.events:
        raise SystemExit(f"expected {args.events} lists, got {result['lists']}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
