"""The per-event re-ranking arithmetic as compiled loops (numba): one call each instead of dozens of numpy calls
on arrays of a few dozen values, whose per-call overhead dominated the step (``perf/bench_rerank.py``).

Pure functions of arrays; the rules they implement are documented where they are used
(:mod:`operators.rerank`, :mod:`operators.interests`). ``cache=True`` keeps the compiled code beside this file
(``__pycache__``), so a worker compiles once per machine; :func:`warm_up` runs each kernel once at start so no
event waits for a compilation.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["interest_preference", "adjust_scores", "top_order", "capped_order", "most_similar", "mmr_order",
           "push_shown", "warm_up"]


@njit(cache=True, nogil=True)
def interest_preference(indices, ts, types, newest, weights, decay, short_ms, rows, affinity, short_boost,
                        long_boost):  # noqa: ANN001, ANN201
    """The per-category bonus vector: the short-term profile (window events within ``short_ms`` of ``newest``,
    each ``weights[type] * decay ** (events after it)``, summed over the item's ``rows``) scaled to
    ``short_boost`` per unit of mass, plus ``affinity`` (may be empty) scaled to ``long_boost``. Returns
    ``(vector, any)``; ``any`` is False when the user has no profile yet."""
    n_cat = rows.shape[1]
    short = np.zeros(n_cat, dtype=np.float64)
    recency = 1.0
    i = ts.shape[0] - 1
    cut = newest - short_ms
    while i >= 0 and ts[i] >= cut:
        item = indices[i]
        if item != 0:
            w = weights[types[i]] * recency
            for c in range(n_cat):
                short[c] += w * rows[item, c]
        recency *= decay
        i -= 1
    out = np.zeros(n_cat, dtype=np.float32)
    found = False
    mass = 0.0
    for c in range(n_cat):
        mass += abs(short[c])
    if mass > 1e-9 and short_boost != 0.0:
        found = True
        for c in range(n_cat):
            out[c] += short[c] * (short_boost / mass)
    if affinity.shape[0] == n_cat and long_boost != 0.0:
        mass = 0.0
        for c in range(n_cat):
            mass += abs(affinity[c])
        if mass > 1e-9:
            found = True
            for c in range(n_cat):
                out[c] += affinity[c] * (long_boost / mass)
    return out, found


@njit(cache=True, nogil=True)
def adjust_scores(scores, items, rows, preference, trend, reshown, viewed_penalty, hashes, shown_hashes,
                  shown_weights):  # noqa: ANN001, ANN201
    """Each candidate's score plus its bonuses, minus its penalties (float64): ``rows[item] . preference``
    (``preference`` empty: none), ``trend[item]`` (empty: none), ``- viewed_penalty`` if the item is in
    ``reshown``, ``- shown_weights[j]`` for every remembered shown item ``j`` with the candidate's hash."""
    m = scores.shape[0]
    n_cat = preference.shape[0]
    out = np.empty(m, dtype=np.float64)
    for i in range(m):
        s = np.float64(scores[i])
        item = items[i]
        if n_cat:
            acc = 0.0
            for c in range(n_cat):
                acc += rows[item, c] * preference[c]
            s += acc
        if trend.shape[0]:
            s += trend[item]
        for r in range(reshown.shape[0]):
            if reshown[r] == item:
                s -= viewed_penalty
                break
        h = hashes[i]
        for j in range(shown_hashes.shape[0]):
            if shown_hashes[j] == h:
                s -= shown_weights[j]
        out[i] = s
    return out


@njit(cache=True, nogil=True)
def top_order(adjusted, k):  # noqa: ANN001, ANN201
    """Positions of the ``k`` best, best first; ties keep the candidates' order (a stable sort)."""
    return np.argsort(-adjusted, kind="mergesort")[:k]


@njit(cache=True, nogil=True)
def capped_order(items, order, member, cap, k):  # noqa: ANN001, ANN201
    """The first ``k`` of ``order`` with at most ``cap`` items per category (``member[item, c]``; an item counts
    for each of its categories); when the cap leaves fewer than ``k``, the best skipped fill the list."""
    counts = np.zeros(member.shape[1], dtype=np.int64)
    picked = np.empty(k, dtype=np.int64)
    skipped = np.empty(order.shape[0], dtype=np.int64)
    n_picked = 0
    n_skipped = 0
    for pos in order:
        if n_picked == k:
            break
        item = items[pos]
        full = False
        for c in range(member.shape[1]):
            if member[item, c] and counts[c] >= cap:
                full = True
                break
        if full:
            skipped[n_skipped] = pos
            n_skipped += 1
            continue
        for c in range(member.shape[1]):
            if member[item, c]:
                counts[c] += 1
        picked[n_picked] = pos
        n_picked += 1
    j = 0
    while n_picked < k and j < n_skipped:
        picked[n_picked] = skipped[j]
        n_picked += 1
        j += 1
    return picked[:n_picked]


@njit(cache=True, nogil=True, fastmath=True)
def most_similar(emb, picked, tail):  # noqa: ANN001, ANN201
    """For each picked item, the item of ``tail`` whose embedding has the largest dot product with its own (the
    first of equals)."""
    out = np.empty(picked.shape[0], dtype=np.int64)
    dim = emb.shape[1]
    for a in range(picked.shape[0]):
        best = -np.inf
        arg = tail[0]
        row = emb[picked[a]]
        for b in range(tail.shape[0]):
            other = emb[tail[b]]
            dot = np.float32(0.0)
            for d in range(dim):
                dot += row[d] * other[d]
            if dot > best:
                best = dot
                arg = tail[b]
        out[a] = arg
    return out


@njit(cache=True, nogil=True, fastmath=True)
def mmr_order(emb, items, scores, k, lam):  # noqa: ANN001, ANN201
    """Greedy maximal marginal relevance: repeatedly pick ``argmax (1 - lam) * relevance - lam * (largest
    cosine similarity to an item already picked)``, relevance being ``scores`` scaled to [0, 1]; ``emb`` rows are
    L2-normalised. Positions into ``items``, in pick order."""
    m = items.shape[0]
    n = min(k, m)
    out = np.empty(n, dtype=np.int64)
    if n == 0:
        return out
    lo = scores.min()
    span = scores.max() - lo
    gain = np.empty(m, dtype=np.float64)
    for j in range(m):
        gain[j] = (1.0 - lam) * ((scores[j] - lo) / span if span > 0 else 1.0)
    penalty = np.full(m, -np.inf)
    taken = np.zeros(m, dtype=np.bool_)
    dim = emb.shape[1]
    for step in range(n):
        best = -np.inf
        pick = -1
        for j in range(m):
            if taken[j]:
                continue
            value = gain[j] - (penalty[j] if step else 0.0)
            if value > best:
                best = value
                pick = j
        out[step] = pick
        taken[pick] = True
        row = emb[items[pick]]
        for j in range(m):
            if not taken[j]:
                other = emb[items[j]]
                dot = np.float32(0.0)
                for d in range(dim):
                    dot += row[d] * other[d]
                sim = lam * dot
                if sim > penalty[j]:
                    penalty[j] = sim
    return out


@njit(cache=True, nogil=True)
def push_shown(hashes, ages, new, window):  # noqa: ANN001, ANN201
    """The shown history after a new list: every remembered list ages by one, those of age ``window`` or more
    are dropped, the new list's hashes come last with age 0."""
    keep = 0
    for i in range(ages.shape[0]):
        if ages[i] + 1 < window:
            keep += 1
    out_h = np.empty(keep + new.shape[0], dtype=np.uint32)
    out_a = np.zeros(keep + new.shape[0], dtype=np.uint8)
    j = 0
    for i in range(ages.shape[0]):
        if ages[i] + 1 < window:
            out_h[j] = hashes[i]
            out_a[j] = ages[i] + 1
            j += 1
    for i in range(new.shape[0]):
        out_h[j + i] = new[i]
    return out_h, out_a


_F32_2D = np.zeros((1, 1), dtype=np.float32)
_F32 = np.zeros(0, dtype=np.float32)
_I64 = np.zeros(0, dtype=np.int64)
_U32 = np.zeros(0, dtype=np.uint32)
_F64 = np.zeros(0, dtype=np.float64)


def warm_up() -> None:
    """Compile (or load from the cache) every kernel for the argument types the serving core passes."""
    idx = np.array([1], dtype=np.int64)
    interest_preference(idx, np.array([1], dtype=np.int64), np.zeros(1, np.uint8), 1, np.ones(256, np.float32),
                        0.5, 1.0, np.ones((2, 1), np.float32), _F32, 1.0, 1.0)
    adjust_scores(np.ones(1, np.float32), idx, _F32_2D, _F32, _F32, _I64, 0.0, np.zeros(1, np.uint32), _U32, _F64)
    order = top_order(np.ones(1, np.float64), 1)
    capped_order(idx, order, np.ones((2, 1), dtype=np.bool_), 1, 1)
    most_similar(np.ones((2, 2), np.float32), idx, idx)
    mmr_order(np.ones((2, 2), np.float32), idx, np.ones(1, np.float64), 1, 0.5)
    push_shown(_U32, np.zeros(0, np.uint8), np.zeros(1, np.uint32), 3)
