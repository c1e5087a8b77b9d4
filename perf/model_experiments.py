"""Model-quality experiments on MovieLens LOO-5core: train one variant of the sequence model for a few seeds and
report it alone and blended with co-occurrence, everything chosen on validation as ``streamrec train`` chooses it
(:mod:`model_export.pipeline`: the same split, item side information, co-occurrence grid and blend weight search).

    python -m perf.model_experiments --variant searched --seeds 42,43,44 \\
        --out perf/results/model-experiments/searched.json
    python -m perf.model_experiments --table perf/results/model-experiments/*.json

Per seed: valid and test metrics of the model alone and of the blend, the blend weight, the best epoch and the
training seconds; then mean and standard error over the seeds, and the seeds' ensemble (the mean of the models'
standardised scores, blended the same way). The JSON is rewritten after every seed. Test is only reported.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from model_export.data import LooSplit
from model_export.metrics import spread
from model_export.pipeline import TrainJob, _choose_cooc, _load, _metrics, _standardize, choose_blend, item_features
from model_export.train import TrainConfig, score_sequences, train_model

log = logging.getLogger(__name__)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-latest-small"
SEARCHED = {"hidden": 128, "n_blocks": 1, "dropout": 0.254, "lr": 3.86e-3, "weight_decay": 1.76e-7,
            "max_seq_len": 100, "patience": 10}
"""The best trial of the Optuna search (perf/results/search/search.md), rounded."""

PREVIOUS = {"max_seq_len": 50, "hidden": 64, "n_blocks": 2, "dropout": 0.2, "lr": 2e-3, "weight_decay": 0.0,
            "item_features": False}
"""``streamrec train``'s defaults before the search (the ``baseline`` variant)."""

VARIANTS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "baseline": PREVIOUS,
    "searched": {**SEARCHED, "item_features": False},
    "label-smoothing": {**SEARCHED, "label_smoothing": 0.1, "item_features": False},
    "genres": {**SEARCHED, "item_features": True},
    "genres-label-smoothing": {**SEARCHED, "label_smoothing": 0.1, "item_features": True},
    "hidden256": {**SEARCHED, "hidden": 256, "item_features": False},
}
"""``TrainConfig`` overrides per variant (``defaults``: none, today's ``streamrec train``; ``item_features``: the
genres of ``movies.csv`` as item side information). The ``ensemble`` of a variant is the ``ensemble`` entry of
its JSON."""

KEYS = ("ndcg@10", "recall@10")


def _pick(metrics: dict[str, float]) -> dict[str, float]:
    return {k: metrics[k] for k in KEYS}


