"""The logged traffic off-policy evaluation reads: one row per served list, from the event log.

Each served list carries what the gateway logged with it: the ranked pool it drew from (best first), the
exploration policy that drew it, the item shown at each position with its propensity, and (joined from the
events table by request id and item) which positions were clicked. Lists that cannot be evaluated are left out
and counted: degraded answers (served from fallbacks, not by the model), lists without a logged pool (a gateway
from before exploration), and lists whose shown items are not all in their pool.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from recsys.model.exploration import ExplorationPolicy
from recsys.training.data.log_tables import read_events, read_impressions

CLICK_TYPES = ("click",)
# Clicks may come a while after their list: read them this much past the window's end.
CLICK_SLACK_MS = 30 * 60 * 1000


@dataclass
class LoggedLists:
    """Served lists, aligned: R lists of at most K positions drawn from pools of at most P items."""

    request_id: list[str]
    user_id: list[str]
    variant: list[str]
    timestamp_ms: np.ndarray  # int64 [R]
    exploration: list[str]  # the policy spec of each list
    pool: list[list[str]]  # the ranked pool of each list, best first
    shown: np.ndarray  # int64 [R, K]: pool index shown at each position, -1 = no item there
    clicks: np.ndarray  # float64 [R, K]: 1 where the item shown there was clicked
    propensity: np.ndarray  # float64 [R, K]: as logged (0 where no item)
    skipped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.request_id)

    @property
    def k(self) -> int:
        return int(self.shown.shape[1])

    @property
    def p(self) -> int:
        return max((len(pool) for pool in self.pool), default=0)

    def marginals(self) -> np.ndarray:
        """float32 [R, P, K]: P(pool item at position) under each list's logging policy, from its spec and its
        pool (recsys.model.exploration); 0-padded."""
        out = np.zeros((len(self), self.p, self.k), dtype=np.float32)
        for r, (spec, pool) in enumerate(zip(self.exploration, self.pool, strict=True)):
            k = int((self.shown[r] >= 0).sum())
            m = ExplorationPolicy.parse(spec).marginals(len(pool), k)
            out[r, : m.shape[0], : m.shape[1]] = m
        return out

    def select(self, keep: np.ndarray) -> LoggedLists:
        """The lists where `keep` (bool [R]) holds."""
        idx = np.flatnonzero(keep)
        return LoggedLists(
            [self.request_id[i] for i in idx], [self.user_id[i] for i in idx], [self.variant[i] for i in idx],
            self.timestamp_ms[idx], [self.exploration[i] for i in idx], [self.pool[i] for i in idx],
            self.shown[idx], self.clicks[idx], self.propensity[idx], dict(self.skipped),
        )


def read_logged(uri: str, since_ms: int | None = None, until_ms: int | None = None,
                variants: list[str] | None = None, max_k: int = 100) -> LoggedLists:
    """The served lists of [since_ms, until_ms) in the event log at `uri` (of `variants` only when given)."""
    impressions = read_impressions(uri, since_ms, until_ms).rows
    click_until = None if until_ms is None else until_ms + CLICK_SLACK_MS
    events = read_events(uri, CLICK_TYPES, since_ms, click_until).rows
    clicked = set(zip(events["request_id"], events["item_id"], strict=True))
    return lists_from_rows(impressions, clicked, variants, max_k)


def lists_from_rows(impressions: pd.DataFrame, clicked: set[tuple[str, str]], variants: list[str] | None = None,
                    max_k: int = 100) -> LoggedLists:
    """Served lists from impression rows (one per shown item, as `read_impressions` gives them) and the set of
    clicked (request_id, item_id)."""
    skipped = {"degraded": 0, "no_pool": 0, "item_not_in_pool": 0, "other_variant": 0}
    if "pool_item_ids" not in impressions.columns:
        impressions = impressions.assign(pool_item_ids=None, exploration="", propensity=1.0)
    rows: list[tuple] = []
    k_max = 0
    for request_id, group in impressions.groupby("request_id", sort=True):
        first = group.iloc[0]
        if variants and first["variant"] not in variants:
            skipped["other_variant"] += 1
            continue
        if bool(first["degraded"]):
            skipped["degraded"] += 1
            continue
        pool = list(first["pool_item_ids"]) if first["pool_item_ids"] is not None else []
        if not pool:
            skipped["no_pool"] += 1
            continue
        where = {item: i for i, item in enumerate(pool)}
        group = group[group["position"] < max_k]
        if not group["item_id"].isin(where).all():
            skipped["item_not_in_pool"] += 1
            continue
        positions = group["position"].to_numpy(dtype=np.int64)
        shown = [(int(p), where[i], (request_id, i) in clicked, float(q or 1.0))
                 for p, i, q in zip(positions, group["item_id"], group["propensity"].fillna(1.0), strict=True)]
        k_max = max(k_max, int(positions.max()) + 1)
        rows.append((request_id, first["user_id"], first["variant"], int(first["timestamp_ms"]),
                     first["exploration"] or "none", pool, shown))
    r = len(rows)
    shown_idx = np.full((r, k_max), -1, dtype=np.int64)
    clicks = np.zeros((r, k_max))
    propensity = np.zeros((r, k_max))
    for j, row in enumerate(rows):
        for position, pool_index, click, q in row[6]:
            shown_idx[j, position], clicks[j, position], propensity[j, position] = pool_index, float(click), q
    return LoggedLists([row[0] for row in rows], [row[1] for row in rows], [row[2] for row in rows],
                       np.array([row[3] for row in rows], dtype=np.int64), [row[4] for row in rows],
                       [row[5] for row in rows], shown_idx, clicks, propensity, skipped)
