"""The catalogue's changes (the event log's `items` table, written from the items topic) applied to a dataset's
item catalogue, so a rebuild (`recsys dataset build`, then `recsys train` and `recsys index`) sees the catalogue
as it is now and not as it was at the last training:

- the latest change of each item (by time, then log order) decides;
- an upsert sets the title and genres (a genre matching an existing label by its feature name takes that label,
  so 'sci_fi' from the gateway and 'Sci-Fi' from the dataset stay one genre) and a `year` attribute; an item the
  catalogue lacks gets a row;
- an `available` column says which items may be served: False for a deleted or unavailable item (the row stays:
  interactions refer to it), True otherwise; the bundle's item features carry it to the index.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from recsys.eventlog import layout
from recsys.model.spec import feature_name
from recsys.training.data.schema import ID_DTYPE


def read_item_changes(uri: str, until_ms: int | None = None) -> pd.DataFrame:
    """The latest change of every item logged before until_ms (every one when None), by item_id."""
    table = layout.read_table(uri, layout.ITEMS, None, until_ms)
    frame = table.to_pandas()
    if frame.empty:
        return frame
    frame = frame.sort_values(["item_id", "timestamp_ms", "topic", "partition", "offset"], kind="stable")
    return frame.drop_duplicates("item_id", keep="last").reset_index(drop=True)


def apply_item_changes(items: pd.DataFrame, changes: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """`items` with the changes applied (module docstring) and counts of what changed."""
    if changes is None or changes.empty:
        return items, {"upserted": 0, "added": 0, "removed": 0}
    items = items.copy()
    if "available" not in items.columns:
        items["available"] = True
    labels = {feature_name(g): g for gs in items["genres"] for g in gs}
    position = {item_id: i for i, item_id in enumerate(items["item_id"].astype(str))}
    upserts = changes[(changes["op"] == "upsert") & changes["available"].fillna(True)]
    removed = changes[~changes.index.isin(upserts.index)]
    new_rows = []
    titles, genres, available = items["title"].tolist(), items["genres"].tolist(), items["available"].tolist()
    years = items["year"].tolist() if "year" in items.columns else [np.nan] * len(items)
    for change in upserts.itertuples(index=False):
        mine = [labels.get(feature_name(g), g) for g in (change.genres if change.genres is not None else [])]
        attributes = dict(change.attributes) if change.attributes is not None else {}
        year = pd.to_numeric(attributes.get("year"), errors="coerce")
        row = position.get(str(change.item_id))
        if row is None:
            new_rows.append({"item_id": str(change.item_id), "title": change.title or "", "genres": mine,
                             "available": True, "year": year})
            continue
        titles[row], genres[row], available[row] = change.title or titles[row], mine, True
        if not np.isnan(year):
            years[row] = year
    for change in removed.itertuples(index=False):
        row = position.get(str(change.item_id))
        if row is not None:
            available[row] = False
    items["title"] = pd.array(titles, dtype=ID_DTYPE)
    items["genres"] = genres
    items["available"] = available
    if "year" in items.columns or any(not np.isnan(y) for y in years) or any(
            not np.isnan(r["year"]) for r in new_rows):
        items["year"] = years
    if new_rows:
        added = pd.DataFrame(new_rows)
        added["item_id"] = pd.array(added["item_id"], dtype=ID_DTYPE)
        added["title"] = pd.array(added["title"], dtype=ID_DTYPE)
        items = pd.concat([items, added[[c for c in added.columns if c in items.columns]]], ignore_index=True)
    return items, {"upserted": len(upserts), "added": len(new_rows), "removed": int((~items["available"]).sum())}
