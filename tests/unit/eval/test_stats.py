import numpy as np
import pytest

from vicuna_ops.eval.stats import lc_win_rate, mean_ci, tally


def test_win_rate_counts_ties_half():
    t = tally([1, 1, 0.5, 0])
    assert (t.wins, t.losses, t.ties, t.win_rate) == (2, 1, 1, 0.625)
    assert tally([]).win_rate is None


def test_length_controlled_win_rate_removes_a_pure_length_advantage():
    # two equally good models; the judge prefers the longer reply, and one model writes more
    rng = np.random.default_rng(0)
    diffs = rng.normal(300, 300, 4000)
    p = 1 / (1 + np.exp(-2.5 * np.tanh(diffs / diffs.std())))
    scores = (rng.random(4000) < p).astype(float)
    assert scores.mean() > 0.7
    assert lc_win_rate(scores, diffs) == pytest.approx(0.5, abs=0.05)


def test_length_controlled_win_rate_keeps_a_real_advantage():
    rng = np.random.default_rng(1)
    diffs = rng.normal(0, 200, 3000)
    scores = (rng.random(3000) < 0.8).astype(float)  # wins regardless of length
    assert lc_win_rate(scores, diffs) == pytest.approx(0.8, abs=0.03)


def test_length_controlled_win_rate_edge_cases():
    assert lc_win_rate([], []) is None
    assert lc_win_rate([1, 0, 0.5], [0, 0, 0]) == 0.5
    assert lc_win_rate([1, 1], [10, -10]) == 1.0


def test_mean_ci_covers_the_mean():
    mean, (low, high) = mean_ci([5, 6, 7, 8, 9] * 10)
    assert mean == 7 and low < 7 < high and high - low < 1
    assert mean_ci([]) == (None, None)
