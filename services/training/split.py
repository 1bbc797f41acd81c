"""Train/test splits of a dataset's interactions, per user and in time order."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from recsys.training.data.schema import Dataset

SPLITS = ("temporal", "loo")


@dataclass
class Split:
    """`train` is a Dataset (same items/users, earlier interactions); `test` the held-out interactions."""

    train: Dataset
    test: pd.DataFrame


def _positions_from_end(interactions: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """For each row: its position counted from the user's last interaction (0 = last), and the user's count.

    Order within a user is by timestamp, ties kept in the frame's order (stable).
    """
    order = np.lexsort((np.arange(len(interactions)), interactions["timestamp"].to_numpy()))
    users = interactions["user_id"].astype(object).to_numpy()[order]
    codes, _ = pd.factorize(users)
    counts = np.bincount(codes)
    seq = pd.Series(codes).groupby(codes).cumcount().to_numpy()
    from_end = np.empty(len(interactions), dtype=np.int64)
    n_user = np.empty(len(interactions), dtype=np.int64)
    from_end[order] = counts[codes] - 1 - seq
    n_user[order] = counts[codes]
    return from_end, n_user


def holdout_mask(interactions: pd.DataFrame, method: str = "temporal", test_frac: float = 0.2) -> np.ndarray:
    """Boolean mask of held-out rows.

    temporal: the last floor(test_frac * n) interactions of each user with n interactions (users with
    too few interactions keep all in train); loo: each user's last interaction when the user has two or more.
    """
    if method not in SPLITS:
        raise ValueError(f"unknown split {method!r}; expected one of {', '.join(SPLITS)}")
    from_end, n_user = _positions_from_end(interactions)
    if method == "loo":
        return (from_end == 0) & (n_user >= 2)
    n_test = np.floor(n_user * test_frac).astype(np.int64)
    return from_end < n_test


def split_dataset(ds: Dataset, method: str = "temporal", test_frac: float = 0.2) -> Split:
    """Split `ds` per user in time order (see `holdout_mask`)."""
    mask = holdout_mask(ds.interactions, method, test_frac)
    train = ds.interactions.loc[~mask].reset_index(drop=True)
    test = ds.interactions.loc[mask].reset_index(drop=True)
    return Split(train=replace(ds, interactions=train, meta={**ds.meta, "split": method}), test=test)
