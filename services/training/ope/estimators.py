"""Off-policy estimates of a target slate policy's CTR from exploring logs: IPS, SNIPS and DR.

Click model (position-based): P(click on item i shown at position j) = theta_j * r(u, i), theta_0 = 1 (theta_j:
examination of position j, r: relevance). A deterministic target slate t (pool index per position) is worth
V = sum_j theta_j r(u, t_j) clicks on a request; the reported CTR is sum_r V_r / sum_r K_r, clicks per target
slot (K_r: the target's filled slots).

Logging shows pool item i at position j with marginal probability pi(i, j) (`recsys.model.exploration`). Its
examination-weighted exposure is rho(i) = sum_j pi(i, j) theta_j, so E[c_i 1(i shown)] = rho(i) r(u, i). A shown
item the target puts at pos_t(i) gets the weight w_i = theta_{pos_t(i)} / rho(i) (0 when the target does not
show it, or rho(i) = 0):

- IPS:   Y_r = sum_{shown i} c_i w_i; unbiased for V_r when every target item has rho > 0.
- SNIPS: the control variate S_r = sum_{shown i} theta_{k_i} w_i (k_i: logged position) has the known mean
  Theta_r = sum of theta_j over the target's supported positions; V_hat = sum_r Theta_r * sum_r Y_r / sum_r S_r
  (consistent, O(1/R) biased; its variance by the delta method on the ratio).
- DR:    Y_r = sum_j theta_j q(u, t_j) + sum_{shown i} (c_i - theta_{k_i} q(u, i)) w_i, q a reward model over
  the pool; unbiased whatever q (for supported items), lower variance the closer q is to r. Unsupported target
  items keep their model term.

Intervals: normal approximation over the per-request values (independent requests), 1 - alpha two-sided. They
take theta as exact: with a theta fitted on the same log, `widen` adds its error (delta method).
`support` is the share of target slots whose item has rho > 0 (below 1, IPS and SNIPS miss those slots' clicks);
`ess` the Kish effective sample size of the per-request weights S_r (R when the target is the logging policy
without exploration). Marginals may be one [P, K] matrix shared by all requests (same n and k: the usual case) or
per request [R, P, K] (float32: 4 R P K bytes, 24 MB at R = 20k, P = 30, K = 10), zero-padded.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from statistics import NormalDist

import numpy as np

from recsys.model.exploration import ExplorationPolicy


@dataclass(frozen=True)
class LoggedSlates:
    """Logged requests: logging marginals, the pool index shown per position (-1: empty) and its clicks."""

    marginals: np.ndarray  # float [P, K] shared, or [R, P, K] per request (zero-padded)
    shown: np.ndarray  # int [R, K]: pool index at each logged position, -1 = empty slot
    clicks: np.ndarray  # [R, K]: clicks at each logged position (ignored on empty slots)
    theta: np.ndarray  # [K]: examination of each position, theta_0 = 1

    def __post_init__(self) -> None:
        marginals = np.asarray(self.marginals)
        shown = np.asarray(self.shown, dtype=np.int64)
        clicks = np.asarray(self.clicks, dtype=np.float64)
        theta = np.asarray(self.theta, dtype=np.float64)
        if shown.ndim != 2 or clicks.shape != shown.shape:
            raise ValueError(f"shown and clicks must both be [R, K], got {shown.shape} and {clicks.shape}")
        if marginals.ndim not in (2, 3) or (marginals.ndim == 3 and marginals.shape[0] != shown.shape[0]):
            raise ValueError(f"marginals must be [P, K] or [R, P, K] with R = {shown.shape[0]}, got {marginals.shape}")
        if marginals.shape[-1] != shown.shape[1] or theta.shape != (shown.shape[1],):
            raise ValueError(
                f"marginals {marginals.shape}, shown {shown.shape} and theta {theta.shape} disagree on K positions"
            )
        if not (np.isfinite(theta).all() and (theta > 0).all()):
            raise ValueError("theta must be finite and > 0")
        if (shown < -1).any() or (shown >= marginals.shape[-2]).any():
            raise ValueError(f"shown pool indexes must be in [-1, {marginals.shape[-2]})")
        for name, value in (("marginals", marginals), ("shown", shown), ("clicks", clicks), ("theta", theta)):
            object.__setattr__(self, name, value)

    @property
    def n_requests(self) -> int:
        return int(self.shown.shape[0])

    @property
    def pool(self) -> int:
        """P: pool indexes run 0..P-1."""
        return int(self.marginals.shape[-2])

    def exposure(self) -> np.ndarray:
        """rho [R, P] = sum_j pi(i, j) theta_j, examination-weighted logging exposure (a broadcast view if shared)."""
        marginals = self.marginals
        theta = self.theta.astype(marginals.dtype) if marginals.dtype == np.float32 else self.theta
        rho = (marginals @ theta).astype(np.float64)
        return np.broadcast_to(rho, (self.n_requests, self.pool))


@dataclass(frozen=True)
class Estimate:
    """A CTR estimate with its standard error and interval; `n` requests, `ess` and `support` as above."""

    ctr: float
    se: float
    low: float
    high: float
    n: int
    ess: float
    support: float

    def to_dict(self) -> dict:
        return {k: (round(v, 8) if isinstance(v, float) and math.isfinite(v) else v) for k, v in asdict(self).items()}


def estimate(
    logged: LoggedSlates, target: np.ndarray, reward: np.ndarray | None = None, alpha: float = 0.05
) -> dict[str, Estimate]:
    """IPS, SNIPS and (with a reward model `reward` [R, P] or [P]) DR estimates of the target's CTR.

    `target` int [R, K]: the pool index the target shows at each position (-1: empty).
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    target = _check_target(logged, target)
    rho = logged.exposure()
    n_req, n_pos = logged.shown.shape
    rows = np.arange(n_req)[:, None]

    shown_ok = logged.shown >= 0
    shown = np.where(shown_ok, logged.shown, 0)
    target_ok = target >= 0
    t_items = np.where(target_ok, target, 0)
    target_pos = np.full((n_req, logged.pool), -1, dtype=np.int64)  # target position of each pool item
    r_idx, j_idx = np.nonzero(target_ok)
    target_pos[r_idx, target[r_idx, j_idx]] = j_idx

    pos_t = np.where(shown_ok, target_pos[rows, shown], -1)
    rho_shown = rho[rows, shown]
    has_w = (pos_t >= 0) & (rho_shown > 0)
    w = np.zeros((n_req, n_pos))
    np.divide(logged.theta[np.maximum(pos_t, 0)], rho_shown, out=w, where=has_w)
    clicks = np.where(shown_ok, logged.clicks, 0.0)

    supported = target_ok & (rho[rows, t_items] > 0)
    slots = target_ok.sum(axis=1).astype(np.float64)  # K_r
    theta_supported = (logged.theta * supported).sum(axis=1)  # Theta_r = E[S_r]
    s = (logged.theta * w).sum(axis=1)  # S_r = sum theta_{k_i} w_i
    total_slots = float(slots.sum())
    ess = float(s.sum() ** 2 / (s**2).sum()) if (s**2).sum() > 0 else 0.0
    support = float(supported.sum() / target_ok.sum()) if target_ok.any() else 0.0
    z = NormalDist().inv_cdf(1.0 - alpha / 2.0)

    def linear(values: np.ndarray) -> Estimate:
        ctr = float(values.sum() / total_slots) if total_slots else math.nan
        se = float(math.sqrt(n_req * values.var(ddof=1)) / total_slots) if n_req > 1 and total_slots else math.nan
        return Estimate(ctr, se, ctr - z * se, ctr + z * se, n_req, ess, support)

    ips_values = (clicks * w).sum(axis=1)
    out = {"ips": linear(ips_values)}

    if s.sum() > 0 and total_slots:
        ratio = float(ips_values.sum() / s.sum())
        scale = float(theta_supported.sum()) / total_slots
        residual = ips_values - ratio * s
        se = float(math.sqrt(n_req * residual.var(ddof=1)) / s.sum() * scale) if n_req > 1 else math.nan
        ctr = ratio * scale
        out["snips"] = Estimate(ctr, se, ctr - z * se, ctr + z * se, n_req, ess, support)
    else:
        out["snips"] = Estimate(math.nan, math.nan, math.nan, math.nan, n_req, ess, support)

    if reward is not None:
        q = np.broadcast_to(np.asarray(reward, dtype=np.float64), (n_req, logged.pool))
        model = (logged.theta * np.where(target_ok, q[rows, t_items], 0.0)).sum(axis=1)
        residual = np.where(shown_ok, clicks - logged.theta * q[rows, shown], 0.0)
        out["dr"] = linear(model + (residual * w).sum(axis=1))
    return out


