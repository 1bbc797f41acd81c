"""The serving side of the two-tower model's item tower: numpy only. The candidate service embeds an item the
model never saw (or whose content changed) from its content features, the cold-start path the tower was trained
for (item ids are dropped to "unknown" at random during training)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from recsys.model.ids import IdIndex
from recsys.model.layout import ITEM_TOWER
from recsys.model.spec import FeatureSpec, feature_name


class ItemEncoder:
    """Embeds items with numpy only, from (item id, item feature row in the spec's item feature order)."""

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.a = {k: v for k, v in arrays.items() if k != "item_ids"}
        self.items = IdIndex(arrays["item_ids"].tolist())
        self.n_features = self.a["feat_mean"].shape[0]

    @classmethod
    def load(cls, path: str | Path) -> ItemEncoder:
        """Load `item_tower.npz` from a file or a two_tower export folder."""
        path = Path(path)
        if path.is_dir():
            path = path / ITEM_TOWER
        with np.load(path, allow_pickle=False) as data:
            return cls({k: data[k] for k in data.files})

    def embed_batch(self, item_ids: list[str | None], features: np.ndarray) -> np.ndarray:
        """(B, dim) float32 L2-normalised item vectors; `features` (B, F) raw, NaN = unknown (the training mean).
        An id the model does not know (or None) uses the learned "unknown item" vector."""
        a = self.a
        idx = np.zeros(len(item_ids), dtype=np.int64)
        known = [i for i, item in enumerate(item_ids) if item is not None]
        if known:
            idx[known] = self.items.lookup([item_ids[i] for i in known]) + 1
        z = (np.asarray(features, dtype=np.float32).reshape(len(item_ids), -1) - a["feat_mean"]) / a["feat_std"]
        z = np.nan_to_num(z, nan=0.0)
        x = np.concatenate([a["item_emb"][idx], z], axis=1)
        out = np.maximum(x @ a["w1"] + a["b1"], 0.0) @ a["w2"] + a["b2"]
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out.astype(np.float32)


def content_features(spec: FeatureSpec, genres: Iterable[str], attributes: dict[str, str]) -> np.ndarray:
    """An item's feature row from what a catalogue change says of it: genre flags, and any item feature named
    by an attribute ("year" -> item_year); everything else (interaction counters) unknown (NaN)."""
    row = np.full(len(spec.item_features), np.nan, dtype=np.float32)
    column = {name: i for i, name in enumerate(spec.item_features)}
    names = dict(zip(spec.genres, spec.genre_names, strict=True))
    mine = {feature_name(g) for g in genres}
    for genre, name in names.items():
        col = column.get(f"item_genre_{name}")
        if col is not None:
            row[col] = 1.0 if (name in mine or feature_name(genre) in mine) else 0.0
    set_attributes(row, column, attributes)
    return row


def set_attributes(row: np.ndarray, column: dict[str, int], attributes: dict[str, str]) -> None:
    """Write each numeric attribute that names an item feature ("year" -> item_year) into its column of `row`."""
    for key, value in attributes.items():
        col = column.get(f"item_{feature_name(key)}")
        if col is not None:
            try:
                row[col] = float(value)
            except ValueError:
                continue
