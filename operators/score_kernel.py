"""Exact scoring of rows of user vectors as one compiled call per batch (numba ``cfunc`` through ctypes, the
pattern and the reasons of :mod:`operators.kernels`: no array arguments, no numba runtime, safe on pyflink's
thread-mode task threads).

The whole call holds the GIL. That is deliberate: in thread mode every Python function of a TaskManager shares
one interpreter, and a call that releases the GIL (a BLAS product in numpy, onnxruntime's ``run``) waits to get
it back for as long as another task thread (the trending operator, the model loader) keeps it, up to the
interpreter's switch interval. So the logits over the catalog come from numpy's own OpenBLAS called through
:class:`ctypes.PyDLL` (``sgemv`` for one row, ``sgemm`` for a batch, one BLAS thread, GIL held: ~36 us per row at
batch 32 and 10,000 items, three to five times the kernel's own loop, which stays as the fallback), then the kernel adds
the co-occurrence blend (:mod:`operators.scoring`: z-scores over the catalog, the logits' moments from the
table's column sums and Gram matrix), masks padding and the excluded items, and keeps the best ``C`` with a
heap: one pass over the row, where numpy needs a dozen calls and a partial sort (~300 us -> ~30 us per row at
10,000 items on the 2-core VM).
"""

from __future__ import annotations

import ctypes
import glob
import os

import numpy as np
from numba import carray, cfunc, types

from operators.kernels import _ptr

__all__ = ["ScoreKernel"]

# control block (int64)
_B, _V1, _D, _N, _R, _X, _C, _BETA_ON = range(8)
_LOGITS, _TABLE_SUM, _GRAM, _NEIGH, _WEIGHTS, _DECAY, _RECENT, _EXCL, _CO, _MARK, _TOUCH, _OS, _OI, _VECS = range(
    16, 30)
_TABLE, _ANN, _CAND, _KC, _CBUF, _T16, _LUT = range(30, 37)
_NEG = -1e9