def widen(est: Estimate, extra_se: float, alpha: float = 0.05) -> Estimate:
    """`est` with an independent error of standard deviation `extra_se` added in quadrature to its interval.

    For a plug-in theta fitted on the same log: extra_se = |d ctr / d eta| * se(eta) (delta method; e.g. a
    finite difference of `estimate` and a bootstrap of the fit), which the per-request interval leaves out.
    """
    se = math.sqrt(est.se**2 + float(extra_se) ** 2)
    z = NormalDist().inv_cdf(1.0 - alpha / 2.0)
    return Estimate(est.ctr, se, est.ctr - z * se, est.ctr + z * se, est.n, est.ess, est.support)


def policy_marginals(policy: ExplorationPolicy, n: int | np.ndarray, k: int) -> np.ndarray:
    """Logging marginals for `LoggedSlates`: one shared [P, K] matrix (float64) when `n` is one pool size,
    else float32 [R, P, K] zero-padded to the largest pool and k (one matrix per distinct n, copied per request).

    `n` is the logged pool length (the prefix of `policy.pool_size`), which gives the same marginals as the
    ranked pool's full length.
    """
    if np.ndim(n) == 0:
        return policy.marginals(int(n), k)
    sizes = np.asarray(n, dtype=np.int64)
    per_size = {int(v): policy.marginals(int(v), k) for v in np.unique(sizes)}
    pool = max((m.shape[0] for m in per_size.values()), default=0)
    out = np.zeros((len(sizes), pool, k), dtype=np.float32)
    for value, matrix in per_size.items():
        out[np.ix_(sizes == value, np.arange(matrix.shape[0]), np.arange(matrix.shape[1]))] = matrix
    return out


