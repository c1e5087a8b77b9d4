import sys, time, json
import numpy as np
sys.path.insert(0, "/tmp/exp")
from slit import *  # noqa

def ease_B(seqs, lam, dx=1.0):
    X = np.zeros((len(seqs), n))
    for u, s in enumerate(seqs):
        s = np.asarray(s); L = len(s)
        X[u, s] = dx ** np.arange(L - 1, -1, -1)
    G = X.T @ X
    G[np.diag_indices(n)] += lam
    G[0, 0] = 1.0
    P = np.linalg.inv(G)
    B = -P / np.diag(P)[None, :]
    B[np.diag_indices(n)] = 0
    B[0, :] = 0; B[:, 0] = 0
    return B

res = []
for dx in (1.0, 0.99):
    for lam in (50.0, 200.0, 800.0):
        B = ease_B(split.valid_inputs, lam, dx)
        for H, d in ((50, 0.95), (20, 0.85), (100, 1.0)):
            sv = ev(scores_of(B, split.valid_inputs, H, d, 300), "valid")
            row = dict(dx=dx, lam=lam, H=H, d=d, valid=sv["ndcg@10"], r=sv["recall@10"])
            print(row, flush=True); res.append(row)
best = max(res, key=lambda r: r["valid"]); print("best", best)
B = ease_B(split.test_inputs, best["lam"], best["dx"])
print("test", ev(scores_of(B, split.test_inputs, best["H"], best["d"], 300), "test"))
