"""Linear item-to-item transition model (SLIT-like ridge regression) vs co-occurrence on LOO-5core."""
import sys, time, json, itertools
import numpy as np
sys.path.insert(0, "/work/main")
from model_export.pipeline import TrainJob, _load, _metrics
from model_export.model import decay_weights
from model_export.data import left_pad
import torch

job = TrainJob(data="/work/shared/data/ml-latest-small", out="/tmp/exp", fmt="movielens")
data, split = _load(job)
n = data.n_items + 1
print("items", data.n_items, "users", data.n_users)


def gram(seqs, H, d, F, f, back=0.0):
    """G = S^T S (past windows, weights d^age), R = S^T T (targets: next F items weighted f^k)."""
    G = np.zeros(n * n)
    R = np.zeros(n * n)
    wpast = d ** np.arange(H)
    wfut = f ** np.arange(F)
    for seq in seqs:
        seq = np.asarray(seq, dtype=np.int64)
        L = len(seq)
        if L < 2:
            continue
        # positions p = 1..L-1 ; window items seq[p-1-i] for i < H
        p = np.arange(1, L)
        codes_g, w_g, codes_r, w_r = [], [], [], []
        for i in range(H):
            vi = p - 1 - i >= 0
            if not vi.any():
                break
            for j in range(H):
                v = vi & (p - 1 - j >= 0)
                if not v.any():
                    break
                a = seq[p[v] - 1 - i]; b = seq[p[v] - 1 - j]
                codes_g.append(a * n + b); w_g.append(np.full(v.sum(), wpast[i] * wpast[j]))
            for k in range(F):
                v = vi & (p + k < L)
                if not v.any():
                    break
                a = seq[p[v] - 1 - i]; t = seq[p[v] + k]
                codes_r.append(a * n + t); w_r.append(np.full(v.sum(), wpast[i] * wfut[k]))
        G += np.bincount(np.concatenate(codes_g), np.concatenate(w_g), minlength=n * n)
        R += np.bincount(np.concatenate(codes_r), np.concatenate(w_r), minlength=n * n)
    return G.reshape(n, n), R.reshape(n, n)


def solve(G, R, lam):
    A = G.copy()
    A[np.diag_indices(n)] += lam
    A[0, 0] = 1.0
    B = np.linalg.solve(A, R)
    B[0, :] = 0; B[:, 0] = 0
    return B


def scores_of(B, inputs, H, d, top_n=None):
    if top_n:
        nb = np.argpartition(-B, top_n - 1, axis=1)[:, :top_n]
        w = np.take_along_axis(B, nb, axis=1)
        Bp = np.zeros_like(B)
        np.put_along_axis(Bp, nb, w, axis=1)
        B = Bp
    X = np.zeros((len(inputs), n))
    w = decay_weights(d, H)
    for u, s in enumerate(inputs):
        tail = np.asarray(s[-H:])
        np.add.at(X[u], tail, w[-len(tail):])
    X[:, 0] = 0
    return X @ B


def ev(sc, which):
    if which == "valid":
        return _metrics(sc, split.valid_targets, split.valid_inputs)
    return _metrics(sc, split.test_targets, split.test_inputs)


if __name__ == "__main__" and False:
    res = []
    grid = [(H, d, F, f) for H in (10, 20) for d in (0.7, 0.85) for F, f in ((1, 0.0), (3, 0.5))]
    for H, d, F, f in grid:
        t = time.time()
        G, R = gram(split.valid_inputs, H, d, F, f)
        tg = time.time() - t
        for lam in (10.0, 50.0, 200.0):
            B = solve(G, R, lam)
            sv = ev(scores_of(B, split.valid_inputs, H, d, 300), "valid")
            row = dict(H=H, d=d, F=F, f=f, lam=lam, valid=sv["ndcg@10"], valid_r=sv["recall@10"])
            print(row, f"gram {tg:.0f}s", flush=True)
            res.append(row)
    best = max(res, key=lambda r: r["valid"])
    print("best", best)
    H, d, F, f, lam = best["H"], best["d"], best["F"], best["f"], best["lam"]
    G, R = gram(split.test_inputs, H, d, F, f)
    B = solve(G, R, lam)
    st = ev(scores_of(B, split.test_inputs, H, d, 300), "test")
    print("test", st)
    json.dump({"grid": res, "best": best, "test": st}, open("/tmp/exp/slit.json", "w"), indent=1)
