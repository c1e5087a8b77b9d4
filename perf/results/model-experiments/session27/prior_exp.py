"""Residual training: the LRU learns on top of the co-occurrence prior (logits + lam * z(cooc) in the loss).

ml-latest-small by default; the generated log: --data events.jsonl --fmt events --catalog catalog.csv."""
import argparse, copy, json, sys, time
import numpy as np, torch
from torch.nn import functional as F
sys.path.insert(0, "/work/main")
from model_export.pipeline import TrainJob, _load, _metrics, _standardize, choose_blend, item_features
from model_export.baselines import fit_cooccurrence
from model_export.train import score_sequences, _full_batches
from model_export.model import build_model, SASRecConfig, standardize

p = argparse.ArgumentParser()
p.add_argument("--seed", type=int, default=42)
p.add_argument("--lam", type=float, default=1.0)
p.add_argument("--threads", type=int, default=2)
p.add_argument("--max-seconds", type=float, default=1200)
p.add_argument("--folds", type=int, default=5)
p.add_argument("--stop", default="blend", choices=("blend", "model", "additive"))
p.add_argument("--data", default="/work/shared/data/ml-latest-small")
p.add_argument("--fmt", default="movielens")
p.add_argument("--catalog", default=None, help="item categories (MovieLens: its movies.csv when omitted)")
p.add_argument("--out", required=True)
a = p.parse_args()
torch.manual_seed(a.seed); torch.set_num_threads(a.threads)
rng = np.random.default_rng(a.seed)
job = TrainJob(data=a.data, out="/tmp/exp", fmt=a.fmt, catalog=a.catalog)
data, split = _load(job)
feats, _ = item_features(job, data)
import hashlib, os, pickle
from model_export.pipeline import _choose_cooc  # the co-occurrence streamrec train picks on validation
cache = f"/tmp/exp/cooc-{hashlib.sha1(a.data.encode()).hexdigest()[:8]}.pkl"
if not os.path.exists(cache):
    c = _choose_cooc(job, data, split, 100)
    pickle.dump(c, open(cache, "wb"))
cchosen = pickle.load(open(cache, "rb"))
cfg = cchosen["config"]
print("cooc", cfg, flush=True)
n1 = data.n_items + 1
decay = cfg.decay
cooc = {"valid_scores": cchosen["valid_scores"], "test_scores": cchosen["test_scores"]}
zc_valid, zc_test = _standardize(cooc["valid_scores"]), _standardize(cooc["test_scores"])

def dense(co):
    M = torch.zeros(n1, n1)
    M.scatter_add_(1, torch.from_numpy(co.neighbors), torch.from_numpy(co.weights))
    M[:, 0] = 0
    return M

S = dense(fit_cooccurrence(split.valid_inputs, data.n_items, cfg))  # in-sample prior (--folds 1)

def prior(inp, S=S):  # [B, L] -> z-scored co-occurrence scores after each position [B, L, V+1]
    E = S[inp]  # [B, L, V+1]
    y = E.clone()
    for h in range(1, cfg.history):
        y[:, h:] += (decay ** h) * E[:, :-h]
    B, L, V = y.shape
    return standardize(y.reshape(B * L, V)).reshape(B, L, V)

from model_export.data import left_pad
usable = [s for s in split.train if len(s) >= 2]
t_pre = time.perf_counter()
PRE = [None] * len(usable)
fold = np.random.default_rng(0).integers(0, a.folds, size=len(usable)) if a.folds > 1 else np.zeros(len(usable), int)
with torch.no_grad():
    for k in range(a.folds if a.folds > 1 else 1):
        Sk = dense(fit_cooccurrence([s for s, f in zip(usable, fold) if f != k], data.n_items, cfg)) if a.folds > 1 else S
        for i in np.flatnonzero(fold == k):
            x = torch.from_numpy(np.asarray(usable[i][:-1], dtype=np.int64))[None, :]
            PRE[i] = prior(x, Sk)[0].to(torch.float16)
print("prior precomputed", round(time.perf_counter() - t_pre), "s", flush=True)

