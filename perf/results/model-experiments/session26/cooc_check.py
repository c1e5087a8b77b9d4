import sys, numpy as np
sys.path.insert(0, "/work/main")
from model_export.pipeline import TrainJob, _choose_cooc, _load, _metrics
from model_export.baselines import fit_cooccurrence
job = TrainJob(data="/work/shared/data/ml-latest-small", out="/tmp/exp", fmt="movielens")
data, split = _load(job)
cooc = _choose_cooc(job, data, split, 100)
cfg = cooc["config"]; print(cfg)
m_tr = fit_cooccurrence(split.valid_inputs, data.n_items, cfg)
print("cooc fit on train, test", _metrics(m_tr.score(split.test_inputs), split.test_targets, split.test_inputs)["ndcg@10"])
print("cooc fit on test_inputs, test", _metrics(cooc["test_scores"], split.test_targets, split.test_inputs)["ndcg@10"])
