import numpy as np
import pytest

from model_export.baselines import CooccurrenceConfig, fit_cooccurrence, pair_counts


def test_cooccurrence_counts_pairs_within_the_window_symmetrically():
    # One user: 1 2 3 ; window 1 -> pairs (1,2), (2,3) counted both ways; 1 and 3 are 2 apart.
    model = fit_cooccurrence([np.array([1, 2, 3])], 3, CooccurrenceConfig(window=1, decay=0.5, top_n=3))
    dense = np.zeros((4, 4))
    for row in range(4):
        np.add.at(dense[row], model.neighbors[row], model.weights[row])
    assert dense[1].tolist() == [0, 0, 1, 0]
    assert dense[2].tolist() == [0, 1, 0, 1]
    assert dense[3].tolist() == [0, 0, 1, 0]
    assert dense[0].tolist() == [0, 0, 0, 0]


def _dense(model, n: int) -> np.ndarray:  # noqa: ANN001
    dense = np.zeros((n, n))
    for row in range(n):
        np.add.at(dense[row], model.neighbors[row], model.weights[row])
    return dense


def test_pairs_weigh_by_distance_and_the_reverse_direction_by_backward():
    # One user: 1 2 3, window 2. Row a, column b: b recommended after a. 1 -> 2 and 2 -> 3 are one apart
    # (weight 1), 1 -> 3 two apart (gap_decay); the reverse of each pair is scaled by backward.
    cfg = CooccurrenceConfig(window=2, decay=0.5, top_n=3, gap_decay=0.5, backward=0.25)
    dense = _dense(fit_cooccurrence([np.array([1, 2, 3])], 3, cfg), 4)
    assert dense[1].tolist() == [0, 0, 1, 0.5]
    assert dense[2].tolist() == [0, 0.25, 0, 1]
    assert dense[3].tolist() == [0, 0.125, 0.25, 0]
    # After [1]: 2 (right after 1) outranks 3 (two after).
    scores = fit_cooccurrence([np.array([1, 2, 3])], 3, cfg).score([np.array([1])])[0]
    assert scores[2] > scores[3] > 0


def test_scores_decay_with_steps_back():
    # Item 4 co-occurs with 1, item 5 with 2. History [1, 2]: 2 is newest (weight 1), 1 is one step back (0.5).
    train = [np.array([1, 4]), np.array([2, 5])]
    model = fit_cooccurrence(train, 5, CooccurrenceConfig(window=1, decay=0.5, top_n=5))
    scores = model.score([np.array([1, 2])])[0]
    assert scores[5] == pytest.approx(1.0)
    assert scores[4] == pytest.approx(0.5)
    assert scores[0] == 0.0


def test_alpha_normalises_by_popularity():
    # Item 1 is everywhere; with alpha 0.5 a pair with a popular item weighs less.
    train = [np.array([1, 2]), np.array([1, 3]), np.array([1, 4]), np.array([5, 2])]
    raw = fit_cooccurrence(train, 5, CooccurrenceConfig(window=1, alpha=0.0)).score([np.array([2])])[0]
    norm = fit_cooccurrence(train, 5, CooccurrenceConfig(window=1, alpha=0.5)).score([np.array([2])])[0]
    assert raw[1] == raw[5] == 1.0
    assert norm[1] == pytest.approx(1 / np.sqrt(3 * 2))
    assert norm[5] == pytest.approx(1 / np.sqrt(1 * 2))


def test_top_n_keeps_the_strongest_neighbours():
    train = [np.array([1, 2, 1, 2, 1, 3])]
    model = fit_cooccurrence(train, 3, CooccurrenceConfig(window=1, top_n=1))
    assert model.neighbors[1].tolist() == [2]


def test_shared_counts_give_the_same_model_and_stay_untouched():
    # The training grid counts once per (window, gap_decay, backward) and fits every decay and alpha from it.
    train = [np.array([1, 2, 3, 1, 4]), np.array([2, 3, 5]), np.array([4, 1, 2])]
    cfg = CooccurrenceConfig(window=3, alpha=0.5, gap_decay=0.9, backward=0.5, top_n=4)
    counts = pair_counts(train, 5, cfg)
    before = counts.copy()
    shared, alone = fit_cooccurrence(train, 5, cfg, counts), fit_cooccurrence(train, 5, cfg)
    assert np.array_equal(shared.neighbors, alone.neighbors) and np.array_equal(shared.weights, alone.weights)
    assert np.array_equal(counts, before)
