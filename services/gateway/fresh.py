"""The FRESH candidate source: a share of the k slots for new items, so that they gather the impressions they need.

New items are those upserted through the live catalogue that the model's catalogue does not hold, available and
published within RECSYS_GATEWAY_FRESH_WINDOW_S. For a request, the newest RECSYS_GATEWAY_FRESH_POOL of them that
pass its filters (and the user has not seen) join the candidates and are scored by the variant's ranker like any
other; the last round(share x k) places of the answer (at least one when share > 0) go to the best-scored of them,
unless they earned places of their own. share: the variant's `fresh_share`, else RECSYS_GATEWAY_FRESH_SHARE.
"""

from __future__ import annotations

import time
from operator import attrgetter

from recsys.gateway.experiments import Variant
from recsys.gateway.items import LiveCatalog
from recsys.gateway.rerank import FilterSpec, Scored
from recsys.gateway.settings import GatewaySettings
from recsys.v1 import candidates_pb2

FRESH = candidates_pb2.CANDIDATE_SOURCE_FRESH
_score = attrgetter("score")


def slots(variant: Variant, k: int, settings: GatewaySettings, live: LiveCatalog) -> int:
    """Slots of k this variant reserves for new items (0 when there are none)."""
    share = variant.fresh_share if variant.fresh_share is not None else settings.fresh_share
    if share <= 0 or not live.fresh:
        return 0
    return max(1, round(share * k))


def candidates(live: LiveCatalog, settings: GatewaySettings, filters: FilterSpec, seen: frozenset[str]) -> list[Scored]:
    """The newest new items that pass the filters and the user has not seen (score 0 until the ranker's)."""
    genres_of, removed = live.genres, live.removed

    def admits(item_id: str) -> bool:
        return item_id not in seen and item_id not in removed and filters.admits(
            item_id, genres_of.get(item_id, frozenset()))

    ids = live.fresh_items(int(time.time() * 1000), settings.fresh_window_s, admits, settings.fresh_pool)
    return [Scored(item_id, 0.0, FRESH) for item_id in ids]


def merge(candidates: list[Scored], new: list[Scored]) -> list[Scored]:
    """The candidates plus the new items; a new item retrieval found too (the index has it already) counts as
    FRESH, so it keeps its claim on the reserved slots."""
    if not new:
        return candidates
    ids = {c.item_id for c in new}
    out = [Scored(c.item_id, c.score, FRESH) if c.item_id in ids else c for c in candidates]
    known = {c.item_id for c in candidates}
    return out + [c for c in new if c.item_id not in known]


def reserve(top: list[Scored], ranked: list[Scored], n: int, k: int) -> list[Scored]:
    """The top k with its last places given to the best-scored fresh items of `ranked`, up to n fresh in all."""
    have = sum(1 for item in top if item.source == FRESH)
    if have >= n:
        return top
    taken = {item.item_id for item in top}
    add = sorted((c for c in ranked if c.source == FRESH and c.item_id not in taken), key=_score, reverse=True)
    add = add[: n - have]
    if not add:
        return top
    keep = [item for item in top if item.source == FRESH]
    others = [item for item in top if item.source != FRESH][: max(0, k - len(keep) - len(add))]
    return others + keep + add
