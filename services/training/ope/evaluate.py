"""Off-policy evaluation of model versions on logged traffic: IPS, SNIPS and DR estimates of the CTR each version
would get if it re-ranked the logged pools, with the logging policies' own CTR beside them.

The position bias theta_j = (1 + j)^-eta (examination per position) is fitted on the same logged lists
(`recsys.training.data.propensity`), with each shown item keyed by (variant, policy, its rank in the logged pool),
not by its id: a greedy item sits where its ranker put it, so by id position is confounded with relevance (in
`benchmarks/ope.py` that fit gave eta 0.75 for a true 0.5), while an explore rank lands on a uniformly drawn slot,
so where it was shown says nothing of how relevant it is. The intervals include the fit's own error (delta method:
the estimate's change per unit of eta times eta's bootstrap standard error over lists, `estimators.widen`).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from recsys.model.bundle import ModelBundle
from recsys.training.data.propensity import PositionBias, fit_position_bias
from recsys.training.data.schema import Dataset
from recsys.training.ope.estimators import LoggedSlates, estimate, widen
from recsys.training.ope.logged import LoggedLists
from recsys.training.ope.policy import reward_model, score_pools

ETA_STEP = 0.02  # finite difference of the estimates in eta
BOOTSTRAP = 20  # refits of eta for its standard error


def _fit_eta(keys: np.ndarray, positions: np.ndarray, clicks: np.ndarray, weights: np.ndarray) -> PositionBias:
    """`fit_position_bias` on (key, position) cells: shown and clicked counts weighted per impression."""
    cells = pd.DataFrame({"key": keys, "pos": positions, "n": weights, "c": clicks * weights})
    grouped = cells.groupby(["key", "pos"], sort=False)[["n", "c"]].sum().reset_index()
    grouped = grouped[grouped["n"] > 0]
    return fit_position_bias(grouped["key"].to_numpy(), grouped["pos"].to_numpy(), grouped["c"].to_numpy(),
                             shown=grouped["n"].to_numpy())


def position_theta(logged: LoggedLists, bootstrap: int = BOOTSTRAP, seed: int = 0) -> tuple[np.ndarray, dict]:
    """Examination per position fitted on the logged lists (module docstring): (theta [K], the fit's description
    with `eta_se`, eta's bootstrap standard error)."""
    lists, positions = np.nonzero(logged.shown >= 0)
    labels = [f"{logged.variant[r]}|{logged.exploration[r]}" for r in range(len(logged))]
    group = pd.factorize(pd.Series(labels, dtype=object))[0]
    keys = group[lists] * (logged.p + 1) + logged.shown[lists, positions]
    clicks = logged.clicks[lists, positions]
    bias = _fit_eta(keys, positions, clicks, np.ones(len(lists)))
    rng = np.random.default_rng(seed)
    etas = [_fit_eta(keys, positions, clicks, rng.poisson(1.0, len(logged))[lists]).eta for _ in range(bootstrap)]
    se = float(np.std(etas, ddof=1)) if bootstrap > 1 else 0.0
    return bias.propensity(np.arange(logged.k)), {**bias.to_dict(), "eta_se": round(se, 6), "keyed_by":
                                                  "variant, policy, pool rank"}


def logged_ctr(logged: LoggedLists) -> dict:
    """The CTR the logging policies really got, per variant and in all (clicks per shown item)."""
    shown = (logged.shown >= 0).sum(axis=1)
    clicks = logged.clicks.sum(axis=1)
    out = {"all": {"lists": len(logged), "ctr": float(clicks.sum() / max(1, shown.sum()))}}
    variants = np.asarray(logged.variant, dtype=object)
    for v in sorted(set(logged.variant)):
        mask = variants == v
        out[v] = {"lists": int(mask.sum()), "ctr": float(clicks[mask].sum() / max(1, shown[mask].sum()))}
    return out


def evaluate_versions(bundles: Mapping[str, ModelBundle], history: Dataset, logged: LoggedLists,
                      alpha: float = 0.05, ranker: str | None = None) -> dict:
    """OPE of every version in `bundles` on `logged` (history: what the versions know of the users)."""
    if len(logged) == 0:
        return {"lists": 0, "skipped": logged.skipped, "versions": {},
                "note": "no evaluable logged lists (exploring, not degraded, with a logged pool)"}
    theta, bias = position_theta(logged)
    marginals = logged.marginals()
    positions = np.arange(logged.k)

    def slates(eta: float) -> LoggedSlates:
        th = np.maximum((1.0 + positions) ** -max(eta, 0.0), bias["floor"])
        return LoggedSlates(marginals, logged.shown, logged.clicks, th)

    versions = {}
    for name, bundle in bundles.items():
        scores = score_pools(bundle, history, logged, ranker)
        target = scores.slates(logged.k)
        reward = reward_model(scores, logged, theta)
        found = estimate(slates(bias["eta"]), target, reward, alpha=alpha)
        up = estimate(slates(bias["eta"] + ETA_STEP), target, reward, alpha=alpha)
        down = estimate(slates(bias["eta"] - ETA_STEP), target, reward, alpha=alpha)
        versions[name] = {
            key: widen(e, abs(up[key].ctr - down[key].ctr) / (2 * ETA_STEP) * bias["eta_se"], alpha).to_dict()
            for key, e in found.items()
        }
    explored = np.asarray([spec not in ("", "none") for spec in logged.exploration])
    return {"lists": len(logged), "exploring_lists": int(explored.sum()), "k": logged.k, "pool": logged.p,
            "alpha": alpha, "position_bias": bias, "theta": [round(float(t), 4) for t in theta],
            "logged": logged_ctr(logged), "skipped": logged.skipped, "versions": versions}
