"""Win rates, length-controlled win rates, and means with intervals.

A verdict here is from one model's side: score 1 (won), 0.5 (tie), 0 (lost), and the
length difference of the two judged replies (own minus opponent's, in characters).

Length-controlled win rate, as AlpacaEval 2 does it: fit a logistic regression of the
score on ``tanh(length difference / its standard deviation)`` and report the fitted win
probability at zero difference, i.e. the win rate the model would have if its replies were
as long as its opponents'. A model that wins only by writing more drops towards 0.5.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

RIDGE = 1e-2


@dataclass(frozen=True)
class Tally:
    wins: int
    losses: int
    ties: int

    @property
    def n(self) -> int:
        return self.wins + self.losses + self.ties

    @property
    def win_rate(self) -> float | None:
        """Ties count half, as AlpacaEval and Arena-Hard count them."""
        return None if not self.n else (self.wins + 0.5 * self.ties) / self.n


def tally(scores: Sequence[float]) -> Tally:
    return Tally(sum(s == 1.0 for s in scores), sum(s == 0.0 for s in scores),
                 sum(s == 0.5 for s in scores))


def lc_win_rate(scores: Sequence[float], length_diffs: Sequence[float]) -> float | None:
    """The win rate at equal length (see the module docstring); None without verdicts."""
    import numpy as np

    y = np.asarray(scores, dtype=float)
    if not len(y):
        return None
    x = np.asarray(length_diffs, dtype=float)
    spread = float(x.std())
    if spread == 0.0 or float(y.min()) == float(y.max()):
        return float(y.mean())  # nothing to control for, or nothing to fit
    features = np.column_stack([np.ones_like(x), np.tanh(x / spread)])
    theta = np.zeros(2)
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-(features @ theta)))
        grad = features.T @ (p - y) + RIDGE * theta
        hessian = (features * (p * (1 - p))[:, None]).T @ features + RIDGE * np.eye(2)
        step = np.clip(np.linalg.solve(hessian, grad), -2.0, 2.0)
        theta -= step
        if np.max(np.abs(step)) < 1e-10:
            break
    return float(1.0 / (1.0 + math.exp(-theta[0])))


def mean_ci(values: Sequence[float], *, rounds: int = 1000, seed: int = 0
            ) -> tuple[float | None, tuple[float, float] | None]:
    """The mean and its bootstrap 95% percentile interval (seeded)."""
    import numpy as np

    data = np.asarray(values, dtype=float)
    if not len(data):
        return None, None
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, len(data), size=(rounds, len(data)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(data.mean()), (float(low), float(high))
