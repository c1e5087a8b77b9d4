"""Candidate scoring outside the model graph: the user's vector -> the best ``C`` items, exactly or through an
approximate nearest-neighbour index, with the co-occurrence blend and the exclusion rule.

A recurrent bundle of format 3 (:mod:`operators.bundle`) ships graphs that only advance the user's state; the
scores are computed here, in numpy (and faiss above the crossover catalog size), as the exported torch head
defines them (:class:`model_export.model.ServingHead`, checked at export)::

    logits   = E @ vec                                  (E: the item table, row 0 = padding = 0)
    co       = sum_t decay[t] * S[recent_t, :]          (S: each item's top-N co-occurring items)
    score    = (1 - beta) * z(logits) + beta * z(co)    (z: z-score over the catalog, padding excluded)
    top-C of score with padding and ``exclude`` masked

The z-scores need each row's mean and standard deviation over the whole catalog. For the logits they follow
from the table's column sums ``s`` and Gram matrix ``G = E^T E`` (``sum logits = vec . s``, ``sum logits^2 =
vec^T G vec``), an ``O(D^2)`` computation; for the co-occurrence scores from their few non-zero entries. So
the cost of a row is that of finding the candidates:

* **exact** (catalogs up to ``exact_max_items``): one matrix product over the table and a partial sort;
* **ann** (larger catalogs): the index's top ``k`` by inner product (faiss IVF, one thread) united with every
  item the co-occurrence scores touch (an item outside both can only score ``a * logit + const`` below the
  index's candidates), then the union scored exactly from the float16 table, in the same compiled pass
  (:mod:`operators.score_kernel`). Its cost does not grow with the catalog beyond the index's probes.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["NEG", "Scorer", "ScorerConfig", "build_ann_index", "EXACT_MAX_ITEMS"]

log = logging.getLogger(__name__)

NEG = np.float32(-1e9)
"""Score of masked items (padding, excluded): the graph's value, finite so an all-masked row is no NaN."""
EXACT_MAX_ITEMS = 50_000
"""Default crossover: catalogs up to this size are scored exactly, larger ones through the ANN index. Measured
(``python -m perf.bench_scaling``, batch 1, one thread): step + exact scoring 0.23-0.40 ms at 10k items,
3.7-4.2 ms at 100k; step + ANN 0.58 ms at 10k, 0.90 ms at 100k and 1.19 ms at 1M (exact: 28.5-30 ms)."""


@dataclass(frozen=True, slots=True)
class ScorerConfig:
    """How candidates are found: ``exact_max_items`` (above it the ANN index, when the bundle has one), and the
    index's search width: ``ann_k`` candidates per row (at least ``C`` + the row's excluded items) from
    ``nprobe`` inverted lists."""

    exact_max_items: int = EXACT_MAX_ITEMS
    ann_k: int = 400
    nprobe: int = 48


