"""The per-event re-ranking arithmetic as one compiled call (numba ``cfunc``, called through ctypes).

The rules are documented where they are configured (:mod:`operators.rerank`, :mod:`operators.interests`); this
module is their one implementation. Why it looks like this:

- On ~100 candidates every rule is a handful of numpy calls on arrays of 10-200 values, and at that size numpy's
  per-call overhead is the whole cost: ~50 calls, 100-150 us per event on the 2-core VM
  (``perf/results/rerank.json``). One compiled pass does the same in a few microseconds.
- numba's ordinary ``@njit`` functions cannot run in the job: they release every array argument through
  ``PyGILState_Ensure``, which hangs pyflink's thread-mode task threads (:mod:`operators.imports`). A ``cfunc``
  taking two raw pointers has no array arguments and no runtime: it reads and writes buffers this module owns
  (their addresses sit in an int64 control block), allocates nothing and raises nothing; ctypes calls it
  with the GIL held (``PYFUNCTYPE``: no thread-state switch at all, and no wait for the GIL to come back from
  the worker's other threads).
- Inputs are copied into those buffers (~0.4 us each); reading an array's address costs more (~2 us).

``cache=True`` keeps the compiled code beside this file (``__pycache__``, or numba's user cache when that is not
writable), so a worker compiles once per machine; import this module with
:func:`operators.imports.import_in_regular_thread` (the compilation runs there).
"""

from __future__ import annotations

import ctypes

import numpy as np
from numba import carray, cfunc, types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = ["StepKernel", "FULL", "ADJUST", "FINISH", "PREFERENCE"]

FULL, ADJUST, FINISH, PREFERENCE = 0, 1, 2, 3
"""Modes: bonuses + penalties + top-K + finish; bonuses + penalties only (the caller orders: MMR, category cap);
finish a given order; the interest preference vector only."""

# control block slots (int64)
_MODE, _N, _K, _C, _M, _NEWEST, _SHORT_MS, _HAS_AFF, _HAS_TREND, _S, _WINDOW, _NRES, _R, _D, _PREF = range(15)
_ROWS_N, _TREND_N, _EMB_N = 15, 16, 17
_OUT_K, _OUT_NS, _OUT_HAS_PREF = 20, 21, 22
_A = 32  # addresses from here
(_ROWS, _EMB, _WEIGHTS, _BY_AGE, _TREND, _SCORES, _ITEMS, _HASHES, _WTYPES, _WIDX, _WTS, _AFF, _SH, _SA, _RESHOWN,
 _RECENT, _PREFV, _ADJ, _ORDER, _PICKED, _OSCORES, _BECAUSE, _NH, _NA) = range(_A, _A + 24)
# float slots
_DECAY, _SHORT_BOOST, _LONG_BOOST, _VIEWED = range(4)
PREF_COMPUTE, PREF_GIVEN, PREF_NONE = 0, 1, -1


@intrinsic
def _ptr(typingctx, addr):  # noqa: ANN001, ANN202 - numba intrinsic
    """An integer address as a ``void*`` (for :func:`numba.carray`)."""

    def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202, ARG001
        return builder.inttoptr(args[0], cgutils.voidptr_t)

    return types.voidptr(types.int64), codegen


