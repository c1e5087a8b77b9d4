import sys, numpy as np
sys.path.insert(0, "/work/main")
from model_export.pipeline import TrainJob, _load, _metrics
job = TrainJob(data="/work/shared/data/ml-latest-small", out="/tmp/exp", fmt="movielens")
data, split = _load(job)
def ranks(x):
    x = x.copy(); x[:, 0] = -np.inf
    o = np.argsort(-x, axis=1, kind="stable"); r = np.empty_like(o); np.put_along_axis(r, o, np.arange(x.shape[1])[None, :].repeat(len(x), 0), 1); return r
c = np.load("/tmp/exp/cooc_best2.npz"); rcv, rct = ranks(c["valid"]), ranks(c["test"])
for f in sys.argv[1:]:
    z = np.load(f"/tmp/exp/{f}.npz"); rmv, rmt = ranks(z["valid"]), ranks(z["test"])
    best = None
    for k in (5, 20, 60):
        for b in np.arange(0, 1.01, 0.1):
            v = _metrics((1 - b) / (k + rmv) + b / (k + rcv), split.valid_targets, split.valid_inputs)["ndcg@10"]
            if best is None or v > best[0]: best = (v, k, b)
    v, k, b = best
    t = _metrics((1 - b) / (k + rmt) + b / (k + rct), split.test_targets, split.test_inputs)
    print(f, "rrf k", k, "beta", round(b, 1), "valid", round(v, 4), "test", round(t["ndcg@10"], 4), round(t["recall@10"], 4), flush=True)