def _moments_from_sums(total: np.ndarray, squares: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased std from per-row sums (the graph's ``_moments``)."""
    mean = total / n
    var = np.maximum((squares - total * mean) / (n - 1), 0.0)
    return mean, np.sqrt(var)


class Scorer:
    """Scores rows of user vectors against a bundle's item table (see the module docstring)."""

    def __init__(self, table: np.ndarray, n_candidates: int, *, neighbors: np.ndarray | None = None,
                 weights: np.ndarray | None = None, decay: np.ndarray | None = None, beta: float = 0.0,
                 index_path: Path | None = None, cfg: ScorerConfig | None = None) -> None:
        cfg = cfg or ScorerConfig()
        self.cfg = cfg
        self.table16 = np.ascontiguousarray(table, dtype=np.float16)  # [V + 1, D]
        self.n_rows, self.dim = self.table16.shape
        self.n_items = self.n_rows - 1
        self.n_candidates = min(n_candidates, self.n_items)
        body = self.table16[1:].astype(np.float64)
        self._sum = body.sum(axis=0)  # [D]
        self._gram = body.T @ body  # [D, D]
        del body
        self.beta = float(beta) if neighbors is not None and beta > 0 else 0.0
        if self.beta > 0:
            assert weights is not None and decay is not None
            self.neighbors = np.ascontiguousarray(neighbors, dtype=np.int64)
            self.weights = np.ascontiguousarray(weights, dtype=np.float32)
            self.decay = np.asarray(decay, dtype=np.float32)
            self.recent_len = len(self.decay)
        else:
            self.recent_len = 1
        self.index = None
        self.mode = "exact"
        if self.n_items > cfg.exact_max_items and index_path is not None:
            self.index = _read_index(index_path, cfg.nprobe)
            self.mode = "ann"
        from operators.imports import import_in_regular_thread

        kernels = import_in_regular_thread("operators.score_kernel")
        blend = {"neighbors": self.neighbors if self.beta > 0 else None,
                 "weights": self.weights if self.beta > 0 else None,
                 "decay": self.decay if self.beta > 0 else None, "beta": self.beta}
        if self.mode == "exact":
            self.table32 = self.table16.astype(np.float32)
            self.table32_t = np.ascontiguousarray(self.table32.T)
            self.kernel = kernels.ScoreKernel(self._sum, self._gram, self.n_rows, self.dim, self.n_candidates,
                                              table=self.table32, **blend)
        else:  # the index's candidates and the co-occurrence items, scored exactly in the same compiled pass
            self.kernel = kernels.ScoreKernel(self._sum, self._gram, self.n_rows, self.dim, self.n_candidates,
                                              table16=self.table16, ann_k=cfg.ann_k, **blend)

    # ------------------------------------------------------------------ pieces
    def _logit_moments(self, vecs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        v = vecs.astype(np.float64)
        total = v @ self._sum
        squares = ((v @ self._gram) * v).sum(axis=1)
        return _moments_from_sums(total, squares, self.n_items)

    def _cooc(self, recent: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One row's co-occurrence scores: dense ``[V + 1]`` (exact mode: ``(None, values)``) or sparse as
        (distinct item indices ascending, summed values); padding included (column 0)."""
        tail = recent[-self.recent_len:]
        if tail.size < self.recent_len:
            tail = np.concatenate((np.zeros(self.recent_len - tail.size, np.int64), tail))
        idx = self.neighbors[tail].ravel()
        val = (self.weights[tail] * self.decay[:, None]).ravel()
        if self.mode == "exact":
            return None, np.bincount(idx, weights=val, minlength=self.n_rows)
        order = np.argsort(idx, kind="stable")
        idx, val = idx[order], val[order].astype(np.float64)
        starts = np.flatnonzero(np.concatenate(([True], idx[1:] != idx[:-1])))
        return idx[starts], np.add.reduceat(val, starts)

    def _coefficients(self, vecs: np.ndarray, recent: np.ndarray | None
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list]:
        """Per row: ``a`` (logit scale), ``b`` (co-occurrence scale), ``c`` (offset), and the co rows."""
        rows = vecs.shape[0]
        if self.beta == 0:
            return np.ones(rows, np.float32), np.zeros(rows, np.float32), np.zeros(rows, np.float32), [None] * rows
        m_mean, m_std = self._logit_moments(vecs)
        cos = [self._cooc(recent[r]) for r in range(rows)]
        total = np.empty(rows)
        squares = np.empty(rows)
        for r, (idx, val) in enumerate(cos):
            first = val[0] if idx is None else (val[0] if idx.size and idx[0] == 0 else 0.0)
            total[r] = val.sum() - first
            squares[r] = val @ val - first * first
        c_mean, c_std = _moments_from_sums(total, squares, self.n_items)
        a = (1.0 - self.beta) / (m_std + 1e-6)
        b = self.beta / (c_std + 1e-6)
        c = -(m_mean * a + c_mean * b)
        return a.astype(np.float32), b.astype(np.float32), c.astype(np.float32), cos

    # ------------------------------------------------------------------ rows
    def score(self, vecs: np.ndarray, recent: np.ndarray | None, exclude: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
        """``vecs [B, D]``, ``recent [B, R]`` (left-padded, newest last), ``exclude [B, X]`` (0-padded) ->
        (scores float32 [B, C], item indices int64 [B, C]), best first; masked items score :data:`NEG`."""
        vecs = np.ascontiguousarray(vecs, dtype=np.float32)
        if self.mode == "exact":  # logits, blend, mask and top-C in one compiled call for the batch
            return self.kernel.run(self.table32_t, vecs, recent, exclude)
        k = max(self.cfg.ann_k, self.n_candidates + exclude.shape[1])
        _, found = self.index.search(vecs, k)  # ids are item indices (1-based), -1 when fewer
        return self.kernel.run_ann(found, vecs, recent, exclude)

    def score_ann_numpy(self, vecs: np.ndarray, recent: np.ndarray | None, exclude: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`score` of the ANN mode in numpy (the statement the compiled path is tested against)."""
        vecs = np.ascontiguousarray(vecs, dtype=np.float32)
        a, b, c, cos = self._coefficients(vecs, recent)
        return self._ann(vecs, a, b, c, cos, exclude)

    def score_numpy(self, vecs: np.ndarray, recent: np.ndarray | None, exclude: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`score` of the exact mode in numpy (the statement the compiled kernel is tested against)."""
        vecs = np.ascontiguousarray(vecs, dtype=np.float32)
        mode, self.mode = self.mode, "exact"
        try:
            a, b, c, cos = self._coefficients(vecs, recent)
        finally:
            self.mode = mode
        return self._exact(vecs, a, b, c, cos, exclude)

    def _top(self, row: np.ndarray, ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        k = self.n_candidates
        if k < row.size:
            part = np.argpartition(row, row.size - k)[row.size - k:]
        else:
            part = np.arange(row.size)
        order = part[np.argsort(-row[part], kind="stable")]
        return row[order], (order if ids is None else ids[order])

    def _exact(self, vecs: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray, cos: list,
               exclude: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits = vecs @ self.table16.astype(np.float32).T  # [B, V + 1]
        rows = vecs.shape[0]
        out_s = np.empty((rows, self.n_candidates), np.float32)
        out_i = np.empty((rows, self.n_candidates), np.int64)
        for r in range(rows):
            row = logits[r]
            if self.beta > 0:
                row *= a[r]
                row += c[r]
                row += (b[r] * cos[r][1]).astype(np.float32)
            row[0] = NEG
            row[exclude[r]] = NEG
            out_s[r], out_i[r] = self._top(row)
        return out_s, out_i

    def _ann(self, vecs: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray, cos: list,
             exclude: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows = vecs.shape[0]
        k = max(self.cfg.ann_k, self.n_candidates + exclude.shape[1])
        _, found = self.index.search(vecs, k)  # ids are item indices (1-based), -1 when fewer
        out_s = np.empty((rows, self.n_candidates), np.float32)
        out_i = np.empty((rows, self.n_candidates), np.int64)
        for r in range(rows):
            cand = found[r][found[r] > 0]
            if cos[r] is not None:
                cand = np.union1d(cand, cos[r][0])
            else:
                cand = np.unique(cand)
            cand = cand[(cand != 0) & ~np.isin(cand, exclude[r])]
            s = (self.table16[cand].astype(np.float32) @ vecs[r]) * a[r] + c[r]
            if cos[r] is not None:
                idx, val = cos[r]
                pos = np.searchsorted(idx, cand)
                pos = np.minimum(pos, idx.size - 1)
                hit = idx[pos] == cand
                s[hit] += (b[r] * val[pos[hit]]).astype(np.float32)
            s = s.astype(np.float32)
            if cand.size < self.n_candidates:  # tiny result: pad with masked entries
                fill = self.n_candidates - cand.size
                s = np.concatenate((s, np.full(fill, NEG, np.float32)))
                cand = np.concatenate((cand, np.zeros(fill, np.int64)))
            out_s[r], out_i[r] = self._top(s, cand)
        return out_s, out_i


# ---------------------------------------------------------------------- the index (faiss, optional)
def _faiss():  # noqa: ANN202 - the module
    from operators.imports import import_in_regular_thread

    try:  # a native extension: imported in a regular thread (thread mode's task threads: operators.imports)
        faiss = import_in_regular_thread("faiss")
    except ImportError as exc:  # pragma: no cover - not installed
        msg = ("this bundle's catalog is scored through a faiss index, but faiss is not installed; "
               "reinstall streamrec (it depends on faiss-cpu)")
        raise ImportError(msg) from exc
    faiss.omp_set_num_threads(int(os.environ.get("STREAMREC_FAISS_THREADS", "1")))
    return faiss


def _read_index(path: Path, nprobe: int):  # noqa: ANN202 - a faiss index
    faiss = _faiss()
    index = faiss.read_index(str(path))
    faiss.extract_index_ivf(index).nprobe = nprobe
    return index


def build_ann_index(table: np.ndarray, path: Path, *, nlist: int | None = None, sq: str = "SQ8",
                    seed: int = 0) -> dict:
    """An IVF index with scalar-quantised vectors over the table's rows 1..V (inner product, ids = item
    indices), written to ``path``. Returns its manifest entry (without the checksum)."""
    faiss = _faiss()
    body = np.ascontiguousarray(table[1:], dtype=np.float32)
    n, d = body.shape
    nlist = nlist or int(max(16, min(65_536, 4 * round(np.sqrt(n)))))
    quantizer = faiss.IndexFlatIP(d)
    kind = {"SQ8": faiss.ScalarQuantizer.QT_8bit, "SQ4": faiss.ScalarQuantizer.QT_4bit,
            "SQfp16": faiss.ScalarQuantizer.QT_fp16}[sq]
    index = faiss.IndexIVFScalarQuantizer(quantizer, d, nlist, kind, faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(seed)
    train = body[rng.choice(n, size=min(n, 64 * nlist), replace=False)]
    index.train(train)
    index.add_with_ids(body, np.arange(1, n + 1, dtype=np.int64))
    faiss.write_index(index, str(path))
    return {"kind": f"IVF{nlist},{sq}", "metric": "inner_product", "nlist": nlist}
