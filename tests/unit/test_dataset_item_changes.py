"""The catalogue's changes applied to a dataset's items for a rebuild: new items, changed genres, availability."""

from __future__ import annotations

import pandas as pd

from recsys.training.data.item_changes import apply_item_changes
from recsys.training.data.schema import ID_DTYPE


def items() -> pd.DataFrame:
    return pd.DataFrame({"item_id": pd.array(["a", "b", "c"], dtype=ID_DTYPE),
                         "title": pd.array(["A", "B", "C"], dtype=ID_DTYPE),
                         "genres": [["Sci-Fi"], ["Drama"], ["Comedy"]]})


def change(item_id, op, ts, genres=None, available=True, title="", attributes=None):
    return {"item_id": item_id, "op": op, "timestamp_ms": ts, "genres": genres, "available": available,
            "title": title, "attributes": attributes}


def test_latest_changes_add_update_and_remove_items():
    changes = pd.DataFrame([
        change("a", "upsert", 5, ["sci_fi", "horror"], title="A2", attributes=[("year", "1999")]),
        change("b", "delete", 6, available=False),
        change("c", "upsert", 7, ["Comedy"], available=False),
        change("n", "upsert", 8, ["drama"], title="New"),
    ])
    out, counts = apply_item_changes(items(), changes)
    rows = out.set_index(out["item_id"].astype(str))
    assert rows.loc["a", "genres"] == ["Sci-Fi", "horror"] and rows.loc["a", "title"] == "A2"  # label kept
    assert rows.loc["a", "year"] == 1999
    assert rows["available"].to_dict() == {"a": True, "b": False, "c": False, "n": True}
    assert rows.loc["n", "genres"] == ["Drama"] and counts == {"upserted": 2, "added": 1, "removed": 2}


def test_no_changes_leave_the_catalogue_as_it_is():
    out, counts = apply_item_changes(items(), pd.DataFrame())
    assert list(out.columns) == ["item_id", "title", "genres"] and counts["added"] == 0