@cfunc(types.int64(types.voidptr, types.voidptr), cache=True, fastmath={"reassoc", "contract"})
def _score(iptr, fptr):  # noqa: ANN001, ANN202, C901, PLR0912, PLR0915 - one pass on purpose
    ctl = carray(iptr, (40,), np.int64)
    fl = carray(fptr, (8,), np.float64)
    rows, v1, d, nn, r_len, x_len, c_len = ctl[_B], ctl[_V1], ctl[_D], ctl[_N], ctl[_R], ctl[_X], ctl[_C]
    beta = fl[0]
    logits = carray(_ptr(ctl[_LOGITS]), (rows, v1), np.float32)
    vecs = carray(_ptr(ctl[_VECS]), (rows, d), np.float32)
    tsum = carray(_ptr(ctl[_TABLE_SUM]), (d,), np.float64)
    gram = carray(_ptr(ctl[_GRAM]), (d, d), np.float64)
    excl = carray(_ptr(ctl[_EXCL]), (rows, max(x_len, 1)), np.int64)
    co = carray(_ptr(ctl[_CO]), (v1,), np.float64)
    mark = carray(_ptr(ctl[_MARK]), (v1,), np.uint8)
    out_s = carray(_ptr(ctl[_OS]), (rows, c_len), np.float32)
    out_i = carray(_ptr(ctl[_OI]), (rows, c_len), np.int64)
    n = v1 - 1
    if ctl[_TABLE] != 0:  # the logits here, with the GIL held (a BLAS call would release it: see the module doc)
        table = carray(_ptr(ctl[_TABLE]), (v1, d), np.float32)
        for j in range(v1):
            for r in range(rows):
                acc = np.float32(0.0)
                for i in range(d):
                    acc += table[j, i] * vecs[r, i]
                logits[r, j] = acc
    for r in range(rows):
        a = 1.0
        b = 0.0
        c = 0.0
        n_touch = 0
        touch = carray(_ptr(ctl[_TOUCH]), (max(r_len * nn, 1),), np.int64)
        if ctl[_BETA_ON] != 0:
            neigh = carray(_ptr(ctl[_NEIGH]), (v1, nn), np.int64)
            weights = carray(_ptr(ctl[_WEIGHTS]), (v1, nn), np.float32)
            decay = carray(_ptr(ctl[_DECAY]), (r_len,), np.float32)
            recent = carray(_ptr(ctl[_RECENT]), (rows, r_len), np.int64)
            # the logits' moments over items 1..V: sum = vec . s, sum of squares = vec' G vec
            total = 0.0
            squares = 0.0
            for i in range(d):
                vi = np.float64(vecs[r, i])
                total += vi * tsum[i]
                acc = 0.0
                for j in range(d):
                    acc += gram[i, j] * vecs[r, j]
                squares += vi * acc
            m_mean = total / n
            m_var = (squares - total * m_mean) / (n - 1)
            m_std = np.sqrt(m_var) if m_var > 0 else 0.0
            # co-occurrence over the newest r_len items, accumulated sparsely
            for t in range(r_len):
                item = recent[r, t]
                if item <= 0 or item >= v1:
                    continue
                w_t = decay[t]
                for k in range(nn):
                    j = neigh[item, k]
                    w = weights[item, k] * w_t
                    if w == 0.0 or j < 0 or j >= v1:
                        continue
                    if mark[j] & 1 == 0:
                        mark[j] |= 1
                        touch[n_touch] = j
                        n_touch += 1
                    co[j] += w
            c_total = 0.0
            c_squares = 0.0
            for k in range(n_touch):
                j = touch[k]
                if j != 0:
                    c_total += co[j]
                    c_squares += co[j] * co[j]
            c_mean = c_total / n
            c_var = (c_squares - c_total * c_mean) / (n - 1)
            c_std = np.sqrt(c_var) if c_var > 0 else 0.0
            a = (1.0 - beta) / (m_std + 1e-6)
            b = beta / (c_std + 1e-6)
            c = -(m_mean * a + c_mean * b)
            if ctl[_ANN] == 0:
                row = logits[r]
                af = np.float32(a)
                cf = np.float32(c)
                for j in range(v1):  # branch-free, vectorised: the affine part of the blend
                    row[j] = row[j] * af + cf
                for k in range(n_touch):  # then the co-occurrence term of the touched items
                    j = touch[k]
                    row[j] = np.float32(row[j] + co[j] * b)
        ann = ctl[_ANN] != 0
        row = logits[r]
        kc = ctl[_KC]
        cbuf = carray(_ptr(ctl[_CBUF]), (max(kc + r_len * nn, 1),), np.int64)
        if ann:  # the candidates: the index's (given) and every item the co-occurrence scores touched, once each
            cand = carray(_ptr(ctl[_CAND]), (rows, max(kc, 1)), np.int64)
            n_scan = 0
            for k in range(kc):
                j = cand[r, k]
                if 0 < j < v1 and (mark[j] & 8) == 0:
                    mark[j] |= 8
                    cbuf[n_scan] = j
                    n_scan += 1
            for k in range(n_touch):
                j = touch[k]
                if 0 < j < v1 and (mark[j] & 8) == 0:
                    mark[j] |= 8
                    cbuf[n_scan] = j
                    n_scan += 1
            for k in range(x_len):
                j = excl[r, k]
                if 0 <= j < v1:
                    mark[j] |= 2
        else:
            for k in range(x_len):
                j = excl[r, k]
                if 0 <= j < v1:
                    row[j] = np.float32(_NEG)
            row[0] = np.float32(_NEG)
            n_scan = v1
        t16 = carray(_ptr(ctl[_T16]), (v1 if ann else 1, d), np.uint16)
        lut = carray(_ptr(ctl[_LUT]), (65536 if ann else 1,), np.float32)
        # the best c_len by a min-heap on (score, -index): ties keep the lower index, as a stable sort would
        hs = out_s[r]  # the output row is the heap
        hi = out_i[r]
        size = 0
        for q in range(n_scan):
            if ann:  # scored exactly from the float16 table (decoded through a lookup table)
                j = cbuf[q]
                if mark[j] & 2:
                    s = np.float32(_NEG)
                else:
                    acc = np.float32(0.0)
                    for i in range(d):
                        acc += lut[t16[j, i]] * vecs[r, i]
                    s = np.float32(acc * a + c + co[j] * b)
            else:
                j = q
                s = row[j]
            if size < c_len:
                # sift up
                pos = size
                size += 1
                while pos > 0:
                    parent = (pos - 1) >> 1
                    if hs[parent] < s or (hs[parent] == s and hi[parent] > j):
                        break
                    hs[pos] = hs[parent]
                    hi[pos] = hi[parent]
                    pos = parent
                hs[pos] = s
                hi[pos] = j
            elif s > hs[0]:
                pos = 0
                while True:
                    left = 2 * pos + 1
                    if left >= c_len:
                        break
                    child = left
                    right = left + 1
                    if right < c_len and (hs[right] < hs[left] or (hs[right] == hs[left] and hi[right] > hi[left])):
                        child = right
                    if hs[child] < s or (hs[child] == s and hi[child] > j):
                        hs[pos] = hs[child]
                        hi[pos] = hi[child]
                        pos = child
                    else:
                        break
                hs[pos] = s
                hi[pos] = j
        # heap -> best first (pop the minimum to the end)
        end = size - 1
        while end > 0:
            ts, ti = hs[0], hi[0]
            hs[0], hi[0] = hs[end], hi[end]
            hs[end], hi[end] = ts, ti
            pos = 0
            while True:
                left = 2 * pos + 1
                if left >= end:
                    break
                child = left
                right = left + 1
                if right < end and (hs[right] < hs[left] or (hs[right] == hs[left] and hi[right] > hi[left])):
                    child = right
                if hs[child] < hs[pos] or (hs[child] == hs[pos] and hi[child] > hi[pos]):
                    tmp_s, tmp_i = hs[pos], hi[pos]
                    hs[pos], hi[pos] = hs[child], hi[child]
                    hs[child], hi[child] = tmp_s, tmp_i
                    pos = child
                else:
                    break
            end -= 1
        for k in range(size, c_len):  # fewer candidates than c_len (ANN on a tiny catalog): masked entries
            hs[k] = np.float32(_NEG)
            hi[k] = 0
        if ann:
            for q in range(n_scan):
                mark[cbuf[q]] = 0
            for k in range(x_len):
                j = excl[r, k]
                if 0 <= j < v1:
                    mark[j] = 0
        for k in range(n_touch):
            j = touch[k]
            co[j] = 0.0
            mark[j] = 0
    return 0