@cfunc(types.int64(types.voidptr, types.voidptr), cache=True, fastmath={"reassoc", "contract"})
def _step(iptr, fptr):  # noqa: ANN001, ANN202, C901, PLR0912, PLR0915 - one pass on purpose
    ctl = carray(iptr, (64,), np.int64)
    fl = carray(fptr, (8,), np.float64)
    mode = ctl[_MODE]
    n_cat = ctl[_C]
    rows_n = ctl[_ROWS_N]
    rows = carray(_ptr(ctl[_ROWS]), (max(rows_n, 1), max(n_cat, 1)), np.float32)
    pref = carray(_ptr(ctl[_PREFV]), (max(n_cat, 1),), np.float32)
    has_pref = 0
    if ctl[_PREF] == PREF_GIVEN and n_cat > 0:
        has_pref = 1
    elif ctl[_PREF] == PREF_COMPUTE and n_cat > 0:
        # short term: window events (newest last) within short_ms of the newest, weight[type] * decay ** after
        m = ctl[_M]
        weights = carray(_ptr(ctl[_WEIGHTS]), (256,), np.float32)
        wtypes = carray(_ptr(ctl[_WTYPES]), (max(m, 1),), np.uint8)
        widx = carray(_ptr(ctl[_WIDX]), (max(m, 1),), np.int64)
        wts = carray(_ptr(ctl[_WTS]), (max(m, 1),), np.int64)
        for c in range(n_cat):
            pref[c] = 0.0
        cut = ctl[_NEWEST] - ctl[_SHORT_MS]
        recency = 1.0
        decay = fl[_DECAY]
        j = m - 1
        while j >= 0 and wts[j] >= cut:
            item = widx[j]
            if 0 < item < rows_n:
                w = weights[wtypes[j]] * recency
                for c in range(n_cat):
                    pref[c] += w * rows[item, c]
            recency *= decay
            j -= 1
        mass = 0.0
        for c in range(n_cat):
            mass += abs(pref[c])
        if mass > 1e-9 and fl[_SHORT_BOOST] != 0.0:
            scale = fl[_SHORT_BOOST] / mass
            for c in range(n_cat):
                pref[c] *= scale
            has_pref = 1
        else:
            for c in range(n_cat):
                pref[c] = 0.0
        # long term: the decayed affinity kept in state, scaled to its own boost
        if ctl[_HAS_AFF] != 0 and fl[_LONG_BOOST] != 0.0:
            aff = carray(_ptr(ctl[_AFF]), (n_cat,), np.float32)
            mass = 0.0
            for c in range(n_cat):
                mass += abs(aff[c])
            if mass > 1e-9:
                scale = fl[_LONG_BOOST] / mass
                for c in range(n_cat):
                    pref[c] += aff[c] * scale
                has_pref = 1
    ctl[_OUT_HAS_PREF] = has_pref
    if mode == PREFERENCE:
        return 0

    n = ctl[_N]
    scores = carray(_ptr(ctl[_SCORES]), (max(n, 1),), np.float32)
    items = carray(_ptr(ctl[_ITEMS]), (max(n, 1),), np.int64)
    hashes = carray(_ptr(ctl[_HASHES]), (max(n, 1),), np.uint32)
    adj = carray(_ptr(ctl[_ADJ]), (max(n, 1),), np.float32)
    s = ctl[_S]
    sh = carray(_ptr(ctl[_SH]), (max(s, 1),), np.uint32)
    sa = carray(_ptr(ctl[_SA]), (max(s, 1),), np.uint8)
    if mode != FINISH:
        trend_n = ctl[_TREND_N] if ctl[_HAS_TREND] != 0 else 0
        trend = carray(_ptr(ctl[_TREND]), (max(trend_n, 1),), np.float32)
        by_age = carray(_ptr(ctl[_BY_AGE]), (256,), np.float32)
        n_res = ctl[_NRES]
        reshown = carray(_ptr(ctl[_RESHOWN]), (max(n_res, 1),), np.int64)
        viewed = fl[_VIEWED]
        for i in range(n):
            item = items[i]
            v = np.float64(scores[i])
            if 0 <= item < trend_n:
                v += trend[item]
            if has_pref != 0 and 0 <= item < rows_n:
                acc = 0.0
                for c in range(n_cat):
                    acc += rows[item, c] * pref[c]
                v += acc
            for r in range(n_res):
                if reshown[r] == item:
                    v -= viewed
                    break
            h = hashes[i]
            for j in range(s):
                if sh[j] == h:
                    v -= by_age[sa[j]]
            adj[i] = v
        if mode == ADJUST:
            return 0

    k = ctl[_K]
    order = carray(_ptr(ctl[_ORDER]), (max(k, 1),), np.int64)
    if mode == FULL:  # the k best, best first; ties keep the candidates' order (a stable sort's)
        count = 0
        for i in range(n):
            v = adj[i]
            if count < k:
                p = count
                count += 1
            elif v > adj[order[k - 1]]:
                p = k - 1
            else:
                continue
            while p > 0 and v > adj[order[p - 1]]:
                order[p] = order[p - 1]
                p -= 1
            order[p] = i
        k = count
    picked = carray(_ptr(ctl[_PICKED]), (max(k, 1),), np.int64)
    oscores = carray(_ptr(ctl[_OSCORES]), (max(k, 1),), np.float64)
    for j in range(k):
        o = order[j]
        picked[j] = items[o]
        oscores[j] = np.rint(np.float64(adj[o]) * 1e6) / 1e6  # 6 decimals, in float64
    # explanations: the recent item most similar to each picked one (first of equals)
    r_n = ctl[_R]
    dim = ctl[_D]
    emb_n = ctl[_EMB_N]
    if r_n > 0 and dim > 0:
        emb = carray(_ptr(ctl[_EMB]), (emb_n, dim), np.float32)
        recent = carray(_ptr(ctl[_RECENT]), (r_n,), np.int64)
        because = carray(_ptr(ctl[_BECAUSE]), (max(k, 1),), np.int64)
        for j in range(k):
            a = picked[j]
            best = -np.inf
            arg = recent[0]
            if 0 <= a < emb_n:
                for t in range(r_n):
                    b = recent[t]
                    if 0 <= b < emb_n:
                        sim = 0.0
                        for d in range(dim):
                            sim += emb[a, d] * emb[b, d]
                        if sim > best:
                            best = sim
                            arg = b
            because[j] = arg
    # the shown history after this list: older lists age by one, those beyond the window leave
    window = ctl[_WINDOW]
    ns = 0
    if window > 0:
        nh = carray(_ptr(ctl[_NH]), (s + k + 1,), np.uint32)
        na = carray(_ptr(ctl[_NA]), (s + k + 1,), np.uint8)
        for j in range(s):
            if sa[j] < window - 1:
                nh[ns] = sh[j]
                na[ns] = sa[j] + 1
                ns += 1
        for j in range(k):
            nh[ns] = hashes[order[j]]
            na[ns] = 0
            ns += 1
    ctl[_OUT_K] = k
    ctl[_OUT_NS] = ns
    return 0


