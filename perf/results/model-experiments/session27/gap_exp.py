"""Time gaps as an input: gap-bucket embedding added to each input item's vector (experiment)."""
import argparse, copy, json, sys, time
import numpy as np, torch
from torch import nn
from torch.nn import functional as F
sys.path.insert(0, "/work/main")
from model_export.pipeline import TrainJob, _load, _metrics, _standardize, choose_blend, item_features
from model_export.train import score_sequences, _full_batches
from model_export.model import build_model, SASRecConfig
from model_export.data import load_interactions, first_interactions, k_core, order_events

p = argparse.ArgumentParser()
p.add_argument("--seed", type=int, default=42)
p.add_argument("--gaps", type=int, default=1)
p.add_argument("--threads", type=int, default=2)
p.add_argument("--max-seconds", type=float, default=900)
p.add_argument("--out", required=True)
a = p.parse_args()
torch.manual_seed(a.seed); torch.set_num_threads(a.threads)
rng = np.random.default_rng(a.seed)
job = TrainJob(data="/work/shared/data/ml-latest-small", out="/tmp/exp", fmt="movielens")
data, split = _load(job)
feats, _ = item_features(job, data)
df = order_events(k_core(first_interactions(load_interactions(job.data, job.fmt)), 5))
g = {str(u): x["ts"].to_numpy() // 1000 for u, x in df.groupby("user_id", sort=False)}
EDGES = np.array([0, 60, 600, 3600, 86400, 7 * 86400])
n1 = data.n_items + 1
enc = []
for u, s in zip(data.user_ids, data.sequences):
    t = g[u]; assert len(t) == len(s)
    gap = np.diff(t, prepend=t[0])
    b = np.where(gap == 0, 2, 3 + np.searchsorted(EDGES[1:], gap, side="right"))
    b[0] = 1
    if not a.gaps:
        b[:] = 1
    enc.append(s + n1 * b)
print("bucket shares", np.bincount(np.concatenate([e // n1 for e in enc])) / sum(len(e) for e in enc))
e_train = [e[:-2] for e in enc]; e_valid = [e[:-2] for e in enc]; e_test = [e[:-1] for e in enc]
cooc_npz = np.load("/tmp/exp/cooc_best2.npz"); cooc = {"valid_scores": cooc_npz["valid"], "test_scores": cooc_npz["test"]}
model = build_model(SASRecConfig(n_items=data.n_items, max_seq_len=100, hidden=64, n_blocks=1, n_heads=1, dropout=0.254, arch="lru"))
model.set_item_features(torch.from_numpy(np.asarray(feats, dtype=np.float32)))
model.gap_emb = nn.Embedding(10, 64, padding_idx=0); nn.init.normal_(model.gap_emb.weight, std=0.02)
with torch.no_grad(): model.gap_emb.weight[0].zero_()
def _embed(items):
    return F.embedding(items % n1, model.item_table(), padding_idx=0) + model.gap_emb(items // n1)
model._embed = _embed
opt = torch.optim.Adam(model.parameters(), lr=3.86e-3, weight_decay=1.76e-7)
def val():
    return _metrics(score_sequences(model, e_valid), split.valid_targets, split.valid_inputs)["ndcg@10"]
best, best_ep, bad, best_state, curve = -1, 0, 0, None, []
t0 = time.perf_counter()
for ep in range(1, 400):
    model.train(); losses = []
    for inp, tgt in _full_batches(e_train, 128, 12800, rng):
        inp_t, tgt_t = torch.from_numpy(inp), torch.from_numpy(tgt % n1)
        h = model.encode(inp_t); keep = tgt_t != 0
        lg = model.logits(h[keep]); lg[:, 0] = float("-inf")
        loss = F.cross_entropy(lg, tgt_t[keep])
        opt.zero_grad(set_to_none=True); loss.backward(); opt.step(); losses.append(loss.item())
    v = val(); curve.append((ep, float(np.mean(losses)), v))
    if v > best: best, best_ep, bad, best_state = v, ep, 0, copy.deepcopy(model.state_dict())
    else: bad += 1
    print(ep, round(np.mean(losses), 3), round(v, 4), round(time.perf_counter() - t0), flush=True)
    if bad >= 10 or time.perf_counter() - t0 > a.max_seconds: break
model.load_state_dict(best_state); model.eval()
vs = score_sequences(model, e_valid); ts = score_sequences(model, e_test)
mv = _metrics(vs, split.valid_targets, split.valid_inputs); mt = _metrics(ts, split.test_targets, split.test_inputs)
bl = choose_blend(split, vs, ts, cooc)
res = dict(args=vars(a), best_epoch=best_ep, seconds=time.perf_counter() - t0, model_valid=mv["ndcg@10"], model_test=mt["ndcg@10"],
           model_test_r10=mt["recall@10"], beta=bl["beta"], blend_valid=bl["valid"]["ndcg@10"], blend_test=bl["test"]["ndcg@10"],
           blend_test_r10=bl["test"]["recall@10"], curve=curve)
np.savez_compressed(a.out.replace(".json", ".npz"), valid=_standardize(vs), test=_standardize(ts))
json.dump(res, open(a.out, "w"), indent=1)
print("RESULT", {k: v for k, v in res.items() if k not in ("curve", "args")})