_CALL = ctypes.PYFUNCTYPE(ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p)(_score.address)

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112


def _gil_blas() -> tuple | None:
    """numpy's own OpenBLAS (the ``scipy-openblas`` build its wheels bundle) opened as a :class:`ctypes.PyDLL`:
    its ``sgemm``/``sgemv`` then run *with the GIL held*, which ``numpy.matmul`` does not (see the module doc).
    One BLAS thread (one query, one thread). ``None`` where numpy was built against another BLAS: the kernel
    then computes the logits itself."""
    found = sorted(glob.glob(os.path.join(os.path.dirname(np.__file__), os.pardir, "numpy.libs",
                                          "libscipy_openblas64_*.so")))
    if not found:
        return None
    try:
        lib = ctypes.PyDLL(found[0])
        gemm, gemv, threads = lib.scipy_cblas_sgemm64_, lib.scipy_cblas_sgemv64_, lib.scipy_openblas_set_num_threads64_
    except (OSError, AttributeError):
        return None
    i64, f32, ptr = ctypes.c_int64, ctypes.c_float, ctypes.c_void_p
    gemm.restype = gemv.restype = None
    gemm.argtypes = [i64] * 6 + [f32, ptr, i64, ptr, i64, f32, ptr, i64]
    gemv.argtypes = [i64] * 4 + [f32, ptr, i64, ptr, i64, f32, ptr, i64]
    threads.argtypes = [ctypes.c_int]
    threads(1)
    return gemm, gemv


_BLAS = _gil_blas()


