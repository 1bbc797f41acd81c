"""The most recent held-out window of a dataset: by time, over all users (not per user).

The window holds every interaction at or after `since`; the history everything before it. `since` is chosen so
the window holds the last `frac` of the interactions (ties at `since` go to the window), or the last `hours`,
and never earlier than `after` (the end of the champion's training data: a window the champion was trained on
would favour it). A challenger is trained on the history, and champion and challenger are measured on the window,
each user's history interactions being what the recommender knew of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import pandas as pd

from recsys.training.data.schema import Dataset
from recsys.training.pipeline import DatasetError


@dataclass(frozen=True)
class HeldOutWindow:
    """`history` (a Dataset: same catalogue, interactions before `since`) and `window` (interactions from
    `since` to `until`, epoch seconds inclusive)."""

    history: Dataset
    window: pd.DataFrame
    since: int
    until: int

    after: int | None = None
    #: The logged impressions of the window (user_id, item_id, label: clicked or not), when the dataset has them.
    exposures: pd.DataFrame | None = None

    def describe(self) -> dict:
        """The window's bounds and sizes (for the manifest, the history event and the report)."""
        return {
            "train": data_span(self.history.interactions),
            "held_out": {**data_span(self.window), "n_users": int(self.window["user_id"].nunique()),
                         "after_champion_data": self.after},
        }


def data_span(interactions: pd.DataFrame) -> dict:
    """First and last timestamp (epoch s) and size of some interactions: a version's `data_window.train`."""
    ts = interactions["timestamp"]
    return {"since": int(ts.min()), "until": int(ts.max()), "n_interactions": int(len(ts))}


def window_start(timestamps: pd.Series, frac: float | None = None, hours: float | None = None) -> int:
    """First timestamp of the window: the last `frac` of the interactions, or the last `hours` before the newest."""
    if (frac is None) == (hours is None):
        raise ValueError("give exactly one of a window fraction and a window length in hours")
    newest = int(timestamps.max())
    if hours is not None:
        if not hours > 0:
            raise ValueError(f"window hours must be > 0, got {hours}")
        return newest - int(hours * 3600) + 1
    if not 0.0 < frac < 1.0:
        raise ValueError(f"window fraction must be between 0 and 1 (exclusive), got {frac}")
    ordered = timestamps.sort_values(ignore_index=True)
    return int(ordered.iloc[len(ordered) - max(1, math.ceil(frac * len(ordered)))])


def _before(ds: Dataset, since: int) -> Dataset:
    """`ds` restricted to interactions (and exposures, when it carries them) before `since`."""
    inter = ds.interactions
    changes: dict = {"interactions": inter.loc[inter["timestamp"] < since].reset_index(drop=True)}
    if ds.exposures is not None:
        changes["exposures"] = ds.exposures.loc[ds.exposures["timestamp"] < since].reset_index(drop=True)
    return replace(ds, **changes, meta={**ds.meta, "history_before": since})


def recent_window(ds: Dataset, frac: float | None = None, hours: float | None = None,
                  after: int | None = None) -> HeldOutWindow:
    """Split `ds` into its history and its most recent window, which starts after `after` (see the module
    docstring)."""
    inter = ds.interactions
    if len(inter) == 0:
        raise DatasetError(f"dataset {ds.name!r}: no interactions")
    try:
        since = window_start(inter["timestamp"], frac, hours)
    except ValueError as exc:
        raise DatasetError(str(exc)) from exc
    if after is not None:
        since = max(since, after + 1)
    window = inter.loc[inter["timestamp"] >= since].reset_index(drop=True)
    if len(window) == 0:
        raise DatasetError(f"dataset {ds.name!r}: no interaction is newer than the champion's training data "
                           f"(until {after}): nothing to judge a challenger on")
    history = _before(ds, since)
    if len(history.interactions) == 0:
        raise DatasetError(f"dataset {ds.name!r}: the held-out window (from {since}) leaves no history to train on")
    exposures = None
    if ds.exposures is not None and len(ds.exposures):
        exposures = ds.exposures.loc[ds.exposures["timestamp"] >= since].reset_index(drop=True)
    return HeldOutWindow(history=history, window=window, since=since, until=int(inter["timestamp"].max()),
                         after=after, exposures=exposures)
