"""String id <-> contiguous integer index, shared by every model so their item spaces line up."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

SMALL_LOOKUP = 64  # up to this many ids, per-id hash lookups beat pandas' vectorised get_indexer


class IdIndex:
    """An ordered set of string ids; `lookup` maps ids to positions (-1 when unknown)."""

    def __init__(self, ids: Iterable[str]) -> None:
        values = [str(i) for i in ids]
        self._index = pd.Index(values, dtype=object)
        if not self._index.is_unique:
            raise ValueError("duplicate ids in IdIndex")

    def __len__(self) -> int:
        return len(self._index)

    @property
    def ids(self) -> np.ndarray:
        """The ids as an object array, in index order."""
        return self._index.to_numpy()

    def lookup(self, ids: Iterable[str] | pd.Series | np.ndarray) -> np.ndarray:
        """Positions of `ids` (int64), -1 where an id is unknown."""
        if isinstance(ids, list | tuple) and len(ids) <= SMALL_LOOKUP:
            return self._lookup_small(ids)
        values = pd.Index(np.asarray(pd.Series(ids, dtype=object).to_numpy(), dtype=object))
        return self._index.get_indexer(values).astype(np.int64)

    def _lookup_small(self, ids: list[str] | tuple[str, ...]) -> np.ndarray:
        """A few ids (one request's user or history) by hash lookups: 4x faster than building indexes."""
        out = np.empty(len(ids), dtype=np.int64)
        for j, value in enumerate(ids):
            try:
                out[j] = self._index.get_loc(value)
            except KeyError:
                out[j] = -1
        return out

    def to_list(self) -> list[str]:
        return list(self._index)
