"""The binary user-item matrix and top-K selection that every retrieval model shares."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.model.ids import IdIndex
from recsys.training.data.schema import Dataset


class InteractionMatrix:
    """Users (those with interactions) x catalogue items (ds.items order), 1 where the user interacted."""

    def __init__(self, users: IdIndex, items: IdIndex, csr: sp.csr_matrix) -> None:
        self.users, self.items, self.csr = users, items, csr

    @classmethod
    def from_interactions(
        cls, interactions: pd.DataFrame, items: IdIndex, users: IdIndex | None = None
    ) -> InteractionMatrix:
        """Build from an interactions frame; rows of unknown users or items are dropped."""
        if users is None:
            users = IdIndex(pd.unique(interactions["user_id"].astype(object)))
        u = users.lookup(interactions["user_id"])
        i = items.lookup(interactions["item_id"])
        keep = (u >= 0) & (i >= 0)
        data = np.ones(int(keep.sum()), dtype=np.float32)
        csr = sp.csr_matrix((data, (u[keep], i[keep])), shape=(len(users), len(items)), dtype=np.float32)
        csr.data[:] = 1.0  # duplicates summed above; keep it binary
        return cls(users, items, csr)

    @classmethod
    def from_dataset(cls, ds: Dataset) -> InteractionMatrix:
        return cls.from_interactions(ds.interactions, IdIndex(ds.items["item_id"].astype(object)))

    def seen(self, rows: np.ndarray) -> list[np.ndarray]:
        """Item indices each of `rows` interacted with."""
        return [self.csr.indices[self.csr.indptr[r] : self.csr.indptr[r + 1]] for r in rows]

    def item_counts(self) -> np.ndarray:
        return np.asarray(self.csr.sum(axis=0)).ravel()


def batches(n: int, size: int) -> Iterator[np.ndarray]:
    for start in range(0, n, size):
        yield np.arange(start, min(n, start + size))


def top_k(scores: np.ndarray, k: int, exclude: list[np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-k item indices and scores per row (best first), never returning excluded items.

    `scores` (B, n_items) is modified in place when `exclude` is given. Rows with fewer than k
    eligible items are padded with index -1 and score -inf.
    """
    if exclude is not None:
        for row, items in enumerate(exclude):
            scores[row, items] = -np.inf
    k_eff = min(k, scores.shape[1])
    part = np.argpartition(-scores, k_eff - 1, axis=1)[:, :k_eff]
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -part_scores))
    idx = np.take_along_axis(part, order, axis=1)
    val = np.take_along_axis(part_scores, order, axis=1)
    idx = np.where(np.isneginf(val), -1, idx)
    if k_eff < k:
        idx = np.pad(idx, ((0, 0), (0, k - k_eff)), constant_values=-1)
        val = np.pad(val, ((0, 0), (0, k - k_eff)), constant_values=-np.inf)
    return idx, val


def recommend_top_k(
    score_fn: Callable[[np.ndarray], np.ndarray],
    rows: np.ndarray,
    k: int,
    exclude: list[np.ndarray] | None = None,
    batch_size: int = 256,
) -> tuple[np.ndarray, np.ndarray]:
    """Apply `score_fn(rows_batch) -> (B, n_items)` in batches and keep the top k unexcluded items."""
    idx_parts, val_parts = [], []
    for b in batches(len(rows), batch_size):
        scores = np.array(score_fn(rows[b]), dtype=np.float32, copy=True)
        ex = None if exclude is None else [exclude[j] for j in b]
        i, v = top_k(scores, k, ex)
        idx_parts.append(i)
        val_parts.append(v)
    if not idx_parts:
        return np.zeros((0, k), dtype=np.int64), np.zeros((0, k), dtype=np.float32)
    return np.concatenate(idx_parts), np.concatenate(val_parts)
