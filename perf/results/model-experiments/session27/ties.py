import sys, numpy as np, pandas as pd
sys.path.insert(0, "/work/main")
from model_export.pipeline import TrainJob, _load, _metrics, _standardize
from model_export.data import load_interactions, first_interactions, k_core, order_events
from model_export.metrics import target_ranks
job = TrainJob(data="/work/shared/data/ml-latest-small", out="/tmp/exp", fmt="movielens")
data, split = _load(job)
df = order_events(k_core(first_interactions(load_interactions(job.data, job.fmt)), 5))
g = {u: x["ts"].to_numpy() for u, x in df.groupby("user_id", sort=False)}
ts = [g[u] if u in g else g[int(u)] for u in data.user_ids]
test_tie = np.array([t[-1] == t[-2] for t in ts]); valid_tie = np.array([t[-2] == t[-3] for t in ts])
print("test target same second as last input", test_tie.mean(), " valid", valid_tie.mean())
# if last input gap is 0, is target tie?
last_gap0_t = np.array([t[-2] == t[-3] for t in ts]); print("P(test tie | last input gap 0)", test_tie[last_gap0_t].mean(), "P(test tie | gap>0)", test_tie[~last_gap0_t].mean())
last_gap0_v = np.array([t[-3] == t[-4] if len(t) > 3 else False for t in ts]); print("P(valid tie | gap0)", valid_tie[last_gap0_v].mean(), (~last_gap0_v).sum(), valid_tie[~last_gap0_v].mean())
# all pairs in training: fraction gap 0
allg = np.concatenate([np.diff(t) for t in ts]); print("share of consecutive gaps == 0", (allg == 0).mean(), "<60s", (allg < 60000).mean())
c = np.load("/tmp/exp/cooc_best2.npz"); z = np.load("/tmp/exp/base42.npz")
bt = 0.7 * z["test"] + 0.3 * _standardize(c["test"]); bv = 0.7 * z["valid"] + 0.3 * _standardize(c["valid"])
for name, sc, tg, inp, tie in (("test", bt, split.test_targets, split.test_inputs, test_tie), ("valid", bv, split.valid_targets, split.valid_inputs, valid_tie)):
    r = target_ranks(sc, tg, inp)
    for lab, m in (("tie", tie), ("no tie", ~tie)):
        rr = r[m]; print(name, lab, m.sum(), "HR10", (rr < 10).mean().round(4), "NDCG10", np.where(rr < 10, 1 / np.log2(rr + 2), 0).mean().round(4))
    # target id > last item id?
    last = np.array([s[-1] for s in inp])
    print(name, "target code > last code | tie", (tg[tie] > last[tie]).mean())
