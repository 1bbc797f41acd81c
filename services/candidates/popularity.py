"""In-memory popularity lists: the fill for short ANN answers and the fallback when Milvus is down.

Items are kept in descending popularity; a request walks that order in chunks, applying the same
filters as the Milvus expression (availability, genres, excluded ids), so a fallback answer obeys the
request exactly like an ANN answer does. Segments: the popular items of the user's favourite genres
(`genre-popular`), then everything (`popular`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from recsys.candidates.catalog import ItemCatalog
from recsys.candidates.filters import FilterSpec, allowed_mask

CHUNK = 2048


@dataclass
class Pick:
    item_id: str
    score: float


class PopularityIndex:
    """Popularity order over one catalogue, aligned with the active index's genre vocabulary."""

    def __init__(self, catalog: ItemCatalog, index_genres: list[str]) -> None:
        self.catalog = catalog
        self.order = np.argsort(-catalog.popularity, kind="stable")
        self.ids = catalog.item_ids[self.order]
        self.scores = catalog.popularity[self.order].astype(np.float32)
        self.genre_matrix = catalog.genre_matrix[self.order]
        self.available = catalog.available[self.order].copy()
        self.base_available = self.available.copy()
        self.position = pd.Index(self.ids)
        column = {g: i for i, g in enumerate(catalog.genres)}
        self.genre_columns = np.array([column.get(g, -1) for g in index_genres], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.ids)

    def set_unavailable(self, item_ids: Iterable[str]) -> None:
        """Availability as Milvus knows it: the catalogue's flags, minus these ids."""
        available = self.base_available.copy()
        rows = self.position.get_indexer(list(item_ids))
        available[rows[rows >= 0]] = False
        self.available = available

    def rows_of(self, item_ids: Iterable[str]) -> np.ndarray:
        rows = self.position.get_indexer(list(item_ids))
        return rows[rows >= 0]

    def genres_of_items(self, item_ids: Iterable[str]) -> np.ndarray:
        """Counts per index genre over the given items (unknown ids ignored)."""
        rows = self.rows_of(item_ids)
        counts = np.zeros(len(self.genre_columns), dtype=np.float64)
        if len(rows):
            per_column = self.genre_matrix[rows].sum(axis=0)
            ok = self.genre_columns >= 0
            counts[ok] = per_column[self.genre_columns[ok]]
        return counts

    def top(
        self,
        k: int,
        spec: FilterSpec,
        skip: set[str],
        genres: tuple[int, ...] = (),
        positions: np.ndarray | None = None,
    ) -> list[Pick]:
        """Up to k most popular items passing `spec` (and having one of `genres`, when given), not in skip.

        `positions` (rows of this index, best first) walks a segment's own order instead of the global one."""
        if k <= 0:
            return []
        if genres:
            wanted = set(genres) & set(spec.include_genres) if spec.include_genres else set(genres)
            if not wanted:
                return []
            spec = FilterSpec(tuple(sorted(wanted)), spec.exclude_genres, spec.available_only, spec.exclude_ids)
        n = len(self.ids) if positions is None else len(positions)
        out: list[Pick] = []
        for start in range(0, n, CHUNK):
            stop = min(n, start + CHUNK)
            rows = np.arange(start, stop) if positions is None else positions[start:stop]
            mask = allowed_mask(spec, self.genre_matrix[rows], self.available[rows], self.genre_columns)
            for row in rows[mask]:
                item_id = self.ids[row]
                if item_id in skip or item_id in spec.exclude_ids:
                    continue
                out.append(Pick(str(item_id), float(self.scores[row])))
                if len(out) >= k:
                    return out
        return out
