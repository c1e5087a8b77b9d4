"""Scoring outside the graph (operators/scoring.py): the compiled exact path against its numpy statement, and the
ANN path against the exact one where the index is exhaustive (recall 1 by construction)."""

from __future__ import annotations

import numpy as np
import pytest

from operators.scoring import NEG, Scorer, ScorerConfig, build_ann_index


def _world(n_items: int = 3000, dim: int = 16, n_neighbors: int = 12, recent: int = 5, seed: int = 0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((20, dim))
    table = (centers[rng.integers(0, 20, n_items + 1)] + 0.3 * rng.standard_normal((n_items + 1, dim))) * 0.1
    table[0] = 0.0
    table = table.astype(np.float16)
    neighbors = rng.integers(1, n_items + 1, size=(n_items + 1, n_neighbors)).astype(np.int64)
    weights = np.sort(rng.random((n_items + 1, n_neighbors)).astype(np.float32), axis=1)[:, ::-1].copy()
    neighbors[0], weights[0] = 0, 0.0
    weights[5, 3:] = 0.0  # a short neighbour row
    decay = (0.7 ** np.arange(recent - 1, -1, -1)).astype(np.float32)
    return rng, table, neighbors, weights, decay


def _rows(rng, n_items: int, rows: int, dim: int, recent: int, excluded: int):
    vecs = rng.standard_normal((rows, dim)).astype(np.float32)
    rec = rng.integers(0, n_items + 1, size=(rows, recent))
    rec[0, :2] = 0  # left padding
    rec[1] = rec[1, -1]  # the same item repeated
    exclude = rng.integers(0, n_items + 1, size=(rows, excluded))
    exclude[2] = 0  # nothing excluded (padding only)
    return vecs, rec, exclude


def _reference(table, neighbors, weights, decay, beta, vecs, rec, exclude, k):
    """The graph's definition (model_export.model.blend_scores + _mask_and_rank) in plain float64 numpy."""
    logits = vecs.astype(np.float64) @ table.astype(np.float64).T
    out = []
    for r in range(len(vecs)):
        row = logits[r]
        if beta > 0:
            co = np.zeros(table.shape[0])
            for t, item in enumerate(rec[r][-len(decay):]):
                np.add.at(co, neighbors[item], weights[item] * decay[t])
            z = [(x - x[1:].mean()) / (x[1:].std(ddof=1) + 1e-6) for x in (row, co)]
            row = (1 - beta) * z[0] + beta * z[1]
        row = row.copy()
        row[0] = NEG
        row[exclude[r]] = NEG
        out.append(np.sort(row)[::-1][:k])
    return np.array(out)


@pytest.mark.parametrize("logits", ["gil-blas", "own-loop"])
@pytest.mark.parametrize("rows", [1, 40])
@pytest.mark.parametrize("beta", [0.0, 0.3, 1.0])
def test_compiled_exact_scoring_equals_the_definition(beta, rows, logits, monkeypatch):
    """Both ways to the logits (numpy's OpenBLAS with the GIL held, sgemv for one row and sgemm for more; the
    kernel's own loop where that BLAS is missing) give the definition's lists."""
    from operators import score_kernel

    if logits == "own-loop":
        monkeypatch.setattr(score_kernel, "_BLAS", None)
    else:
        assert score_kernel._BLAS is not None, "numpy's bundled OpenBLAS not found: the job pays numpy's matmul"
    rng, table, neighbors, weights, decay = _world()
    scorer = Scorer(table, 50, neighbors=neighbors, weights=weights, decay=decay, beta=beta)
    assert scorer.mode == "exact"
    vecs, rec, exclude = _rows(rng, 3000, 40, 16, 5, 30)
    if rows == 1:
        vecs, rec, exclude = vecs[3:4], rec[3:4], exclude[3:4]
    scores, items = scorer.score(vecs, rec, exclude)
    ref = _reference(table, neighbors, weights, decay, beta, vecs, rec, exclude, 50)
    np.testing.assert_allclose(scores, ref, rtol=1e-4, atol=1e-4)
    np_scores, np_items = scorer.score_numpy(vecs, rec, exclude)
    np.testing.assert_allclose(scores, np_scores, rtol=1e-5, atol=1e-5)
    for r in range(len(vecs)):  # ties may order differently: the items scoring above the last must agree
        above = scores[r] > scores[r, -1]
        assert set(items[r][above].tolist()) == set(np_items[r][np_scores[r] > np_scores[r, -1]].tolist())
    for r in range(len(vecs)):
        assert not set(items[r].tolist()) & (set(exclude[r].tolist()) | {0})
        assert np.all(np.diff(scores[r]) <= 0)
    # a second call on the same scorer (its buffers were cleaned) gives the same answer
    again = scorer.score(vecs, rec, exclude)
    np.testing.assert_array_equal(again[0], scores)


def test_more_exclusions_than_items_leaves_masked_entries_last():
    rng, table, neighbors, weights, decay = _world(n_items=30)
    scorer = Scorer(table, 20, neighbors=neighbors, weights=weights, decay=decay, beta=0.3)
    exclude = np.arange(1, 26)[None, :]  # 25 of 30 items excluded
    scores, items = scorer.score(rng.standard_normal((1, 16)).astype(np.float32), np.ones((1, 5), np.int64),
                                 exclude)
    assert set(items[0, :5].tolist()) == {26, 27, 28, 29, 30}
    assert (scores[0, 5:] == NEG).all()


@pytest.mark.parametrize("beta", [0.0, 0.3])
def test_ann_candidates_equal_exact_when_the_index_is_exhaustive(tmp_path, beta):
    rng, table, neighbors, weights, decay = _world()
    path = tmp_path / "index.faiss"
    info = build_ann_index(table, path, nlist=32, sq="SQfp16")  # fp16 = the table: no quantisation loss
    assert info["nlist"] == 32
    cfg = ScorerConfig(exact_max_items=0, ann_k=200, nprobe=32)  # every list probed
    ann = Scorer(table, 50, neighbors=neighbors, weights=weights, decay=decay, beta=beta, index_path=path, cfg=cfg)
    exact = Scorer(table, 50, neighbors=neighbors, weights=weights, decay=decay, beta=beta)
    assert (ann.mode, exact.mode) == ("ann", "exact")
    vecs, rec, exclude = _rows(rng, 3000, 30, 16, 5, 30)
    a_scores, a_items = ann.score(vecs, rec, exclude)
    e_scores, e_items = exact.score(vecs, rec, exclude)
    np.testing.assert_allclose(a_scores, e_scores, rtol=1e-5, atol=1e-5)
    assert (a_items == e_items).mean() > 0.99


def test_ann_with_few_probes_misses_some_and_is_measured(tmp_path):
    """The approximate setting really is approximate (so the test above can fail): one probe of 32 lists."""
    rng, table, neighbors, weights, decay = _world()
    path = tmp_path / "index.faiss"
    build_ann_index(table, path, nlist=32, sq="SQ8")
    ann = Scorer(table, 50, index_path=path, cfg=ScorerConfig(exact_max_items=0, ann_k=60, nprobe=1))
    exact = Scorer(table, 50)
    vecs, rec, exclude = _rows(rng, 3000, 30, 16, 5, 30)
    _, a_items = ann.score(vecs, rec, exclude)
    _, e_items = exact.score(vecs, rec, exclude)
    recall = np.mean([len(set(a) & set(e)) / 50 for a, e in zip(a_items.tolist(), e_items.tolist(), strict=True)])
    assert 0.0 < recall < 1.0


@pytest.mark.parametrize("beta", [0.0, 0.3])
def test_compiled_ann_scoring_equals_its_numpy_statement(tmp_path, beta):
    """The compiled ANN pass (the index's candidates united with the co-occurrence items, scored from the float16
    table) gives what the numpy statement gives for the same candidates, also when the index misses some."""
    rng, table, neighbors, weights, decay = _world()
    path = tmp_path / "index.faiss"
    build_ann_index(table, path, nlist=32, sq="SQ8")
    ann = Scorer(table, 50, neighbors=neighbors, weights=weights, decay=decay, beta=beta, index_path=path,
                 cfg=ScorerConfig(exact_max_items=0, ann_k=80, nprobe=2))
    vecs, rec, exclude = _rows(rng, 3000, 30, 16, 5, 30)
    scores, items = ann.score(vecs, rec, exclude)
    np_scores, np_items = ann.score_ann_numpy(vecs, rec, exclude)
    np.testing.assert_allclose(scores, np_scores, rtol=1e-4, atol=1e-4)
    for r in range(len(vecs)):
        above = scores[r] > scores[r, -1]
        assert set(items[r][above].tolist()) == set(np_items[r][np_scores[r] > np_scores[r, -1]].tolist())
        assert not set(items[r][scores[r] > NEG / 2].tolist()) & set(exclude[r].tolist())
