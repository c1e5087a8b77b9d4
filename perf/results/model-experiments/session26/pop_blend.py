import sys, numpy as np
sys.path.insert(0, "/work/main")
from model_export.pipeline import TrainJob, _choose_cooc, _load, _metrics, _standardize
from model_export.train import popularity_scores
job = TrainJob(data="/work/shared/data/ml-latest-small", out="/tmp/exp", fmt="movielens")
data, split = _load(job)
cooc = _choose_cooc(job, data, split, 100)
cv, ct = _standardize(cooc["valid_scores"]), _standardize(cooc["test_scores"])
pop = np.log1p(popularity_scores(split.train, data.n_items))
zp = _standardize(np.tile(pop, (data.n_users, 1)))
for f in sys.argv[1:]:
    z = np.load(f); best = None
    for b in np.linspace(0, 0.5, 6):
        for g in (0, 0.05, 0.1, 0.2, 0.3):
            v = _metrics((1-b-g)*z["valid"] + b*cv + g*zp, split.valid_targets, split.valid_inputs)["ndcg@10"]
            if best is None or v > best[0]: best = (v, b, g)
    v, b, g = best
    t = _metrics((1-b-g)*z["test"] + b*ct + g*zp, split.test_targets, split.test_inputs)
    print(f, "beta", b, "gamma", g, "valid", round(v, 4), "test", round(t["ndcg@10"], 4), round(t["recall@10"], 4))
