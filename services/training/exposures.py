"""What the event log says about the ranker's label window: the items each user was shown there and did not
click (exposure-aware negatives) and the inverse-propensity weight of the items the user clicked.

The label window is per user, as the labels are (`split.holdout_mask`): from the user's first to last label
interaction, opened `GRACE_S` early (the impressions a click answers were served before it, and an impression
row carries the time it was served). Exposures before it belong to the history the features are computed
from; exposures after it may belong to a held-out test period (a dataset split keeps every exposure), so
neither becomes a label.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from recsys.model.ids import IdIndex

GRACE_S = 3600


@dataclass
class LoggedFeedback:
    """Per user row: `exposed` item indices shown without a click (sorted, unique), `clicked` item indices
    clicked or bought (sorted, unique) and `click_weight` the mean IPW weight of those clicks (aligned)."""

    exposed: list[np.ndarray]
    clicked: list[np.ndarray]
    click_weight: list[np.ndarray]

    def weights(self, row: int, items: np.ndarray) -> np.ndarray:
        """The weight of `items` as positives of user `row`: their click weight when logged, else 1."""
        clicked, weight = self.clicked[row], self.click_weight[row]
        out = np.ones(len(items))
        if len(clicked):
            at = np.searchsorted(clicked, items).clip(max=len(clicked) - 1)
            hit = clicked[at] == items
            out[hit] = weight[at[hit]]
        return out


def label_window_feedback(exposures: pd.DataFrame, labels: pd.DataFrame, users: IdIndex,
                          items: IdIndex) -> LoggedFeedback:
    """`LoggedFeedback` of `users` (rows of `users`) from the exposures inside each user's label window."""
    n = len(users)
    start, end = np.full(n, np.iinfo(np.int64).max), np.full(n, np.iinfo(np.int64).min)
    label_user = users.lookup(labels["user_id"])
    known = label_user >= 0
    label_ts = labels["timestamp"].to_numpy(np.int64)[known]
    np.minimum.at(start, label_user[known], label_ts)
    np.maximum.at(end, label_user[known], label_ts)
    u = users.lookup(exposures["user_id"])
    i = items.lookup(exposures["item_id"])
    keep = (u >= 0) & (i >= 0)
    ts = exposures["timestamp"].to_numpy(np.int64)[keep]
    keep[keep] = (ts >= start[u[keep]] - GRACE_S) & (ts <= end[u[keep]])
    u, i = u[keep], i[keep]
    label = exposures["label"].to_numpy()[keep] == 1
    weight = exposures["weight"].to_numpy(np.float64)[keep]
    exposed, _ = _per_user(n, u[~label], i[~label])
    clicked, click_weight = _per_user(n, u[label], i[label], weight[label])
    return LoggedFeedback(exposed, clicked, click_weight)


def _per_user(n: int, user: np.ndarray, item: np.ndarray,
              weight: np.ndarray | None = None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per user row: the sorted unique items, and the mean weight of each (ones without `weight`)."""
    weight = np.ones(len(user)) if weight is None else weight
    pairs, inverse = np.unique(np.stack([user, item]), axis=1, return_inverse=True)
    inverse = inverse.ravel()
    mean = np.bincount(inverse, weights=weight, minlength=pairs.shape[1]) / np.bincount(
        inverse, minlength=pairs.shape[1])
    bounds = np.searchsorted(pairs[0], np.arange(n + 1))
    return ([pairs[1][bounds[r]:bounds[r + 1]] for r in range(n)],
            [mean[bounds[r]:bounds[r + 1]] for r in range(n)])
