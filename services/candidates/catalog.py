"""The item catalogue the index is built from: ids, two-tower embeddings, genres, availability, popularity.

`load_catalog(model_dir)` reads one registry version written by the training package (layout in
`recsys.model.layout`): `two_tower/item_ids.json` + `item_embeddings.npy` (L2-normalised rows),
`feature_spec.json` (the genre vocabulary), `features/item_features.parquet` (`item_genre_<g>` flags,
and an `available` / `item_available` column when the catalogue has one; otherwise every item is
available) and `popularity/popularity.parquet` (interaction counts).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from recsys.model.bundle import load_item_ids, load_spec
from recsys.model.layout import BundleLayout

AVAILABILITY_COLUMNS = ("available", "item_available")


@dataclass
class ItemCatalog:
    """Row-aligned item arrays; `genre_matrix[i, g]` says whether item i has genre `genres[g]`."""

    item_ids: np.ndarray  # object (str), unique
    embeddings: np.ndarray | None  # float32 (n, dim), L2-normalised; None when only metadata is needed
    genres: list[str]
    genre_matrix: np.ndarray  # bool (n, len(genres))
    available: np.ndarray  # bool (n,)
    popularity: np.ndarray  # float32 (n,)

    def __post_init__(self) -> None:
        n = len(self.item_ids)
        if self.embeddings is not None and len(self.embeddings) != n:
            raise ValueError(f"{len(self.embeddings)} embeddings for {n} items")
        if self.genre_matrix.shape != (n, len(self.genres)):
            raise ValueError(f"genre matrix {self.genre_matrix.shape} does not match {n} items x {len(self.genres)}")
        if len(self.available) != n or len(self.popularity) != n:
            raise ValueError("available / popularity arrays do not match the items")
        if not pd.Index(self.item_ids).is_unique:
            raise ValueError("duplicate item ids in the catalogue")

    def __len__(self) -> int:
        return len(self.item_ids)

    @property
    def dim(self) -> int:
        if self.embeddings is None:
            raise ValueError("catalogue loaded without embeddings")
        return int(self.embeddings.shape[1])

    def item_genres(self, row: int) -> list[str]:
        return [self.genres[g] for g in np.flatnonzero(self.genre_matrix[row])]

    @classmethod
    def from_items(
        cls,
        item_ids: list[str],
        embeddings: np.ndarray | None,
        item_genres: list[list[str]],
        available: list[bool] | np.ndarray | None = None,
        popularity: list[float] | np.ndarray | None = None,
        genres: list[str] | None = None,
    ) -> ItemCatalog:
        """Build from per-item genre lists (vocabulary: `genres`, or the sorted union)."""
        vocab = list(genres) if genres is not None else sorted({g for gs in item_genres for g in gs})
        position = {g: i for i, g in enumerate(vocab)}
        matrix = np.zeros((len(item_ids), len(vocab)), dtype=bool)
        for row, gs in enumerate(item_genres):
            for g in gs:
                if g not in position:
                    raise ValueError(f"item {item_ids[row]}: genre {g!r} is not in the vocabulary")
                matrix[row, position[g]] = True
        n = len(item_ids)
        return cls(
            item_ids=np.asarray([str(i) for i in item_ids], dtype=object),
            embeddings=None if embeddings is None else np.ascontiguousarray(embeddings, dtype=np.float32),
            genres=vocab,
            genre_matrix=matrix,
            available=np.ones(n, dtype=bool) if available is None else np.asarray(available, dtype=bool),
            popularity=np.zeros(n, dtype=np.float32) if popularity is None else np.asarray(popularity, np.float32),
        )


def load_catalog(model_dir: str | Path, with_embeddings: bool = True) -> ItemCatalog:
    """The catalogue of one registry version (see the module docstring for the files read)."""
    model_dir = Path(model_dir)
    src = BundleLayout(model_dir)
    ids = np.asarray(load_item_ids(model_dir), dtype=object)
    index = pd.Index(ids)
    embeddings = None
    if with_embeddings:
        embeddings = np.load(src.item_embeddings, mmap_mode="r")
        if embeddings.shape[0] != len(ids):
            raise ValueError(f"{src.two_tower}: {embeddings.shape[0]} embeddings for {len(ids)} item ids")
    spec = load_spec(model_dir)
    genre_columns = [f"item_genre_{name}" for name in spec.genre_names]
    features_path = src.item_features
    available = np.ones(len(ids), dtype=bool)
    matrix = np.zeros((len(ids), len(spec.genres)), dtype=bool)
    if features_path.exists():
        names = _parquet_columns(features_path)
        avail_col = next((c for c in AVAILABILITY_COLUMNS if c in names), None)
        wanted = ["item_id", *[c for c in genre_columns if c in names], *([avail_col] if avail_col else [])]
        frame = pd.read_parquet(features_path, columns=wanted)
        rows = index.get_indexer(frame["item_id"].astype(str).to_numpy(dtype=object))
        ok = rows >= 0
        for g, column in enumerate(genre_columns):
            if column in frame.columns:
                matrix[rows[ok], g] = frame[column].to_numpy()[ok] > 0.5
        if avail_col:
            available[rows[ok]] = frame[avail_col].fillna(True).astype(bool).to_numpy()[ok]
    popularity = np.zeros(len(ids), dtype=np.float32)
    pop_path = src.popularity
    if pop_path.exists():
        pop = pd.read_parquet(pop_path)
        rows = index.get_indexer(pop["item_id"].astype(str).to_numpy(dtype=object))
        ok = rows >= 0
        popularity[rows[ok]] = pop["count"].to_numpy(dtype=np.float32)[ok]
    return ItemCatalog(
        item_ids=ids,
        embeddings=embeddings,
        genres=list(spec.genres),
        genre_matrix=matrix,
        available=available,
        popularity=popularity,
    )


def _parquet_columns(path: Path) -> set[str]:
    return set(pq.read_schema(path).names)
