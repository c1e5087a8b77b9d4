import numpy as np
import pytest
import torch

from model_export.bundle import load_bundle
from model_export.export import load_serving_head
from operators.inference import OnnxScorer, encode_sequences
from operators.recommender import Recommender


@pytest.fixture(scope="module")
def scorer(trained_bundle):
    return OnnxScorer(load_bundle(trained_bundle), providers=["CPUExecutionProvider"])


def test_encode_left_pads_and_drops_unknown_items():
    index = {"a": 1, "b": 2, "c": 3}
    out = encode_sequences([["a", "zz", "b"], [], ["a", "b", "c", "a"]], index, 3)
    assert out.tolist() == [[0, 1, 2], [0, 0, 0], [2, 3, 1]]
    assert out.dtype == np.int64


def test_active_provider_is_cpu_here(scorer):
    assert scorer.active_provider == "CPUExecutionProvider"


def test_onnx_candidates_equal_torch_full_catalog_ranking(trained_bundle, scorer):
    bundle = scorer.bundle
    head = load_serving_head(bundle)
    rng = np.random.default_rng(0)
    seqs = rng.integers(1, bundle.n_items + 1, size=(8, bundle.max_seq_len))
    seqs[0, :15] = 0  # a short, left-padded history
    with torch.no_grad():
        full = head.full_scores(torch.from_numpy(seqs)).numpy()
    full[:, 0] = -np.inf
    scores, items = scorer.score_batch(seqs)
    expected = np.argsort(-full, axis=1, kind="stable")[:, : bundle.n_candidates]
    np.testing.assert_allclose(scores, np.take_along_axis(full, expected, axis=1), rtol=1e-4, atol=1e-4)
    vocab = np.asarray(bundle.item_vocab, dtype=object)
    assert (items[:, :10] == vocab[expected[:, :10] - 1]).all()


def test_recommendations_exclude_history(scorer):
    rec = Recommender(scorer, top_k=10)
    vocab = scorer.bundle.item_vocab
    window = [(vocab[i], "view", i) for i in range(0, 40, 3)]
    result = rec.recommend(window)
    assert result.strategy == "model"
    assert len(result.items) == 10
    assert not {item for item, _ in result.items} & {w[0] for w in window}
    scores = [s for _, s in result.items]
    assert scores == sorted(scores, reverse=True)


def test_cold_start_falls_back_to_popular_minus_seen(scorer):
    rec = Recommender(scorer, top_k=5)
    popular = scorer.bundle.popular_items
    result = rec.recommend([("never-seen-item", "view", 1)])
    assert result.strategy == "popular"
    assert [i for i, _ in result.items] == list(popular[:5])
    result = rec.recommend([])
    assert result.strategy == "popular"


def test_batch_equals_single(scorer):
    rec = Recommender(scorer, top_k=5)
    vocab = scorer.bundle.item_vocab
    windows = [[(vocab[i], "view", 1)] for i in range(4)] + [[("unknown", "view", 1)]]
    batched, single = rec.recommend_batch(windows), [rec.recommend(w) for w in windows]
    assert [r.strategy for r in batched] == [r.strategy for r in single]
    for b, s in zip(batched, single, strict=True):
        assert [i for i, _ in b.items] == [i for i, _ in s.items]
        assert [x for _, x in b.items] == pytest.approx([x for _, x in s.items], rel=1e-5)
