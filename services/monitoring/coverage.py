"""Catalogue coverage: which distinct items were served, per time bucket and variant, exactly.

Every item id gets a small integer index (persisted); each (bucket, variant) keeps a bitmap over those
indexes. Bitmaps of any set of buckets merge by OR, so the distinct items served in any window is the
popcount of the OR of its buckets' bitmaps. A bucket's bitmap is stored as one compressed blob,
rewritten when the bucket changes; the consumer keeps only the latest buckets in memory.
"""

from __future__ import annotations

import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterable

import numpy as np

Cell = tuple[int, str]  # (bucket, variant)


def pack(bitmap: np.ndarray) -> bytes:
    """A boolean bitmap as a compressed blob."""
    return zlib.compress(np.packbits(bitmap).tobytes(), 1)


def unpack(blob: bytes) -> np.ndarray:
    return np.unpackbits(np.frombuffer(zlib.decompress(blob), dtype=np.uint8)).astype(bool)


def union_count(blobs: Iterable[bytes]) -> int:
    """Distinct items in the union of stored bitmaps."""
    merged = np.zeros(0, dtype=bool)
    for blob in blobs:
        bitmap = unpack(blob)
        if len(bitmap) > len(merged):
            bitmap[: len(merged)] |= merged
            merged = bitmap
        else:
            merged[: len(bitmap)] |= bitmap
    return int(merged.sum())


class CoverageTracker:
    """Item indexes and the bitmaps of recent buckets; owned by the consumer thread."""

    def __init__(self, known_items: list[tuple[int, str]], load: Callable[[Cell], bytes | None], cache: int = 16):
        self.index: dict[str, int] = {item: idx for idx, item in known_items}
        self._load = load
        self._cache: OrderedDict[Cell, np.ndarray] = OrderedDict()
        self._cache_size = cache

    def new_items(self, items: Iterable[str], out: list[tuple[int, str]]) -> None:
        """Index unseen items (appending (index, item) to `out` for the store)."""
        index = self.index
        for item in items:
            if item not in index:
                index[item] = len(index)
                out.append((index[item], item))

    def update(self, served: dict[Cell, list[str]], new_index_rows: list[tuple[int, str]]) -> list[tuple]:
        """Mark the served items of a batch; returns the (bucket, variant, blob) rows to store."""
        rows = []
        index = self.index
        for cell, items in served.items():
            self.new_items(set(items), new_index_rows)
            idx = np.array(list(map(index.__getitem__, items)), dtype=np.int64)
            bitmap = self._bitmap(cell, len(index))
            bitmap[idx] = True
            rows.append((cell[0], cell[1], pack(bitmap)))
        return rows

    def _bitmap(self, cell: Cell, size: int) -> np.ndarray:
        bitmap = self._cache.get(cell)
        if bitmap is None:
            blob = self._load(cell)
            bitmap = unpack(blob) if blob is not None else np.zeros(0, dtype=bool)
        if len(bitmap) < size:
            grown = np.zeros((max(size, 2 * len(bitmap)) + 7) & ~7, dtype=bool)
            grown[: len(bitmap)] = bitmap
            bitmap = grown
        self._cache[cell] = bitmap
        self._cache.move_to_end(cell)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return bitmap