# PYFUNCTYPE: called with the GIL held. The step takes microseconds and touches no Python object; releasing the
# GIL around it (CFUNCTYPE) would hand it to another thread of the worker (the trending operator, another subtask)
# and make this one wait for it back: a switch interval (5 ms) at worst, on the per-event path.
_CALL = ctypes.PYFUNCTYPE(ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p)(_step.address)


class StepKernel:
    """Buffers and constants of one re-ranker (or one interest profile), and the compiled call over them.

    ``rows``: the catalog's category rows ``[V + 1, C]`` (None: no interests, no category bonus); ``emb``: item
    embeddings ``[V + 1, D]`` (None: no explanations); ``weights``: per window type code (``[256]``);
    ``by_age``: the repeat penalty per list age (``[256]``); ``horizon``: the most window events the short-term
    profile reads."""

    def __init__(self, *, rows: np.ndarray | None = None, emb: np.ndarray | None = None,
                 weights: np.ndarray | None = None, by_age: np.ndarray | None = None, decay: float = 1.0,
                 short_ms: int = 0, horizon: int = 1024, short_boost: float = 0.0, long_boost: float = 0.0,
                 viewed_penalty: float = 0.0, window: int = 0, explain_recent: int = 0) -> None:
        self._ctl = np.zeros(64, dtype=np.int64)
        self._fl = np.zeros(8, dtype=np.float64)
        self._keep: dict[int, np.ndarray] = {}  # slot -> the array whose address is there (kept alive)
        self._iaddr, self._faddr = self._ctl.ctypes.data, self._fl.ctypes.data
        self.horizon = horizon
        self.window = window
        self.explain_recent = explain_recent
        self.n_cat = 0 if rows is None or rows.ndim != 2 else rows.shape[1]
        ctl, fl = self._ctl, self._fl
        ctl[_C] = self.n_cat
        ctl[_SHORT_MS] = short_ms
        ctl[_WINDOW] = window
        fl[_DECAY], fl[_SHORT_BOOST], fl[_LONG_BOOST], fl[_VIEWED] = decay, short_boost, long_boost, viewed_penalty
        if self.n_cat:
            self._set(_ROWS, np.ascontiguousarray(rows, dtype=np.float32))
            ctl[_ROWS_N] = rows.shape[0]
        self._set(_WEIGHTS, np.zeros(256, np.float32) if weights is None else weights.astype(np.float32))
        self._set(_BY_AGE, np.zeros(256, np.float32) if by_age is None else by_age.astype(np.float32))
        self.dim = 0
        if emb is not None and explain_recent:
            self._set(_EMB, np.ascontiguousarray(emb, dtype=np.float32))
            ctl[_EMB_N], self.dim = emb.shape
        self._trend: np.ndarray | None = None
        sizes = {_SCORES: (128, np.float32), _ITEMS: (128, np.int64), _HASHES: (128, np.uint32),
                 _ADJ: (128, np.float32), _WTYPES: (64, np.uint8), _WIDX: (64, np.int64), _WTS: (64, np.int64),
                 _AFF: (max(self.n_cat, 1), np.float32), _PREFV: (max(self.n_cat, 1), np.float32),
                 _SH: (64, np.uint32), _SA: (64, np.uint8), _RESHOWN: (16, np.int64), _RECENT: (max(explain_recent, 1),
                 np.int64), _ORDER: (128, np.int64), _PICKED: (128, np.int64), _OSCORES: (128, np.float64),
                 _BECAUSE: (128, np.int64), _NH: (192, np.uint32), _NA: (192, np.uint8)}
        for slot, (size, dtype) in sizes.items():
            self._set(slot, np.zeros(size, dtype))

    def _set(self, slot: int, array: np.ndarray) -> np.ndarray:
        self._keep[slot] = array
        self._ctl[slot] = array.ctypes.data
        return array

    def _fit(self, slot: int, n: int) -> np.ndarray:
        """The buffer of ``slot``, grown to hold ``n`` values."""
        buf = self._keep[slot]
        if len(buf) < n:
            buf = self._set(slot, np.zeros(max(n, 2 * len(buf)), buf.dtype))
        return buf

    def _profile(self, indices: np.ndarray, ts: np.ndarray, types_: np.ndarray, newest: int,
                 affinity: np.ndarray | None) -> None:
        ctl = self._ctl
        m = min(len(ts), self.horizon)
        if m:
            self._fit(_WTYPES, m)[:m] = types_[-m:]
            self._fit(_WIDX, m)[:m] = indices[-m:]
            self._fit(_WTS, m)[:m] = ts[-m:]
        ctl[_M] = m
        ctl[_NEWEST] = newest
        if affinity is not None and affinity.size == self.n_cat:
            self._keep[_AFF][: self.n_cat] = affinity
            ctl[_HAS_AFF] = 1
        else:
            ctl[_HAS_AFF] = 0
        ctl[_PREF] = PREF_COMPUTE

    def preference(self, indices: np.ndarray, ts: np.ndarray, types_: np.ndarray, newest: int,
                   affinity: np.ndarray | None) -> np.ndarray | None:
        """The interest preference vector (float32 ``[C]``, a copy), or None when the user has no profile."""
        if not self.n_cat:
            return None
        self._profile(indices, ts, types_, newest, affinity)
        self._ctl[_MODE] = PREFERENCE
        _CALL(self._iaddr, self._faddr)
        return self._keep[_PREFV][: self.n_cat].copy() if self._ctl[_OUT_HAS_PREF] else None

    def load(self, items: np.ndarray, scores: np.ndarray, hashes: np.ndarray, shown_hashes: np.ndarray,
             shown_ages: np.ndarray, recent: np.ndarray, *, profile: tuple | None = None,
             preference: np.ndarray | None = None, trend: np.ndarray | None = None,
             reshown: np.ndarray | None = None) -> None:
        """Copy one user's candidates and context into the buffers (then :meth:`run`). ``profile``:
        ``(indices, ts, types, newest, affinity)`` of the window, for the interest preference computed in the
        kernel; or ``preference`` given; ``recent``: catalog indices, oldest first, for explanations."""
        ctl = self._ctl
        n = len(items)
        if n > len(self._keep[_SCORES]):
            for slot in (_SCORES, _ITEMS, _HASHES, _ADJ, _ORDER, _PICKED, _OSCORES, _BECAUSE):
                self._fit(slot, n)
        self._keep[_SCORES][:n] = scores
        self._keep[_ITEMS][:n] = items
        self._keep[_HASHES][:n] = hashes
        ctl[_N] = n
        if profile is not None and self.n_cat:
            self._profile(*profile)
        elif preference is not None and self.n_cat:
            self._keep[_PREFV][: self.n_cat] = preference
            ctl[_PREF] = PREF_GIVEN
        else:
            ctl[_PREF] = PREF_NONE
        if trend is not None:
            if trend is not self._trend:  # a new trending table: point at it
                self._trend = trend
                self._set(_TREND, np.ascontiguousarray(trend, dtype=np.float32))
                ctl[_TREND_N] = len(trend)
            ctl[_HAS_TREND] = 1
        else:
            ctl[_HAS_TREND] = 0
        s = len(shown_hashes)
        if s:
            self._fit(_SH, s)[:s] = shown_hashes
            self._fit(_SA, s)[:s] = shown_ages
        ctl[_S] = s
        if s + n + 1 > len(self._keep[_NH]):
            self._fit(_NH, s + n + 1)
            self._fit(_NA, s + n + 1)
        n_res = 0 if reshown is None else len(reshown)
        if n_res:
            self._fit(_RESHOWN, n_res)[:n_res] = reshown
        ctl[_NRES] = n_res
        r = min(len(recent), self.explain_recent) if self.dim else 0
        if r:
            self._keep[_RECENT][:r] = recent[-r:]
        ctl[_R] = r
        ctl[_D] = self.dim if r else 0

    def run(self, k: int, order: np.ndarray | None = None) -> None:
        """After :meth:`load`: the ``k`` best (``order`` None), or the given ``order`` finished (scores,
        explanations, shown history)."""
        ctl = self._ctl
        if order is None:
            ctl[_MODE], ctl[_K] = FULL, k
        else:
            ctl[_MODE], ctl[_K] = FINISH, len(order)
            self._keep[_ORDER][: len(order)] = order
        _CALL(self._iaddr, self._faddr)

    def adjusted(self) -> np.ndarray:
        """After :meth:`load`: every candidate's adjusted score (bonuses and penalties; a copy), for orders
        computed outside (MMR, the category cap)."""
        self._ctl[_MODE] = ADJUST
        _CALL(self._iaddr, self._faddr)
        return self._keep[_ADJ][: self._ctl[_N]].copy()

    def result(self) -> tuple[np.ndarray, np.ndarray, list[float], np.ndarray | None, np.ndarray, np.ndarray]:
        """``(order, picked, scores, because, shown_hashes, shown_ages)`` of the last :meth:`run` (copies;
        ``because`` None without explanations; scores rounded to 6 decimals)."""
        ctl, keep = self._ctl, self._keep
        k, ns = int(ctl[_OUT_K]), int(ctl[_OUT_NS])
        because = keep[_BECAUSE][:k].copy() if ctl[_D] else None
        return (keep[_ORDER][:k].copy(), keep[_PICKED][:k].copy(), keep[_OSCORES][:k].tolist(), because,
                keep[_NH][:ns].copy(), keep[_NA][:ns].copy())
