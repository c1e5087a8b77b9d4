"""Quick experiments: custom training loop variants on ML LOO-5core."""
import argparse, copy, json, sys, time, logging
import numpy as np, torch
from torch.nn import functional as F
sys.path.insert(0, "/work/main")
from model_export.pipeline import TrainJob, _choose_cooc, _load, _metrics, _standardize, choose_blend, item_features
from model_export.train import TrainConfig, score_sequences, evaluate, _full_batches, _batches
from model_export.model import build_model, SASRecConfig

p = argparse.ArgumentParser()
p.add_argument("--seed", type=int, default=42)
p.add_argument("--batch", type=int, default=128)
p.add_argument("--budget", type=int, default=12800)
p.add_argument("--lr", type=float, default=3.86e-3)
p.add_argument("--ema", type=float, default=0.0)
p.add_argument("--hidden", type=int, default=64)
p.add_argument("--dropout", type=float, default=0.254)
p.add_argument("--patience", type=int, default=10)
p.add_argument("--threads", type=int, default=1)
p.add_argument("--max-seconds", type=float, default=900)
p.add_argument("--teachers", default="")
p.add_argument("--alpha", type=float, default=0.5)
p.add_argument("--temp", type=float, default=1.0)
p.add_argument("--save-model", default="")
p.add_argument("--adamw", type=float, default=0.0)
p.add_argument("--windows", type=int, default=0)
p.add_argument("--refit-epochs", type=int, default=0)
p.add_argument("--save-scores", default="")
p.add_argument("--out", required=True)
a = p.parse_args()
torch.manual_seed(a.seed); torch.set_num_threads(a.threads)
rng = np.random.default_rng(a.seed)
job = TrainJob(data="/work/shared/data/ml-latest-small", out="/tmp/exp", fmt="movielens")
data, split = _load(job)
feats, _ = item_features(job, data)
cooc = _choose_cooc(job, data, split, 100)
model = build_model(SASRecConfig(n_items=data.n_items, max_seq_len=100, hidden=a.hidden, n_blocks=1, n_heads=1, dropout=a.dropout, arch="lru"))
model.set_item_features(torch.from_numpy(np.asarray(feats, dtype=np.float32)))
opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=a.adamw) if a.adamw else torch.optim.Adam(model.parameters(), lr=a.lr, weight_decay=1.76e-7)
ema = copy.deepcopy(model) if a.ema > 0 else None
teachers = []
for path in filter(None, a.teachers.split(",")):
    t = build_model(SASRecConfig(n_items=data.n_items, max_seq_len=100, hidden=64, n_blocks=1, n_heads=1, dropout=a.dropout, arch="lru"))
    t.load_state_dict(torch.load(path)); t.eval(); teachers.append(t)
best, best_ep, bad, best_state = -1, 0, 0, None
curve = []
t0 = time.perf_counter()
for ep in range(1, 400):
    model.train()
    losses = []
    for inp, tgt in (_batches(split.train, a.windows, a.batch, rng) if a.windows else _full_batches(split.train, a.batch, a.budget, rng)):
        inp_t, tgt_t = torch.from_numpy(inp), torch.from_numpy(tgt)
        h = model.encode(inp_t); keep = tgt_t != 0
        lg = model.logits(h[keep]); lg[:, 0] = float("-inf")
        loss = F.cross_entropy(lg, tgt_t[keep])
        if teachers:
            with torch.no_grad():
                tp = 0
                for t in teachers:
                    tl = t.logits(t.encode(inp_t)[keep]); tl[:, 0] = float("-inf")
                    tp = tp + F.softmax(tl / a.temp, dim=-1)
                tp = tp / len(teachers)
            kd = -(tp[:, 1:] * F.log_softmax(lg[:, 1:] / a.temp, dim=-1)).sum(-1).mean() * a.temp ** 2
            loss = (1 - a.alpha) * loss + a.alpha * kd
        opt.zero_grad(set_to_none=True); loss.backward(); opt.step(); losses.append(loss.item())
        if ema is not None:
            with torch.no_grad():
                for pe, pm in zip(ema.parameters(), model.parameters()):
                    pe.mul_(a.ema).add_(pm, alpha=1 - a.ema)
    ev = ema if ema is not None else model
    v = evaluate(ev, split.valid_inputs, split.valid_targets, (10,))["ndcg@10"]
    curve.append((ep, float(np.mean(losses)), v))
    if v > best:
        best, best_ep, bad = v, ep, 0; best_state = copy.deepcopy(ev.state_dict())
    else:
        bad += 1
    print(ep, round(np.mean(losses), 3), round(v, 4), round(time.perf_counter() - t0), flush=True)
    if bad >= a.patience or time.perf_counter() - t0 > a.max_seconds:
        break
model.load_state_dict(best_state); model.fold_item_features(); model.eval()
vs = score_sequences(model, split.valid_inputs); ts = score_sequences(model, split.test_inputs)
mv = _metrics(vs, split.valid_targets, split.valid_inputs); mt = _metrics(ts, split.test_targets, split.test_inputs)
bl = choose_blend(split, vs, ts, cooc)
res = dict(args=vars(a), best_epoch=best_ep, epochs=len(curve), seconds=time.perf_counter() - t0,
           model_valid=mv["ndcg@10"], model_test=mt["ndcg@10"], beta=bl["beta"], blend_valid=bl["valid"]["ndcg@10"],
           blend_test=bl["test"]["ndcg@10"], blend_test_r10=bl["test"]["recall@10"], curve=curve)
if a.save_model:
    torch.save(model.state_dict(), a.save_model)
if a.save_scores:
    np.savez_compressed(a.save_scores, valid=_standardize(vs), test=_standardize(ts))
json.dump(res, open(a.out, "w"), indent=1)
print("RESULT", {k: v for k, v in res.items() if k not in ("curve", "args")})

if a.refit_epochs:
    torch.manual_seed(a.seed); rng = np.random.default_rng(a.seed)
    m2 = build_model(SASRecConfig(n_items=data.n_items, max_seq_len=100, hidden=a.hidden, n_blocks=1, n_heads=1, dropout=a.dropout, arch="lru"))
    m2.set_item_features(torch.from_numpy(np.asarray(feats, dtype=np.float32)))
    opt = torch.optim.Adam(m2.parameters(), lr=a.lr, weight_decay=1.76e-7)
    full = [s for s in split.test_inputs]
    for ep in range(a.refit_epochs):
        m2.train()
        for inp, tgt in _full_batches(full, a.batch, a.budget, rng):
            inp_t, tgt_t = torch.from_numpy(inp), torch.from_numpy(tgt)
            h = m2.encode(inp_t); keep = tgt_t != 0
            lg = m2.logits(h[keep]); lg[:, 0] = float("-inf")
            loss = F.cross_entropy(lg, tgt_t[keep])
            opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
        m2.eval()
        if ep + 1 >= a.refit_epochs - 6:
            ts2 = score_sequences(m2, split.test_inputs)
            bl2 = choose_blend(split, vs, ts2, cooc)
            print("REFIT", ep + 1, "model test", round(_metrics(ts2, split.test_targets, split.test_inputs)["ndcg@10"], 4), "blend beta", bl2["beta"], "test", round(bl2["test"]["ndcg@10"], 4), round(bl2["test"]["recall@10"], 4), flush=True)
