"""Position bias of logged clicks: the examination propensity of each served position, and its IPW weights.

Model (position-based click model): P(click | item i shown at position k) = r_i * theta_k, with
theta_k = (1 + k)^-eta (k = 0 at the top, so theta_0 = 1: propensities are relative to the top slot).

Why a one-parameter power law and not the raw position-CTR curve: the ranker puts the items it believes
in on top, so the raw CTR of position k mixes examination with relevance and over-states the bias; and the
deep positions collect few clicks, so a free per-position curve is noisy and need not even decrease. Here
eta is fitted with a relevance `r_i` per item: maximising the (Poisson, rare-click) likelihood over r_i
leaves the conditional likelihood of *where* each item's clicks landed given where it was shown,

    L(eta) = sum_{i,k} c_ik log theta_k - sum_i C_i log sum_k n_ik theta_k      (C_i = sum_k c_ik),

so only items served at several positions (other users, variants, model versions) inform eta, and item
popularity cannot pose as position bias. L is concave in eta (a log-sum-exp of linear terms), so a golden
section search on [0, MAX_ETA] finds its maximum. Its score is an unbiased estimating equation under the
Bernoulli model as well, so eta is consistent for any click rates. What remains confounded is per-user
relevance the ranker personalised on (mitigated by traffic split across variants and model versions).

Propensities are clipped below at `floor` (default 0.1), so no click weighs more than 1 / floor: IPW is
unbiased but its variance grows with 1 / theta, and the clip trades a little bias for bounded variance.
With no informative clicks (none, or every item at a single position) eta is 0: no correction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MAX_ETA = 3.0
DEFAULT_FLOOR = 0.1
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


@dataclass(frozen=True)
class PositionBias:
    """theta_k = max((1 + k)^-eta, floor); `clicks` says how many clicks the fit saw (0: not fitted)."""

    eta: float
    floor: float = DEFAULT_FLOOR
    clicks: float = 0.0

    def propensity(self, position: np.ndarray) -> np.ndarray:
        """Examination probability of each position (0-based), relative to the top, in [floor, 1]."""
        pos = np.maximum(np.asarray(position, dtype=np.float64), 0.0)
        return np.maximum((1.0 + pos) ** -self.eta, self.floor)

    def weight(self, position: np.ndarray) -> np.ndarray:
        """Inverse-propensity weight of a click at each position (1 at the top, at most 1 / floor)."""
        return 1.0 / self.propensity(position)

    def to_dict(self) -> dict:
        return {"model": "power", "eta": round(self.eta, 6), "floor": self.floor, "clicks": self.clicks}


def fit_position_bias(
    item: np.ndarray,
    position: np.ndarray,
    clicks: np.ndarray,
    shown: np.ndarray | None = None,
    floor: float = DEFAULT_FLOOR,
    tol: float = 1e-7,
) -> PositionBias:
    """Fit eta of `PositionBias` on logged impressions (see the module docstring).

    One row per impression (or per (item, position) cell with `shown` impressions): the item (any hashable
    codes), its 0-based position, and the clicks it got (0/1, or expected counts).
    """
    if not 0.0 < floor <= 1.0:
        raise ValueError(f"floor must be in (0, 1], got {floor}")
    item = np.asarray(item)
    pos = np.asarray(position, dtype=np.int64)
    c = np.asarray(clicks, dtype=np.float64)
    n = np.ones(len(c)) if shown is None else np.asarray(shown, dtype=np.float64)
    if not (len(item) == len(pos) == len(c) == len(n)):
        raise ValueError("item, position, clicks and shown must have the same length")
    if len(c) == 0:
        return PositionBias(0.0, floor)
    if (pos < 0).any() or (c < 0).any() or (n <= 0).any():
        raise ValueError("positions and clicks must be >= 0 and shown > 0")
    _, codes = np.unique(item, return_inverse=True)
    cells, cell = np.unique(np.stack([codes, pos]), axis=1, return_inverse=True)
    cell = cell.ravel()
    cell_n = np.bincount(cell, weights=n, minlength=cells.shape[1])
    cell_c = np.bincount(cell, weights=c, minlength=cells.shape[1])
    cell_item, log_pos = cells[0], np.log1p(cells[1].astype(np.float64))
    item_c = np.bincount(cell_item, weights=cell_c)
    spread = np.bincount(cell_item, minlength=len(item_c)) > 1  # items seen at more than one position
    total = float(c.sum())
    if not (spread & (item_c > 0)).any():
        return PositionBias(0.0, floor, total)

    def loglik(eta: float) -> float:
        log_theta = -eta * log_pos
        exposure = np.bincount(cell_item, weights=cell_n * np.exp(log_theta), minlength=len(item_c))
        return float(cell_c @ log_theta - item_c[item_c > 0] @ np.log(exposure[item_c > 0]))

    return PositionBias(_argmax_concave(loglik, 0.0, MAX_ETA, tol), floor, total)


def _argmax_concave(f, lo: float, hi: float, tol: float) -> float:
    """Golden-section search for the maximum of a concave function on [lo, hi] (a bound when it lies there)."""
    a, b = lo, hi
    x1, x2 = b - _GOLDEN * (b - a), a + _GOLDEN * (b - a)
    f1, f2 = f(x1), f(x2)
    while b - a > tol:
        if f1 >= f2:
            b, x2, f2 = x2, x1, f1
            x1 = b - _GOLDEN * (b - a)
            f1 = f(x1)
        else:
            a, x1, f1 = x1, x2, f2
            x2 = a + _GOLDEN * (b - a)
            f2 = f(x2)
    best = (a + b) / 2.0
    for edge in (lo, hi):  # a maximum at a bound: golden section only gets within tol of it
        if f(edge) >= f(best):
            best = edge
    return float(best)
