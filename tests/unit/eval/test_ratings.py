"""Bradley-Terry against known answers: ordering, values, interval coverage."""

import math

import numpy as np
import pytest

from vicuna_ops.eval.ratings import ELO_SCALE, bradley_terry, expected_score

STRENGTHS = {"a": 1.2, "b": 0.4, "c": 0.0, "d": -0.9}  # logit scale


def simulate(rng, n_battles, strengths=STRENGTHS, tie_band=0.0):
    names = list(strengths)
    battles = []
    for _ in range(n_battles):
        i, j = rng.choice(len(names), 2, replace=False)
        a, b = names[i], names[j]
        p = 1 / (1 + math.exp(-(strengths[a] - strengths[b])))
        u = rng.random()
        outcome = "tie" if abs(u - p) < tie_band else "a" if u < p else "b"
        battles.append((a, b, outcome))
    return battles


def true_elo(strengths=STRENGTHS):
    mean = sum(strengths.values()) / len(strengths)
    return {m: 1000 + ELO_SCALE * (s - mean) for m, s in strengths.items()}


def test_recovers_the_ordering_and_the_values():
    ratings = bradley_terry(simulate(np.random.default_rng(0), 4000), rounds=200)
    assert list(ratings) == ["a", "b", "c", "d"]
    for model, value in true_elo().items():
        assert ratings[model].rating == pytest.approx(value, abs=25)
        assert ratings[model].ci95[0] < ratings[model].rating < ratings[model].ci95[1]


def test_intervals_cover_the_truth_at_about_the_nominal_rate():
    truth = true_elo()
    covered = total = 0
    for seed in range(60):
        ratings = bradley_terry(simulate(np.random.default_rng(100 + seed), 300),
                                rounds=200, seed=seed)
        for model, value in truth.items():
            low, high = ratings[model].ci95
            covered += low <= value <= high
            total += 1
    assert 0.88 <= covered / total <= 0.99, covered / total


def test_seeded_and_deterministic():
    battles = simulate(np.random.default_rng(1), 200)
    assert bradley_terry(battles, seed=3) == bradley_terry(battles, seed=3)


def test_ties_and_both_bad_are_half_wins():
    even = [("x", "y", "tie")] * 10 + [("x", "y", "bothbad")] * 10
    ratings = bradley_terry(even, rounds=50)
    assert ratings["x"].rating == pytest.approx(1000, abs=1e-6)
    assert ratings["x"].battles == 20


def test_a_model_that_never_lost_gets_a_finite_top_rating():
    ratings = bradley_terry([("x", "y", "a")] * 20 + [("y", "z", "a")] * 10, rounds=50)
    assert list(ratings) == ["x", "y", "z"] and math.isfinite(ratings["x"].rating)


def test_unknown_outcome_is_refused():
    with pytest.raises(ValueError, match="unknown battle outcome"):
        bradley_terry([("x", "y", "draw")])


def test_expected_score_is_elo():
    assert expected_score(1400, 1000) == pytest.approx(10 / 11)