def batches():
    order = sorted(range(len(usable)), key=lambda i: (len(usable[i]), rng.random()))
    groups = []
    for i in order:
        length = len(usable[i]) - 1
        if groups and len(groups[-1]) < 128 and length * (len(groups[-1]) + 1) <= 12800:
            groups[-1].append(i)
        else:
            groups.append([i])
    for g in (groups[j] for j in rng.permutation(len(groups))):
        length = max(len(usable[i]) for i in g) - 1
        pr = torch.zeros(len(g), length, n1)
        for r, i in enumerate(g):
            k = len(usable[i]) - 1
            pr[r, length - k:] = PRE[i].float()
        yield left_pad([usable[i][:-1] for i in g], length), left_pad([usable[i][1:] for i in g], length), pr

model = build_model(SASRecConfig(n_items=data.n_items, max_seq_len=100, hidden=64, n_blocks=1, n_heads=1, dropout=0.254, arch="lru"))
model.set_item_features(torch.from_numpy(np.asarray(feats, dtype=np.float32)))
opt = torch.optim.Adam(model.parameters(), lr=3.86e-3, weight_decay=1.76e-7)
p_stop = a.stop
def val():
    vs = score_sequences(model, split.valid_inputs)
    if p_stop == "model":
        return _metrics(vs, split.valid_targets, split.valid_inputs)["ndcg@10"]
    if p_stop == "additive":
        return _metrics(vs + a.lam * zc_valid, split.valid_targets, split.valid_inputs)["ndcg@10"]
    zv = _standardize(vs)
    return max(_metrics((1 - b) * zv + b * zc_valid, split.valid_targets, split.valid_inputs)["ndcg@10"] for b in np.arange(0, 1.01, 0.1))
best, best_ep, bad, best_state, curve = -1, 0, 0, None, []
t0 = time.perf_counter()
for ep in range(1, 400):
    model.train(); losses = []
    for inp, tgt, pr in batches():
        inp_t, tgt_t = torch.from_numpy(inp), torch.from_numpy(tgt)
        h = model.encode(inp_t); keep = tgt_t != 0
        lg = model.logits(h[keep]) + a.lam * pr[keep]; lg[:, 0] = float("-inf")
        loss = F.cross_entropy(lg, tgt_t[keep])
        opt.zero_grad(set_to_none=True); loss.backward(); opt.step(); losses.append(loss.item())
    v = val(); curve.append((ep, float(np.mean(losses)), v))
    if v > best: best, best_ep, bad, best_state = v, ep, 0, copy.deepcopy(model.state_dict())
    else: bad += 1
    print(ep, round(np.mean(losses), 3), round(v, 4), round(time.perf_counter() - t0), flush=True)
    if bad >= 10 or time.perf_counter() - t0 > a.max_seconds: break
model.load_state_dict(best_state); model.fold_item_features(); model.eval()
vs = score_sequences(model, split.valid_inputs); ts = score_sequences(model, split.test_inputs)
mv = _metrics(vs, split.valid_targets, split.valid_inputs); mt = _metrics(ts, split.test_targets, split.test_inputs)
add_v = _metrics(vs + a.lam * zc_valid, split.valid_targets, split.valid_inputs); add_t = _metrics(ts + a.lam * zc_test, split.test_targets, split.test_inputs)
bl = choose_blend(split, vs, ts, cooc)
res = dict(args=vars(a), best_epoch=best_ep, seconds=time.perf_counter() - t0, model_valid=mv["ndcg@10"], model_test=mt["ndcg@10"],
           additive_valid=add_v["ndcg@10"], additive_test=add_t["ndcg@10"], additive_test_r10=add_t["recall@10"],
           beta=bl["beta"], blend_valid=bl["valid"]["ndcg@10"], blend_test=bl["test"]["ndcg@10"], blend_test_r10=bl["test"]["recall@10"],
           blend_curve=bl["blend_curve"], curve=curve)
np.savez_compressed(a.out.replace(".json", ".npz"), valid=_standardize(vs), test=_standardize(ts))
json.dump(res, open(a.out, "w"), indent=1)
print("RESULT", {k: v for k, v in res.items() if k not in ("curve", "args", "blend_curve")})
