"""Re-ranking: dedupe, business filters and a per-genre diversity cap over a scored list."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import NamedTuple


class Scored(NamedTuple):
    """One candidate on its way to the response (a tuple: hundreds are made per request)."""

    item_id: str
    score: float
    source: int  # recsys.v1.CandidateSource


_SCORE = itemgetter(1)


@dataclass(frozen=True)
class FilterSpec:
    """Business filters the caller asked for (already validated)."""

    include_genres: frozenset[str] = frozenset()
    exclude_genres: frozenset[str] = frozenset()
    exclude_item_ids: frozenset[str] = frozenset()

    def admits(self, item_id: str, genres: frozenset[str]) -> bool:
        if item_id in self.exclude_item_ids:
            return False
        if self.exclude_genres and genres & self.exclude_genres:
            return False
        return not self.include_genres or bool(genres & self.include_genres)


def rerank(
    items: Sequence[Scored],
    k: int,
    genres_of: Mapping[str, frozenset[str]],
    filters: FilterSpec,
    genre_cap: float,
    seen: frozenset[str] = frozenset(),
    blocked: Container[str] = frozenset(),
) -> list[Scored]:
    """Top k by score: distinct, unseen, not blocked (removed from the catalogue), admitted by the filters, and
    no genre above genre_cap of k.

    Items held back only by the genre cap fill the list when too few others remain.
    """
    cap = max(1, math.ceil(genre_cap * k)) if genre_cap < 1.0 else k
    counts: Counter[str] = Counter()
    chosen: list[Scored] = []
    held_back: list[Scored] = []
    taken: set[str] = set()
    for item in sorted(items, key=_SCORE, reverse=True):  # stable: ties keep their order
        if item.item_id in taken or item.item_id in seen or item.item_id in blocked:
            continue
        genres = genres_of.get(item.item_id, frozenset())
        if not filters.admits(item.item_id, genres):
            continue
        taken.add(item.item_id)
        if any(counts[g] >= cap for g in genres):
            held_back.append(item)
            continue
        counts.update(genres)
        chosen.append(item)
        if len(chosen) == k:
            return chosen
    return chosen + held_back[: k - len(chosen)]
