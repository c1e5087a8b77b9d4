import sys, numpy as np
sys.path.insert(0, "/work/main")
from model_export.pipeline import TrainJob, _choose_cooc, _load, _metrics, choose_blend
job = TrainJob(data="/work/shared/data/ml-latest-small", out="/tmp/exp", fmt="movielens")
data, split = _load(job)
cooc = _choose_cooc(job, data, split, 100)
zs = [np.load(f) for f in sys.argv[1:]]
v = np.mean([z["valid"] for z in zs], 0); t = np.mean([z["test"] for z in zs], 0)
bl = choose_blend(split, v, t, cooc)
print("model", _metrics(v, split.valid_targets, split.valid_inputs)["ndcg@10"], _metrics(t, split.test_targets, split.test_inputs)["ndcg@10"])
print("blend beta", bl["beta"], bl["valid"]["ndcg@10"], bl["test"]["ndcg@10"], bl["test"]["recall@10"])
