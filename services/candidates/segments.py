"""Popularity by demographic segment, for users without (enough) history.

A segment is one value of a categorical demographic column of the feature spec (its one-hot user feature,
e.g. `user_demo_age_25_34`). Its list ranks the items in the recent histories of the segment's users
(the registry's `features/user_history.parquet`) by how many of those users have them, most first.
A user belongs to the segment of the first categorical demographic whose one-hot is set in their features.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.candidates.popularity import PopularityIndex
from recsys.model.layout import BundleLayout
from recsys.model.spec import FeatureSpec

log = logging.getLogger("recsys.candidates.segments")

MAX_SEGMENT_ITEMS = 5000


@dataclass
class DemographicSegments:
    """Per one-hot demographic column (index into spec.user_features): rows of the PopularityIndex, best first."""

    groups: list[list[int]] = field(default_factory=list)  # per categorical demographic: its one-hot columns
    lists: dict[int, np.ndarray] = field(default_factory=dict)

    def segment_of(self, features: np.ndarray | None) -> int | None:
        """The user's segment (a one-hot column index), or None without demographics."""
        if features is None:
            return None
        for columns in self.groups:
            values = np.nan_to_num(features[columns], nan=0.0)
            if values.max(initial=0.0) > 0.5:
                column = columns[int(np.argmax(values))]
                if column in self.lists:
                    return column
        return None


def one_hot_groups(spec: FeatureSpec) -> list[list[int]]:
    """Indices of each categorical demographic's one-hot columns: the spec lists them last, in order."""
    sizes = [len(vocab) for vocab in spec.categorical_demographics.values()]
    start = len(spec.user_features) - sum(sizes)
    groups = []
    for size in sizes:
        groups.append(list(range(start, start + size)))
        start += size
    return groups


def build_segments(spec: FeatureSpec, model_dir: Path, popularity: PopularityIndex) -> DemographicSegments:
    """Segment lists from the registry version's user features and histories (empty when either is missing)."""
    groups = one_hot_groups(spec)
    users_path = BundleLayout(model_dir).user_features
    history_path = BundleLayout(model_dir).user_history
    if not groups or not users_path.exists() or not history_path.exists():
        return DemographicSegments()
    columns = [spec.user_features[i] for group in groups for i in group]
    users = pd.read_parquet(users_path, columns=["user_id", *columns])
    history = pd.read_parquet(history_path, columns=["user_id", "recent_item_ids"])
    pairs = history.explode("recent_item_ids").dropna()
    pairs = pd.DataFrame(
        {"user_id": pairs["user_id"].astype(str).to_numpy(), "item": pairs["recent_item_ids"].astype(str).to_numpy()}
    ).drop_duplicates()
    rows = popularity.position.get_indexer(pairs["item"].to_numpy(dtype=object))
    pairs = pairs.assign(row=rows)[rows >= 0]
    member = users.set_index(users["user_id"].astype(str))[columns]
    lists: dict[int, np.ndarray] = {}
    for group in groups:
        for index in group:
            name = spec.user_features[index]
            in_segment = member.index[member[name].to_numpy() > 0.5]
            counts = pairs.loc[pairs["user_id"].isin(in_segment), "row"].value_counts()
            if counts.empty:
                continue
            # most segment users first; ties by global popularity (rows are in global popularity order)
            ranked = counts.reset_index().sort_values(["count", "row"], ascending=[False, True], kind="stable")
            lists[index] = ranked["row"].to_numpy(np.int64)[:MAX_SEGMENT_ITEMS]
    log.info("demographic segments built", extra={"segments": len(lists)})
    return DemographicSegments(groups=groups, lists=lists)
