"""The item catalogue the gateway keeps in memory: popularity order and genres (for fallbacks and caps)."""

from __future__ import annotations

import pandas as pd

from recsys.gateway.fallbacks import PopularItems
from recsys.model.layout import BundleLayout
from recsys.model.registry import resolve_model_dir

GENRE_PREFIX = "item_genre_"


def load_catalogue(models_dir: str, version: str | None = None) -> PopularItems:
    """The popularity list and item genres of the registry's latest (or given) model version."""
    folder = resolve_model_dir(models_dir, version)
    return popular_from_item_features(pd.read_parquet(BundleLayout(folder).item_features))


def popular_from_item_features(items: pd.DataFrame) -> PopularItems:
    """Popularity list and genres from the item feature table (item_id, item_log_count, item_genre_*)."""
    genre_cols = [c for c in items.columns if c.startswith(GENRE_PREFIX)]
    ordered = items.sort_values(["item_log_count", "item_id"], ascending=[False, True])
    ranked = list(zip(ordered["item_id"].astype(str), ordered["item_log_count"].astype(float), strict=True))
    genres: dict[str, frozenset[str]] = {}
    if genre_cols:
        flags = items[genre_cols].to_numpy() > 0
        names = [c[len(GENRE_PREFIX):] for c in genre_cols]
        for item_id, row in zip(items["item_id"].astype(str), flags, strict=True):
            genres[item_id] = frozenset(n for n, on in zip(names, row, strict=True) if on)
    return PopularItems(ranked, genres)
