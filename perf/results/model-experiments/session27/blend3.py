import sys, numpy as np, json
sys.path.insert(0, "/tmp/exp")
from slit import *  # noqa
from model_export.pipeline import _standardize
c = np.load("/tmp/exp/cooc_best2.npz")
cv, ct = _standardize(c["valid"]), _standardize(c["test"])
print("cooc", ev(c["valid"], "valid")["ndcg@10"], ev(c["test"], "test")["ndcg@10"])
H, d, F, f, lam = 10, 0.85, 3, 0.5, 50.0
G, R = gram(split.valid_inputs, H, d, F, f); sv = _standardize(scores_of(solve(G, R, lam), split.valid_inputs, H, d, 300))
G, R = gram(split.test_inputs, H, d, F, f); st = _standardize(scores_of(solve(G, R, lam), split.test_inputs, H, d, 300))
np.savez_compressed("/tmp/exp/slit_best.npz", valid=sv, test=st)
grid = np.round(np.arange(0, 1.01, 0.1), 2)
for fn in ("base42", "t43", "t44"):
    z = np.load(f"/tmp/exp/{fn}.npz"); mv, mt = z["valid"], z["test"]
    rows = []
    for a in grid:
        for b in grid:
            if a + b > 1.0001: continue
            m = 1 - a - b
            rows.append((ev(m * mv + a * cv + b * sv, "valid")["ndcg@10"], a, b))
    best2 = max(r for r in rows if r[2] == 0)
    best3 = max(rows)
    for tag, (v, a, b) in (("2way", best2), ("3way", best3)):
        t = ev((1 - a - b) * mt + a * ct + b * st, "test")
        print(fn, tag, "a", a, "b", b, "valid", round(v, 4), "test", round(t["ndcg@10"], 4), round(t["recall@10"], 4), flush=True)
