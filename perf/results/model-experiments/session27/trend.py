"""Time-local popularity: events on each item in the window [t_now - W, t_now) over all users (t_now = the user's
newest input's time), as a third blend term."""
import sys, numpy as np
sys.path.insert(0, "/work/main")
from model_export.pipeline import TrainJob, _load, _metrics, _standardize
from model_export.data import load_interactions, first_interactions, k_core, order_events
job = TrainJob(data="/work/shared/data/ml-latest-small", out="/tmp/exp", fmt="movielens")
data, split = _load(job)
df = order_events(k_core(first_interactions(load_interactions(job.data, job.fmt)), 5))
g = {str(u): x["ts"].to_numpy() // 1000 for u, x in df.groupby("user_id", sort=False)}
ts = [g[u] for u in data.user_ids]
# all events (item code, ts) -- only events strictly before t_now count, so no target leaks
items = np.concatenate(data.sequences); times = np.concatenate(ts)
order = np.argsort(times, kind="stable"); items, times = items[order], times[order]
n = data.n_items + 1
def trend(t_now, W):
    out = np.zeros((len(t_now), n))
    for u, t in enumerate(t_now):
        lo, hi = np.searchsorted(times, t - W, "left"), np.searchsorted(times, t, "left")
        out[u] = np.bincount(items[lo:hi], minlength=n)
    return np.log1p(out)
t_valid = np.array([t[-3] for t in ts]); t_test = np.array([t[-2] for t in ts])
c = np.load("/tmp/exp/cooc_best2.npz"); cv, ct = _standardize(c["valid"]), _standardize(c["test"])
day = 86400
for W in [int(float(x) * day) for x in sys.argv[1].split(",")]:
    pv, pt = _standardize(trend(t_valid, W)), _standardize(trend(t_test, W))
    print("W", W // day, "trend alone valid", round(_metrics(pv, split.valid_targets, split.valid_inputs)["ndcg@10"], 4), "test", round(_metrics(pt, split.test_targets, split.test_inputs)["ndcg@10"], 4), flush=True)
    for f in sys.argv[2:]:
        z = np.load(f"/tmp/exp/{f}.npz")
        best = None
        for b in np.arange(0, 1.01, 0.1):
            for gm in (0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3):
                v = _metrics((1 - b - gm) * z["valid"] + b * cv + gm * pv, split.valid_targets, split.valid_inputs)["ndcg@10"]
                if best is None or v > best[0]: best = (v, b, gm)
        v, b, gm = best
        t = _metrics((1 - b - gm) * z["test"] + b * ct + gm * pt, split.test_targets, split.test_inputs)
        print("  ", f, "beta", round(b, 1), "gamma", gm, "valid", round(v, 4), "test", round(t["ndcg@10"], 4), round(t["recall@10"], 4), flush=True)
