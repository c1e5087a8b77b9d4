"""Joint choice: each co-occurrence configuration of the grid blended with the model, chosen on validation."""
import sys, json, numpy as np
from dataclasses import replace, asdict
from itertools import groupby
from operator import attrgetter
sys.path.insert(0, "/work/main")
from model_export.pipeline import TrainJob, _load, _metrics, _standardize, DEFAULT_COOC_GRID, DEFAULT_BETAS
from model_export.baselines import fit_cooccurrence, pair_counts
job = TrainJob(data="/work/shared/data/ml-latest-small", out="/tmp/exp", fmt="movielens")
data, split = _load(job)
models = {f: np.load(f"/tmp/exp/{f}.npz") for f in sys.argv[1:]}
rows = []
counting = attrgetter("window", "gap_decay", "backward")
for _, group in groupby(sorted(DEFAULT_COOC_GRID, key=counting), key=counting):
    configs = list(group)
    counts = pair_counts(split.valid_inputs, data.n_items, configs[0])
    for cfg in configs:
        cfg = replace(cfg, history=cfg.horizon(100))
        cv = _standardize(fit_cooccurrence(split.valid_inputs, data.n_items, cfg, counts).score(split.valid_inputs))
        row = {"cfg": asdict(cfg), "alone": _metrics(cv, split.valid_targets, split.valid_inputs)["ndcg@10"]}
        for f, z in models.items():
            row[f] = max((_metrics((1 - b) * z["valid"] + b * cv, split.valid_targets, split.valid_inputs)["ndcg@10"], b) for b in DEFAULT_BETAS)
        rows.append(row); print(row, flush=True)
json.dump(rows, open("/tmp/exp/joint.json", "w"))
for f in models:
    best = max(rows, key=lambda r: r[f][0]); alone = max(rows, key=lambda r: r["alone"])
    cfg = replace(DEFAULT_COOC_GRID[0], **best["cfg"])
    ct = _standardize(fit_cooccurrence(split.test_inputs, data.n_items, cfg).score(split.test_inputs))
    b = best[f][1]; t = _metrics((1 - b) * models[f]["test"] + b * ct, split.test_targets, split.test_inputs)
    print("JOINT", f, best["cfg"], "beta", b, "valid", round(best[f][0], 4), "test", round(t["ndcg@10"], 4), round(t["recall@10"], 4), "| alone-chosen valid", round(alone[f][0], 4))