def summarise(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean and standard error over the seeds of every reported figure."""
    out = {}
    for part in ("model", "blend"):
        for split in ("valid", "test"):
            for key in KEYS:
                out[f"{part}_{split}_{key}"] = spread([r[part][split][key] for r in runs])
    for key in ("beta", "best_epoch", "train_seconds"):
        out[key] = spread([r[key] for r in runs])
    return out


def run_variant(name: str, seeds: list[int], out: Path, max_train_seconds: float,
                data_dir: Path = DATA, fmt: str = "movielens", catalog: Path | None = None) -> dict[str, Any]:
    """Train variant ``name`` once per seed; write (and return) the result JSON."""
    cfg = TrainConfig(threads=1, progress=False, max_train_seconds=max_train_seconds).replace(**VARIANTS[name])
    job = TrainJob(data=str(data_dir), out=str(out.parent), fmt=fmt, train=cfg, seeds=tuple(seeds),  # type: ignore[arg-type]
                   catalog=str(catalog) if catalog else None)
    data, split = _load(job)
    features, side_info = item_features(job, data)
    cooc = _choose_cooc(job, data, split, cfg.max_seq_len)
    result: dict[str, Any] = {
        "variant": name,
        "command": " ".join(["python", "-m", "perf.model_experiments", *sys.argv[1:]]),
        "config": cfg.model_dump(mode="json"),
        "data_path": str(data_dir),
        "genres": side_info is not None,
        "item_features": side_info,
        "data": {"users": data.n_users, "items": data.n_items, "events": data.n_events},
        "cooccurrence": {"config": asdict(cooc["config"]),
                         "valid": _pick(_metrics(cooc["valid_scores"], split.valid_targets, split.valid_inputs)),
                         "test": _pick(_metrics(cooc["test_scores"], split.test_targets, split.test_inputs))},
        "runs": [],
    }
    scores: list[tuple[np.ndarray, np.ndarray]] = []
    for seed in seeds:
        trained = train_model(data, split, cfg.replace(seed=seed), item_features=features)
        valid_scores = score_sequences(trained.model, split.valid_inputs)
        test_scores = score_sequences(trained.model, split.test_inputs)
        scores.append((_standardize(valid_scores), _standardize(test_scores)))
        blend = choose_blend(split, valid_scores, test_scores, cooc, job.betas)
        row = {
            "seed": seed,
            "best_epoch": trained.best_epoch,
            "epochs": len(trained.curve),
            "train_seconds": trained.train_seconds,
            "beta": blend["beta"],
            "model": {"valid": _pick(trained.valid), "test": _pick(trained.test)},
            "blend": {"valid": _pick(blend["valid"]), "test": _pick(blend["test"])},
            "blend_curve": blend["blend_curve"],
            "curve": trained.curve,
        }
        result["runs"].append(row)
        result["summary"] = summarise(result["runs"])
        if len(scores) > 1:
            result["ensemble"] = {"seeds": [r["seed"] for r in result["runs"]], **ensemble(split, scores, cooc)}
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1), "utf-8")
        log.info("%s seed %d: model valid %.4f test %.4f | blend (beta %.1f) valid %.4f test %.4f | epoch %d, %.0fs",
                 name, seed, row["model"]["valid"]["ndcg@10"], row["model"]["test"]["ndcg@10"], row["beta"],
                 row["blend"]["valid"]["ndcg@10"], row["blend"]["test"]["ndcg@10"], row["best_epoch"],
                 row["train_seconds"])
    return result


def ensemble(split: LooSplit, scores: list[tuple[np.ndarray, np.ndarray]], cooc: dict[str, Any]) -> dict[str, Any]:
    """The seeds' models as one: the mean of their standardised (valid, test) scores, alone and blended."""
    valid, test = np.mean([s[0] for s in scores], axis=0), np.mean([s[1] for s in scores], axis=0)
    blend = choose_blend(split, valid, test, cooc)
    return {
        "beta": blend["beta"],
        "model": {"valid": _pick(_metrics(valid, split.valid_targets, split.valid_inputs)),
                  "test": _pick(_metrics(test, split.test_targets, split.test_inputs))},
        "blend": {"valid": _pick(blend["valid"]), "test": _pick(blend["test"])},
    }


def table(paths: list[Path]) -> str:
    """A markdown table of result JSONs: every seed, each variant's mean ± standard error and its ensemble."""
    head = ("| variant | seed | model valid NDCG@10 | model valid R@10 | model test NDCG@10 | model test R@10 "
            "| blend valid NDCG@10 | blend valid R@10 | blend test NDCG@10 | blend test R@10 | beta | best epoch "
            "| seconds |")
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    cells = [f"{p}_{s}_{k}" for p in ("model", "blend") for s in ("valid", "test") for k in KEYS]
    for path in paths:
        res = json.loads(path.read_text("utf-8"))
        for r in res["runs"]:
            values = [f"{r[c.split('_')[0]][c.split('_')[1]][c.split('_')[2]]:.4f}" for c in cells]
            lines.append(f"| {res['variant']} | {r['seed']} | " + " | ".join(values)
                         + f" | {r['beta']:.1f} | {r['best_epoch']} | {r['train_seconds']:.0f} |")
        summ = res["summary"]
        values = [f"{summ[c]['mean']:.4f} ± {summ[c]['sem']:.4f}" for c in cells]
        lines.append(f"| **{res['variant']}** | mean ± se (n={summ['beta']['n']}) | " + " | ".join(values)
                     + f" | {summ['beta']['mean']:.2f} | {summ['best_epoch']['mean']:.1f} "
                     f"| {summ['train_seconds']['mean']:.0f} |")
        if "ensemble" in res:
            ens = res["ensemble"]
            values = [f"{ens[c.split('_')[0]][c.split('_')[1]][c.split('_')[2]]:.4f}" for c in cells]
            lines.append(f"| {res['variant']} ensemble | {','.join(map(str, ens['seeds']))} | " + " | ".join(values)
                         + f" | {ens['beta']:.1f} | | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", choices=sorted(VARIANTS))
    parser.add_argument("--seeds", default="42,43,44", help="comma-separated")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--max-train-seconds", type=float, default=360.0, help="cap per seed")
    parser.add_argument("--data", type=Path, default=DATA,
                        help="the MovieLens directory (ratings.csv, movies.csv) or an event log (--format events)")
    parser.add_argument("--format", choices=["movielens", "events"], default="movielens")
    parser.add_argument("--catalog", type=Path, default=None,
                        help="item categories for the side information (streamrec generate --catalog)")
    parser.add_argument("--table", type=Path, nargs="+", help="print a markdown table of these result JSONs")
    args = parser.parse_args(argv)
    if args.table:
        print(table(args.table))
        return
    if args.variant is None or args.out is None:
        parser.error("--variant and --out are required (or --table)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    started = time.perf_counter()
    result = run_variant(args.variant, [int(s) for s in args.seeds.split(",")], args.out, args.max_train_seconds,
                         args.data, args.format, args.catalog)
    summary = result["summary"]
    log.info("%s: blend valid ndcg@10 %.4f ± %.4f, test %.4f ± %.4f (%.0fs)", args.variant,
             summary["blend_valid_ndcg@10"]["mean"], summary["blend_valid_ndcg@10"]["sem"],
             summary["blend_test_ndcg@10"]["mean"], summary["blend_test_ndcg@10"]["sem"],
             time.perf_counter() - started)


if __name__ == "__main__":
    main()
