import sys, numpy as np
sys.path.insert(0, "/work/main")
from model_export.pipeline import TrainJob, _load, _metrics, _standardize
from model_export.data import load_interactions, first_interactions, k_core, order_events
from model_export.metrics import target_ranks
job = TrainJob(data="/work/shared/data/ml-latest-small", out="/tmp/exp", fmt="movielens")
data, split = _load(job)
df = order_events(k_core(first_interactions(load_interactions(job.data, job.fmt)), 5))
g = {str(u): x["ts"].to_numpy() for u, x in df.groupby("user_id", sort=False)}
ts = [g[u] for u in data.user_ids]
burst_v = np.array([t[-3] == t[-4] for t in ts]); burst_t = np.array([t[-2] == t[-3] for t in ts])
c = np.load("/tmp/exp/cooc_best2.npz"); cv, ct = _standardize(c["valid"]), _standardize(c["test"])
def nd(r): return np.where(r < 10, 1 / np.log2(r + 2), 0)
betas = np.round(np.arange(0, 1.01, 0.1), 2)
for f in sys.argv[1:]:
    z = np.load(f); mv, mt = z["valid"], z["test"]
    rv = {b: nd(target_ranks((1 - b) * mv + b * cv, split.valid_targets, split.valid_inputs)) for b in betas}
    rt = {b: target_ranks((1 - b) * mt + b * ct, split.test_targets, split.test_inputs) for b in betas}
    b1 = max(betas, key=lambda b: rv[b].mean())
    bb = max(betas, key=lambda b: rv[b][burst_v].mean()); bn = max(betas, key=lambda b: rv[b][~burst_v].mean())
    v2 = np.where(burst_v, rv[bb], rv[bn]).mean()
    t1 = nd(rt[b1]).mean(); t2 = np.where(burst_t, nd(rt[bb]), nd(rt[bn])).mean()
    r2 = np.where(burst_t, rt[bb] < 10, rt[bn] < 10).mean()
    print(f, "single", b1, round(rv[b1].mean(), 4), round(t1, 4), "| per-burst", bb, bn, round(v2, 4), round(t2, 4), round(r2, 4))
