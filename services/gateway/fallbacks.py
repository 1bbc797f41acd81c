"""Fallback sources the gateway serves from when hops fail: popular items and batch-computed lists."""

from __future__ import annotations

import csv
import logging
from collections import defaultdict
from pathlib import Path

from recsys.gateway.rerank import Scored
from recsys.v1 import candidates_pb2

log = logging.getLogger("recsys.gateway.fallbacks")

POPULAR = candidates_pb2.CANDIDATE_SOURCE_POPULAR
BATCH = candidates_pb2.CANDIDATE_SOURCE_BATCH


class BatchLists:
    """Top-K lists per user precomputed by `recsys batch-recommend` (user_id,item_id,rank,score)."""

    def __init__(self, lists: dict[str, list[Scored]]) -> None:
        self.lists = lists

    @classmethod
    def load(cls, path: str) -> BatchLists:
        if not path or not Path(path).exists():
            return cls({})
        rows: dict[str, list[tuple[int, Scored]]] = defaultdict(list)
        with open(path, newline="") as handle:
            for row in csv.DictReader(handle):
                item = Scored(row["item_id"], float(row["score"]), BATCH)
                rows[row["user_id"]].append((int(row["rank"]), item))
        lists = {user: [s for _, s in sorted(items, key=lambda t: t[0])] for user, items in rows.items()}
        log.info("batch lists loaded", extra={"users": len(lists), "path": path})
        return cls(lists)

    def for_user(self, user_id: str) -> list[Scored]:
        return self.lists.get(user_id, [])


class PopularItems:
    """Items by global popularity, the last-resort list (always non-empty once loaded)."""

    def __init__(self, ranked: list[tuple[str, float]], genres: dict[str, frozenset[str]]) -> None:
        self.ranked = [Scored(item_id, score, POPULAR) for item_id, score in ranked]
        self.genres = genres
        self.vocabulary = frozenset(g for gs in genres.values() for g in gs)

    def top(self, n: int) -> list[Scored]:
        return self.ranked[:n]