class ScoreKernel:
    """Owns the kernel's buffers for one scorer: constants at construction, per-call inputs copied in."""

    def __init__(self, table_sum: np.ndarray, gram: np.ndarray, n_rows: int, dim: int, n_candidates: int, *,
                 neighbors: np.ndarray | None, weights: np.ndarray | None, decay: np.ndarray | None,
                 beta: float, table: np.ndarray | None = None, table16: np.ndarray | None = None,
                 ann_k: int = 0) -> None:
        self.ctl = np.zeros(40, np.int64)
        self.fl = np.zeros(8, np.float64)
        self._keep = [self.ctl, self.fl]
        self.tsum = np.ascontiguousarray(table_sum, np.float64)
        self.gram = np.ascontiguousarray(gram, np.float64)
        self.co = np.zeros(n_rows, np.float64)
        self.mark = np.zeros(n_rows, np.uint8)
        self.v1, self.dim, self.c = n_rows, dim, n_candidates
        ctl = self.ctl
        ctl[_V1], ctl[_D], ctl[_C] = n_rows, dim, n_candidates
        ctl[_TABLE_SUM], ctl[_GRAM] = self.tsum.ctypes.data, self.gram.ctypes.data
        ctl[_CO], ctl[_MARK] = self.co.ctypes.data, self.mark.ctypes.data
        self.beta_on = beta > 0 and neighbors is not None
        self.fl[0] = beta
        if self.beta_on:
            self.neigh = np.ascontiguousarray(neighbors, np.int64)
            self.weights = np.ascontiguousarray(weights, np.float32)
            self.decay = np.ascontiguousarray(decay, np.float32)
            ctl[_BETA_ON], ctl[_N], ctl[_R] = 1, self.neigh.shape[1], len(self.decay)
            ctl[_NEIGH], ctl[_WEIGHTS], ctl[_DECAY] = (self.neigh.ctypes.data, self.weights.ctypes.data,
                                                       self.decay.ctypes.data)
            self.touch = np.zeros(max(len(self.decay) * self.neigh.shape[1], 1), np.int64)
        else:
            ctl[_R] = 1
            self.touch = np.zeros(1, np.int64)
        ctl[_TOUCH] = self.touch.ctypes.data
        self.table = None if table is None else np.ascontiguousarray(table, np.float32)
        self._table_t: np.ndarray | None = None
        self._tt_addr = 0
        # ANN mode: candidates given per row, scored from the float16 table (as uint16 bits + a decoding table)
        self.ann = table16 is not None
        if self.ann:
            self.t16 = np.ascontiguousarray(table16, np.float16).view(np.uint16)
            self.lut = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)
            ctl[_ANN], ctl[_T16], ctl[_LUT] = 1, self.t16.ctypes.data, self.lut.ctypes.data
        self.ann_k = ann_k
        self.cap_rows = self.cap_x = 0
        self._ensure(1, 256)

    def _ensure(self, rows: int, x_len: int) -> None:
        """Buffers for ``rows`` rows of ``x_len`` exclusions (grown, never shrunk; addresses cached in the
        control block: reading an array's address costs more than copying a row into it)."""
        if rows <= self.cap_rows and x_len <= self.cap_x:
            return
        self.cap_rows = max(rows, self.cap_rows)
        self.cap_x = max(x_len, self.cap_x, 1)
        r_len = int(self.ctl[_R])
        self.logits = np.empty((self.cap_rows, 1 if self.ann else self.v1), np.float32)
        self.cand = np.zeros((self.cap_rows, max(self.ann_k, 1)), np.int64)
        self.cbuf = np.zeros(max(self.ann_k, 0) + r_len * max(int(self.ctl[_N]), 1) + 1, np.int64)
        self.ctl[_CAND], self.ctl[_CBUF], self.ctl[_KC] = self.cand.ctypes.data, self.cbuf.ctypes.data, self.ann_k
        self.vecs = np.zeros((self.cap_rows, self.dim), np.float32)
        self.rec = np.zeros((self.cap_rows, r_len), np.int64)
        self.excl = np.zeros((self.cap_rows, self.cap_x), np.int64)
        self.out_s = np.empty((self.cap_rows, self.c), np.float32)
        self.out_i = np.empty((self.cap_rows, self.c), np.int64)
        ctl = self.ctl
        ctl[_LOGITS], ctl[_VECS], ctl[_RECENT] = self.logits.ctypes.data, self.vecs.ctypes.data, self.rec.ctypes.data
        ctl[_EXCL], ctl[_OS], ctl[_OI] = self.excl.ctypes.data, self.out_s.ctypes.data, self.out_i.ctypes.data
        ctl[_X] = self.cap_x
        self._ctl_addr, self._fl_addr = ctl.ctypes.data, self.fl.ctypes.data

    def run(self, table_t: np.ndarray, vecs: np.ndarray, recent: np.ndarray | None, exclude: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:
        """``table_t [D, V + 1]`` (the item table transposed), ``vecs [B, D]``, ``recent [B, R]``, ``exclude
        [B, X]`` -> (scores [B, C], indices [B, C]) best first."""
        rows = vecs.shape[0]
        self._ensure(rows, exclude.shape[1])
        self.vecs[:rows] = vecs
        self.ctl[_TABLE] = 0
        if self.table is not None and _BLAS is not None:  # BLAS with the GIL held: batch 32 at ~40 us per row
            self._logits_blas(table_t, rows)
        elif self.table is not None:
            self.ctl[_TABLE] = self.table.ctypes.data  # the kernel's own loop (no usable BLAS)
        elif not self.ann:
            np.matmul(vecs, table_t, out=self.logits[:rows])  # one BLAS product for the batch
        self.excl[:rows, : exclude.shape[1]] = exclude
        self.excl[:rows, exclude.shape[1]:] = 0  # padding: masked anyway
        if self.beta_on:
            r_len = int(self.ctl[_R])
            self.rec[:rows] = 0
            if recent is not None:
                tail = recent[:, -r_len:]
                self.rec[:rows, r_len - tail.shape[1]:] = tail
        self.ctl[_B] = rows
        _CALL(self._ctl_addr, self._fl_addr)
        return self.out_s[:rows].copy(), self.out_i[:rows].copy()

    def _logits_blas(self, table_t: np.ndarray, rows: int) -> None:
        """``logits[:rows] = vecs[:rows] @ table_t`` through :data:`_BLAS` (a matrix-vector product for one row:
        OpenBLAS's ``sgemm`` with one row is ten times slower than its ``sgemv``)."""
        gemm, gemv = _BLAS  # type: ignore[misc]
        d, v1 = table_t.shape
        if table_t is not self._table_t:  # the pointer, checked once per table
            assert table_t.dtype == np.float32 and table_t.flags.c_contiguous and v1 == self.v1 and d == self.dim
            self._table_t, self._tt_addr = table_t, table_t.ctypes.data
        vec_addr, out_addr = int(self.ctl[_VECS]), int(self.ctl[_LOGITS])
        if rows == 1:
            gemv(_ROW_MAJOR, _TRANS, d, v1, 1.0, self._tt_addr, v1, vec_addr, 1, 0.0, out_addr, 1)
        else:
            gemm(_ROW_MAJOR, _NO_TRANS, _NO_TRANS, rows, v1, d, 1.0, vec_addr, d, self._tt_addr, v1, 0.0, out_addr,
                 v1)

    def run_ann(self, found: np.ndarray, vecs: np.ndarray, recent: np.ndarray | None, exclude: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
        """ANN mode: ``found [B, k]`` the index's candidates (item indices, -1 where fewer), the rest as
        :meth:`run`; the union with the co-occurrence items is scored exactly."""
        rows = vecs.shape[0]
        if found.shape[1] > self.ann_k:  # wider than the buffers: grow them
            self.ann_k, self.cap_rows = found.shape[1], 0
        self._ensure(rows, exclude.shape[1])
        k = found.shape[1]
        self.cand[:rows, :k] = found[:, :k]
        self.cand[:rows, k:] = -1
        return self.run(None, vecs, recent, exclude)  # type: ignore[arg-type]