def expected_ctr(relevance: np.ndarray, theta: np.ndarray, slates: np.ndarray) -> float:
    """Exact CTR of deterministic slates [R, K] (pool indexes, -1 empty) under relevance [R, P] and theta [K]."""
    slates = np.asarray(slates, dtype=np.int64)
    ok = slates >= 0
    rel = np.take_along_axis(np.asarray(relevance, dtype=np.float64), np.where(ok, slates, 0), axis=1)
    return float((np.asarray(theta) * rel * ok).sum() / ok.sum())


def expected_ctr_logging(relevance: np.ndarray, theta: np.ndarray, marginals: np.ndarray) -> float:
    """Exact CTR of a random logging policy with marginals [P, K] or [R, P, K] under relevance [R, P] and theta."""
    relevance = np.asarray(relevance, dtype=np.float64)
    marginals = np.asarray(marginals, dtype=np.float64)
    theta = np.asarray(theta, dtype=np.float64)
    if marginals.ndim == 2:  # shared: every request fills the same expected number of slots
        return float((relevance @ (marginals @ theta)).sum() / (relevance.shape[0] * marginals.sum()))
    return float(np.einsum("rp,rpk,k->", relevance, marginals, theta) / marginals.sum())


def _check_target(logged: LoggedSlates, target: np.ndarray) -> np.ndarray:
    target = np.asarray(target, dtype=np.int64)
    if target.shape != logged.shown.shape:
        raise ValueError(f"target must be [R, K] = {logged.shown.shape}, got {target.shape}")
    if (target < -1).any() or (target >= logged.pool).any():
        raise ValueError(f"target pool indexes must be in [-1, {logged.pool})")
    ordered = np.sort(target, axis=1)
    if ((ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] >= 0)).any():
        raise ValueError("a target slate shows the same pool item twice")
    return target
