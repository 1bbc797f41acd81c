"""The in-memory dataset every offline job works on.

Ids are strings everywhere (pyarrow-backed), so any source format maps onto them; models factorize
them to contiguous integers themselves.

- interactions: user_id (str), item_id (str), rating (float32, NaN when absent), timestamp (int64,
  epoch seconds), sorted by (timestamp, user_id).
- items: item_id (str), title (str), genres (list of str, may be empty), and optionally more columns;
  every interacted item appears here (missing ones are added with empty metadata by the loaders).
- users: user_id (str) plus any demographic columns (may be only user_id).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

ID_DTYPE = "string[pyarrow]"
INTERACTION_COLUMNS = ("user_id", "item_id", "rating", "timestamp")


@dataclass
class Dataset:
    """Interactions plus item and user metadata; `name` says where it came from."""

    interactions: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame
    name: str = "dataset"
    meta: dict = field(default_factory=dict)

    @property
    def n_users(self) -> int:
        return int(self.interactions["user_id"].nunique())

    @property
    def n_items(self) -> int:
        return int(len(self.items))

    @property
    def genres(self) -> list[str]:
        """Sorted distinct genres over the catalogue."""
        return sorted({g for gs in self.items["genres"] for g in gs})
