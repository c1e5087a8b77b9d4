"""The compiled re-ranking step (operators.kernels) against a plain numpy statement of the same rules.

The reference below is the numpy code the job ran before the step was compiled (operators.rerank and
operators.interests as of commit 75e1f01), kept here as the test oracle: random users, candidates, histories,
trending tables and affinities; both must give the same list, scores, reasons and shown history.
"""

import numpy as np
import pytest

from operators.catalog import CategoryMatrix
from operators.interests import InterestConfig, Interests
from operators.rerank import RerankConfig, Reranker, ShownHistory

V, C, D = 500, 8, 16


def reference_preference(it: Interests, indices, ts, types, newest, affinity):
    cfg = it.cfg
    recency = (cfg.short_term_decay ** np.arange(it.horizon - 1, -1, -1)).astype(np.float32)
    out = None
    start = max(int(ts.searchsorted(newest - it.short_ms)), len(ts) - len(recency))
    n = len(ts) - start
    if n > 0 and cfg.short_term_boost:
        short = (it.weights.take(types[start:]) * recency[-n:]) @ it.rows.take(indices[start:], axis=0)
        mass = np.abs(short).sum()
        if mass > 1e-9:
            out = short * np.float32(cfg.short_term_boost / mass)
    if affinity is not None and affinity.size == it.size and cfg.long_term_boost:
        mass = np.abs(affinity).sum()
        if mass > 1e-9:
            part = affinity * np.float32(cfg.long_term_boost / mass)
            out = part if out is None else out + part
    return out


def reference_rerank(cfg, rows, emb, k, items, scores, hashes, shown, recent, preference, trend):
    by_age = cfg.repeat_penalty * np.power(cfg.repeat_decay, np.arange(256, dtype=np.float64))
    adjusted = scores.astype(np.float64)
    if preference is not None:
        adjusted += rows.take(items, axis=0) @ preference
    adjusted += trend.take(items)
    if len(shown):
        adjusted -= (hashes[:, None] == shown.hashes[None, :]) @ by_age.take(shown.ages)
    order = np.argsort(-adjusted, kind="stable")[:k]
    tail = recent[-cfg.explain_recent:]
    because = None
    if tail.size:
        sims = emb.take(items.take(order), axis=0) @ emb.take(tail, axis=0).T
        because = tail.take(sims.argmax(axis=1))
    return order, adjusted.take(order), because, shown.push(hashes.take(order), cfg.repeat_window)


@pytest.fixture(scope="module")
def world():
    rng = np.random.default_rng(1)
    vocab = [f"i{j}" for j in range(V)]
    catalog = {f"i{j}": frozenset({f"c{j % C}", f"c{(j * 7) % C}"}) for j in range(V)}
    cats = CategoryMatrix.build(catalog, vocab)
    emb = rng.normal(size=(V + 1, D)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    emb[0] = 0
    return cats, emb


def test_the_compiled_step_gives_the_reference_list_scores_reasons_and_history(world):
    cats, emb = world
    it = Interests(InterestConfig(), cats)
    cfg = RerankConfig()
    reranker = Reranker(cfg, emb, 10, cats.rows, it)
    rng = np.random.default_rng(7)
    hash32 = rng.integers(0, 2**32, V + 1, dtype=np.uint64).astype(np.uint32)
    checked = {"preference": 0, "shown": 0, "trending": 0}
    for trial in range(300):
        items = rng.choice(np.arange(1, V + 1), 100, replace=False)
        scores = np.sort(rng.normal(size=100).astype(np.float32) * 2)[::-1].copy()
        m = int(rng.integers(0, 120))
        idx = rng.integers(0, V + 1, m)  # 0: items the model does not know
        ts = np.sort(rng.integers(0, 7_200_000, m)).astype(np.int64)  # two hours: some events are not short-term
        types = rng.integers(0, 5, m).astype(np.uint8)
        newest = int(ts[-1]) if m else 0
        affinity = rng.normal(size=C).astype(np.float32) if trial % 2 else None
        shown = ShownHistory.empty()
        for _ in range(int(rng.integers(0, 5))):  # up to 4 lists, the window keeps 3
            shown = shown.push(hash32[rng.choice(items, 10)], cfg.repeat_window)
        trend = (rng.random(V + 1) < 0.05).astype(np.float32) * 0.3
        recent = idx[idx != 0][-30:]
        hashes = hash32[items]

        want_pref = reference_preference(it, idx, ts, types, newest, affinity)
        got_pref = it.preference_vector(idx, ts, types, newest, affinity)
        assert (want_pref is None) == (got_pref is None)
        if want_pref is not None:
            np.testing.assert_allclose(got_pref, want_pref, atol=1e-5)
            checked["preference"] += 1
        order, final, because, after = reference_rerank(cfg, cats.rows, emb, 10, items, scores, hashes, shown,
                                                        recent, want_pref, trend)
        out = reranker.rerank(items, scores, hashes, shown, recent, profile=(idx, ts, types, newest, affinity),
                              trend=trend)
        assert out.order.tolist() == order.tolist(), trial
        assert out.picked.tolist() == items[order].tolist()
        np.testing.assert_allclose(out.scores, final, atol=2e-6)
        assert (out.because is None) == (because is None)
        if because is not None:
            assert out.because.tolist() == because.tolist()
        assert out.shown.hashes.tolist() == after.hashes.tolist()
        assert out.shown.ages.tolist() == after.ages.tolist()
        checked["shown"] += bool(len(shown))
        checked["trending"] += bool(trend.take(items[order]).any())
    assert min(checked.values()) > 50, checked  # every rule was exercised, not only the trivial cases
