"""Bradley-Terry ratings with bootstrap 95% intervals, from any list of battles.

    battles: [(model_a, model_b, outcome), ...]   outcome: "a" | "b" | "tie" | "bothbad"

The model: P(a beats b) = sigmoid(r_a - r_b); a tie (or "both bad", as Chatbot Arena counts
it) is half a win for each. The ratings are the maximum-likelihood fit (Newton's method on the
logistic likelihood, with a very weak Gaussian prior so that a model that never lost still
gets a finite rating), shown on the Elo scale (400 points = 10x odds) centred on 1000. The
intervals are percentile intervals over ``rounds`` bootstrap resamples of the battles, with
a seeded generator: the same battles always give the same numbers. ``vops eval report`` and
Arena votes both come through here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

OUTCOME_SCORE = {"a": 1.0, "b": 0.0, "tie": 0.5, "bothbad": 0.5, "both_bad": 0.5}
ELO_SCALE = 400.0 / math.log(10.0)
CENTER = 1000.0
PRIOR = 0.1  # precision of the Gaussian prior on each logit rating (sd ~3.2 logits); it
# matters only where the data cannot fix a rating (a model that never lost)
DEFAULT_ROUNDS = 1000


@dataclass(frozen=True)
class Rating:
    model: str
    rating: float
    ci95: tuple[float, float]
    battles: int


def _cells(battles: Iterable[Sequence]) -> tuple[list[str], list[tuple[int, int, float]], list[int]]:
    """Distinct (a, b, score) cells and how often each occurs."""
    counts: dict[tuple[str, str, float], int] = {}
    for a, b, outcome in battles:
        if outcome not in OUTCOME_SCORE:
            raise ValueError(f"unknown battle outcome {outcome!r}: one of "
                             f"{', '.join(OUTCOME_SCORE)}")
        if a == b:
            continue
        key = (a, b, OUTCOME_SCORE[outcome])
        counts[key] = counts.get(key, 0) + 1
    models = sorted({m for a, b, _ in counts for m in (a, b)})
    index = {m: i for i, m in enumerate(models)}
    cells = [(index[a], index[b], s) for a, b, s in counts]
    return models, cells, list(counts.values())


def fit_logits(n_models: int, cells: list[tuple[int, int, float]], weights,
               iterations: int = 100):
    """Ratings (logit scale, mean 0) for each row of ``weights`` (replicates x cells)."""
    import numpy as np

    weights = np.atleast_2d(np.asarray(weights, dtype=float))
    reps = weights.shape[0]
    incidence = np.zeros((len(cells), n_models))
    for k, (i, j, _) in enumerate(cells):
        incidence[k, i], incidence[k, j] = 1.0, -1.0
    score = np.array([s for _, _, s in cells])
    ratings = np.zeros((reps, n_models))
    eye = np.eye(n_models)
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(ratings @ incidence.T)))  # (reps, cells)
        grad = (weights * (p - score)) @ incidence + PRIOR * ratings
        curvature = weights * p * (1.0 - p)
        hessian = np.einsum("km,rk,kn->rmn", incidence, curvature, incidence) + PRIOR * eye
        step = np.linalg.solve(hessian, grad[..., None])[..., 0]
        step = np.clip(step, -2.0, 2.0)  # damped: far from the optimum a full step overshoots
        ratings -= step
        if np.max(np.abs(step)) < 1e-9:
            break
    return ratings - ratings.mean(axis=1, keepdims=True)


def bradley_terry(battles: Iterable[Sequence], *, rounds: int = DEFAULT_ROUNDS,
                  seed: int = 0) -> dict[str, Rating]:
    """Each model's rating and bootstrap 95% interval, best first."""
    import numpy as np

    battles = list(battles)
    models, cells, counts = _cells(battles)
    if not models:
        return {}
    counts_arr = np.array(counts, dtype=float)
    point = fit_logits(len(models), cells, counts_arr)[0]
    total = int(counts_arr.sum())
    rng = np.random.default_rng(seed)
    samples = rng.multinomial(total, counts_arr / total, size=rounds) if rounds else None
    low = high = point
    if samples is not None:
        boot = fit_logits(len(models), cells, samples)
        low, high = np.percentile(boot, [2.5, 97.5], axis=0)
    played = {m: 0 for m in models}
    for a, b, _ in battles:
        if a != b:
            played[a] += 1
            played[b] += 1
    out = {m: Rating(m, _elo(point[i]), (_elo(low[i]), _elo(high[i])), played[m])
           for i, m in enumerate(models)}
    return dict(sorted(out.items(), key=lambda kv: -kv[1].rating))


def _elo(logit: float) -> float:
    return CENTER + ELO_SCALE * float(logit)


def expected_score(rating_a: float, rating_b: float) -> float:
    """P(a beats b) from two Elo-scale ratings."""
    return 1.0 / (1.0 + 10 ** ((rating_b - rating_a) / 400.0))
