"""Off-policy evaluation of model versions on logged traffic: IPS, SNIPS and DR estimates of the CTR each version
would get if it re-ranked the logged pools, with the logging policies' own CTR beside them.

The position bias theta (examination per position) is fitted on the same logged lists
(`recsys.training.data.propensity`): exploration moves items between positions, which is what identifies it.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from recsys.model.bundle import ModelBundle
from recsys.training.data.propensity import fit_position_bias
from recsys.training.data.schema import Dataset
from recsys.training.ope.estimators import LoggedSlates, estimate
from recsys.training.ope.logged import LoggedLists
from recsys.training.ope.policy import reward_model, score_pools


def position_theta(logged: LoggedLists) -> tuple[np.ndarray, dict]:
    """Examination per position fitted on the logged lists: (theta [K], the fit's description)."""
    valid = logged.shown >= 0
    lists, positions = np.nonzero(valid)
    items = [logged.pool[r][logged.shown[r, j]] for r, j in zip(lists, positions, strict=True)]
    bias = fit_position_bias(pd.factorize(pd.Series(items, dtype=object))[0], positions,
                             logged.clicks[lists, positions])
    return bias.propensity(np.arange(logged.k)), bias.to_dict()


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
    slates = LoggedSlates(logged.marginals(), logged.shown, logged.clicks, theta)
    versions = {}
    for name, bundle in bundles.items():
        scores = score_pools(bundle, history, logged, ranker)
        target = scores.slates(logged.k)
        reward = reward_model(scores, logged, theta)
        found = estimate(slates, target, reward, alpha=alpha)
        versions[name] = {key: value.to_dict() for key, value in found.items()}
    explored = np.asarray([spec not in ("", "none") for spec in logged.exploration])
    return {"lists": len(logged), "exploring_lists": int(explored.sum()), "k": logged.k, "pool": logged.p,
            "alpha": alpha, "position_bias": bias, "theta": [round(float(t), 4) for t in theta],
            "logged": logged_ctr(logged), "skipped": logged.skipped, "versions": versions}
