"""Windowed online metrics.

Ingestion side (`OnlineAggregator`): served lists (impressions) are kept by request_id for the join window;
clicks and purchases join them by request_id, are attributed to the impression's time bucket, variant and
position, and land as increments in a `BatchDelta` that the store persists with the batch's offsets. A click
or purchase that arrives before its impression waits (pending) until the impression comes or the join
window passes. A click counts once per served (request, item): CTR = clicked impressions / impressions.

Query side (pure functions): CTR overall / per variant / per position, revenue per impression, each
variant's lift over the control with a 95% confidence interval, catalogue coverage and served-score
quantiles, from the per-bucket counts the store returns.
"""

from __future__ import annotations

import math
import struct
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from recsys.v1 import events_pb2

CLICK = events_pb2.EVENT_TYPE_CLICK
PURCHASE = events_pb2.EVENT_TYPE_PURCHASE
IMPRESSION = events_pb2.EVENT_TYPE_IMPRESSION

# Served scores are histogrammed on asinh(score * SCALE) * RESOLUTION: ~2% relative resolution from 1e-3
# up, any sign or magnitude, and histograms of buckets simply add up.
_SCORE_SCALE = 1000.0
_SCORE_RESOLUTION = 50.0
QUANTILES = (0.10, 0.25, 0.50, 0.75, 0.90)
Z95 = 1.959963984540054
_LOG_ENTRY = struct.Struct("<qI")  # request seq, payload length

Cell = tuple[int, str]  # (bucket, variant)


def bucket_of(ts_ms: int, bucket_s: int) -> int:
    """Start (epoch seconds) of the time bucket holding `ts_ms`."""
    return (ts_ms // 1000) // bucket_s * bucket_s


def score_bins(scores: list[float]) -> Counter:
    """Histogram (bin -> count) of served scores."""
    values = np.asarray(scores, dtype=np.float64)
    bins, counts = np.unique(np.rint(np.arcsinh(values * _SCORE_SCALE) * _SCORE_RESOLUTION), return_counts=True)
    return Counter(dict(zip(bins.astype(np.int64).tolist(), counts.tolist(), strict=True)))


def bin_value(score_bin: int) -> float:
    """Representative score of a histogram bin."""
    return math.sinh(score_bin / _SCORE_RESOLUTION) / _SCORE_SCALE


def seen_key(ts_ms: int, event_id: str) -> str:
    """De-duplication key of an event: its hour (so old keys prune by range) and its id."""
    return f"{ts_ms // 3_600_000:09d}{event_id}"


def encode_request_log(entries: list[tuple[int, bytes]]) -> bytes:
    """(request seq, serialized Impression) entries of one batch as one blob."""
    return b"".join(_LOG_ENTRY.pack(seq, len(payload)) + payload for seq, payload in entries)


def decode_request_log(blob: bytes) -> Iterator[tuple[int, bytes]]:
    pos, size = 0, len(blob)
    while pos < size:
        seq, length = _LOG_ENTRY.unpack_from(blob, pos)
        pos += _LOG_ENTRY.size
        yield seq, blob[pos : pos + length]
        pos += length


@dataclass(slots=True)
class Served:
    """One served request within the join window."""

    seq: int  # arrival order; clicked pairs and the stored request log refer to it
    request_id: str
    ts_ms: int
    bucket: int
    variant: str
    items: dict[str, int]  # item_id -> position
    clicked: set[str] = field(default_factory=set)


@dataclass
class BatchDelta:
    """What one batch changed; the store applies it in one transaction with the batch's offsets."""

    # (bucket, variant, position) -> [impressions, clicks, purchases, revenue]
    cells: dict[tuple[int, str, int], list] = field(default_factory=dict)
    served_positions: dict[Cell, list[int]] = field(default_factory=dict)  # impressions, folded by finalize()
    served_items: dict[Cell, list[str]] = field(default_factory=dict)  # for coverage
    served_scores: dict[Cell, list[float]] = field(default_factory=dict)  # folded into score_bins
    score_bins: Counter = field(default_factory=Counter)  # (bucket, variant, bin) -> count
    requests: list[tuple[int, bytes]] = field(default_factory=list)  # (seq, serialized Impression)
    clicked: list[tuple[int, str]] = field(default_factory=list)  # (request seq, item_id)
    pending_add: list[tuple[str, str, int, bytes]] = field(default_factory=list)  # key, request_id, ts, event
    pending_del: list[str] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)
    counters: Counter = field(default_factory=Counter)
    coverage_rows: list[tuple[int, str, bytes]] = field(default_factory=list)  # (bucket, variant, bitmap)
    new_items: list[tuple[int, str]] = field(default_factory=list)  # (index, item_id)

    def cell(self, bucket: int, variant: str, position: int) -> list:
        key = (bucket, variant, position)
        row = self.cells.get(key)
        if row is None:
            row = self.cells[key] = [0, 0, 0, 0.0]
        return row

    def finalize(self) -> None:
        """Fold the per-impression lists into cell counts and score histograms (vectorized, once)."""
        for (bucket, variant), positions in self.served_positions.items():
            for position, n in Counter(positions).items():
                self.cell(bucket, variant, position)[0] += n
        self.served_positions.clear()
        for (bucket, variant), scores in self.served_scores.items():
            for b, n in score_bins(scores).items():
                self.score_bins[(bucket, variant, b)] += n
        self.served_scores.clear()


class OnlineAggregator:
    """Joins clicks and purchases to impressions by request_id within the join window.

    Not thread-safe: the consumer thread owns it. Event de-duplication by event_id happens before (the
    consumer asks the store which keys it has already seen); this class sees each event once.
    """

    def __init__(self, bucket_s: int, join_window_s: int) -> None:
        self.bucket_s = bucket_s
        self.join_window_ms = join_window_s * 1000
        self.requests: dict[str, Served] = {}  # arrival order, pruned from the front
        self.pending: dict[str, list[tuple[str, events_pb2.Event]]] = {}  # request_id -> [(key, event)]
        self.watermark_ms = 0  # largest event time seen
        self.next_seq = 1

    # -- restore -----------------------------------------------------------------------------------

    def restore(
        self,
        request_log: list[bytes],
        clicked_rows: list[tuple[int, str]],
        pending_rows: list[tuple[str, str, int, bytes]],
        min_ts_ms: int = 0,
    ) -> None:
        """Rebuild the join state from the stored request log blobs (in order), clicked pairs and pending
        events."""
        by_seq: dict[int, Served] = {}
        for blob in request_log:
            for seq, payload in decode_request_log(blob):
                self.next_seq = max(self.next_seq, seq + 1)
                imp = events_pb2.Impression.FromString(payload)
                served = self.requests.get(imp.request_id)
                if served is None:
                    if imp.timestamp_ms < min_ts_ms:
                        continue
                    served = Served(
                        seq, imp.request_id, imp.timestamp_ms, self._bucket(imp.timestamp_ms), imp.variant, {}
                    )
                    self.requests[imp.request_id] = by_seq[seq] = served
                for it in imp.items:
                    served.items.setdefault(it.item_id, it.position)
                self.watermark_ms = max(self.watermark_ms, imp.timestamp_ms)
        for seq, item in clicked_rows:
            served = by_seq.get(seq)
            if served is not None:
                served.clicked.add(item)
        for key, request_id, _ts, payload in pending_rows:
            event = events_pb2.Event.FromString(payload)
            self.pending.setdefault(request_id, []).append((key, event))

    def _bucket(self, ts_ms: int) -> int:
        return (ts_ms // 1000) // self.bucket_s * self.bucket_s

    # -- ingestion ---------------------------------------------------------------------------------

    def add_impression(self, imp: events_pb2.Impression, payload: bytes, delta: BatchDelta, now_ms: int) -> None:
        """A served list (`payload` is its serialized form): one impression per item, at its position."""
        ts = imp.timestamp_ms
        if not ts:
            ts = imp.timestamp_ms = now_ms
            payload = imp.SerializeToString()
        ids: list[str] = []
        positions: list[int] = []
        scores: list[float] = []
        add_id, add_pos, add_score = ids.append, positions.append, scores.append
        for it in imp.items:
            add_id(it.item_id)
            add_pos(it.position)
            add_score(it.score)
        request_id = imp.request_id
        served = self.requests.get(request_id)
        if served is None:
            items = dict(zip(ids, positions, strict=True))
            if len(items) != len(ids):  # an item listed twice counts once, at its first position
                ids, positions, scores = _first_occurrences(ids, positions, scores)
                items = dict(zip(ids, positions, strict=True))
            served = Served(self.next_seq, request_id, ts, self._bucket(ts), imp.variant, items)
            self.next_seq += 1
            self.requests[request_id] = served
        else:
            ids, positions, scores = _first_occurrences(ids, positions, scores, exclude=served.items)
            served.items.update(zip(ids, positions, strict=True))
        if ts > self.watermark_ms:
            self.watermark_ms = ts
        if ids:
            delta.requests.append((served.seq, payload))
            cell = (served.bucket, served.variant)
            _extend(delta.served_positions, cell, positions)
            _extend(delta.served_items, cell, ids)
            _extend(delta.served_scores, cell, scores)
        if self.pending:
            waiting = self.pending.pop(request_id, None)
            if waiting:
                for key, ev in waiting:
                    delta.pending_del.append(key)
                    self._attribute(served, ev, delta)

    def add_event(self, ev: events_pb2.Event, key: str, delta: BatchDelta, now_ms: int) -> None:
        """A user event: impression events add to their request; clicks and purchases join it."""
        kind = ev.type
        if kind == IMPRESSION:
            imp = events_pb2.Impression(
                event_id=ev.event_id,
                request_id=ev.request_id,
                user_id=ev.user_id,
                variant=ev.variant,
                model=ev.model,
                timestamp_ms=ev.timestamp_ms or now_ms,
                items=[events_pb2.ImpressionItem(item_id=ev.item_id, position=ev.position)],
            )
            self.add_impression(imp, imp.SerializeToString(), delta, now_ms)
            return
        if kind != CLICK and kind != PURCHASE:
            delta.counters[f"events_type_{kind}"] += 1
            return
        if ev.timestamp_ms > self.watermark_ms:
            self.watermark_ms = ev.timestamp_ms
        if not ev.request_id:
            delta.counters[_unattributed(ev, "no_request")] += 1
            return
        served = self.requests.get(ev.request_id)
        if served is None:
            self.pending.setdefault(ev.request_id, []).append((key, ev))
            delta.pending_add.append((key, ev.request_id, ev.timestamp_ms, ev.SerializeToString()))
            return
        self._attribute(served, ev, delta)

    def _attribute(self, served: Served, ev: events_pb2.Event, delta: BatchDelta) -> None:
        if ev.timestamp_ms and ev.timestamp_ms - served.ts_ms > self.join_window_ms:
            delta.counters[_unattributed(ev, "late")] += 1
            return
        position = served.items.get(ev.item_id)
        if ev.type == CLICK:
            if position is None:
                delta.counters[_unattributed(ev, "not_served")] += 1
            elif ev.item_id in served.clicked:
                delta.counters["repeat_clicks"] += 1
            else:
                served.clicked.add(ev.item_id)
                delta.clicked.append((served.seq, ev.item_id))
                delta.cell(served.bucket, served.variant, position)[1] += 1
        else:  # purchase: revenue belongs to the request; position -1 when the item was not in the list
            row = delta.cell(served.bucket, served.variant, -1 if position is None else position)
            row[2] += 1
            row[3] += ev.value

    def expire(self, delta: BatchDelta) -> int:
        """Forget requests older than the join window (by event time); give up on pending events whose
        impression never came. Returns the seq below which stored requests may be pruned (0 = none)."""
        cutoff = self.watermark_ms - self.join_window_ms
        prune_below = 0
        requests = self.requests
        while requests:
            first = next(iter(requests.values()))
            if first.ts_ms >= cutoff:
                break
            del requests[first.request_id]
            prune_below = first.seq + 1
        if self.pending:
            stale = [r for r, waiting in self.pending.items() if max(e.timestamp_ms for _, e in waiting) < cutoff]
            for request_id in stale:
                for key, ev in self.pending.pop(request_id):
                    delta.pending_del.append(key)
                    delta.counters[_unattributed(ev, "no_impression")] += 1
        return prune_below


def _extend(target: dict, key, values: list) -> None:
    existing = target.get(key)
    if existing is None:
        target[key] = values
    else:
        existing.extend(values)


def _first_occurrences(ids, positions, scores, exclude: dict | None = None):
    seen = set(exclude or ())
    out_ids, out_pos, out_scores = [], [], []
    for item, pos, score in zip(ids, positions, scores, strict=True):
        if item not in seen:
            seen.add(item)
            out_ids.append(item)
            out_pos.append(pos)
            out_scores.append(score)
    return out_ids, out_pos, out_scores


def _unattributed(ev: events_pb2.Event, why: str) -> str:
    kind = "clicks" if ev.type == CLICK else "purchases"
    return f"unattributed_{kind}_{why}"


# -- query side ------------------------------------------------------------------------------------


@dataclass
class CellTotals:
    impressions: int = 0
    clicks: int = 0
    purchases: int = 0
    revenue: float = 0.0

    def add(self, impressions: int, clicks: int, purchases: int, revenue: float) -> None:
        self.impressions += impressions
        self.clicks += clicks
        self.purchases += purchases
        self.revenue += revenue

    @property
    def ctr(self) -> float:
        return self.clicks / self.impressions if self.impressions else 0.0

    @property
    def revenue_per_impression(self) -> float:
        return self.revenue / self.impressions if self.impressions else 0.0


@dataclass
class Lift:
    """Relative lift of a variant over the control; NaN when undefined (no control data or no clicks)."""

    ctr_lift: float
    ctr_low: float
    ctr_high: float
    revenue_lift: float


@dataclass
class VariantSummary:
    variant: str
    totals: CellTotals
    lift: Lift


@dataclass
class MetricsSummary:
    totals: CellTotals
    variants: list[VariantSummary]
    positions: list[tuple[int, CellTotals]]
    catalogue_coverage: float
    score_quantiles: list[float]


def ctr_lift_ci(clicks_v: int, n_v: int, clicks_c: int, n_c: int, z: float = Z95) -> tuple[float, float, float]:
    """Relative CTR lift p_v / p_c - 1 with a confidence interval by the delta method on log(p_v / p_c):
    Var[log p] ~= (1 - p) / (n p). NaNs when a rate is zero or a group empty."""
    if min(clicks_v, n_v, clicks_c, n_c) <= 0:
        return math.nan, math.nan, math.nan
    p_v, p_c = clicks_v / n_v, clicks_c / n_c
    log_ratio = math.log(p_v / p_c)
    se = math.sqrt((1 - p_v) / (n_v * p_v) + (1 - p_c) / (n_c * p_c))
    return math.exp(log_ratio) - 1, math.exp(log_ratio - z * se) - 1, math.exp(log_ratio + z * se) - 1


def lift(variant: CellTotals, control: CellTotals | None) -> Lift:
    """CTR lift with its 95% CI and revenue-per-impression lift of `variant` over `control`."""
    if control is None or control.impressions == 0:
        return Lift(math.nan, math.nan, math.nan, math.nan)
    ctr, low, high = ctr_lift_ci(variant.clicks, variant.impressions, control.clicks, control.impressions)
    rpi_c = control.revenue_per_impression
    revenue = variant.revenue_per_impression / rpi_c - 1 if rpi_c > 0 else math.nan
    return Lift(ctr, low, high, revenue)


def histogram_quantiles(hist: dict[int, int], qs: tuple[float, ...] = QUANTILES) -> list[float]:
    """Quantiles of a score histogram (bin -> count); empty list when there is no score."""
    total = sum(hist.values())
    if total <= 0:
        return []
    out: list[float] = []
    bins = sorted(hist)
    targets = iter(qs)
    q = next(targets)
    cum = 0
    for b in bins:
        cum += hist[b]
        while q is not None and cum >= q * total:
            out.append(bin_value(b))
            q = next(targets, None)
        if q is None:
            break
    return out


def summarize(
    cells: list[tuple[str, int, int, int, int, float]],
    served_items: int,
    catalogue_size: int,
    score_hist: dict[int, int],
    control_variant: str,
    variant: str = "",
) -> MetricsSummary:
    """Online metrics from per-(variant, position) sums over a window.

    `cells` rows are (variant, position, impressions, clicks, purchases, revenue) for every variant (the
    control is needed for lifts); `variant` restricts totals and positions to one variant."""
    by_variant: dict[str, CellTotals] = {}
    by_position: dict[int, CellTotals] = {}
    total = CellTotals()
    for var, position, impressions, clicks, purchases, revenue in cells:
        by_variant.setdefault(var, CellTotals()).add(impressions, clicks, purchases, revenue)
        if variant and var != variant:
            continue
        total.add(impressions, clicks, purchases, revenue)
        if position >= 0:
            by_position.setdefault(position, CellTotals()).add(impressions, clicks, 0, 0.0)
    control = by_variant.get(control_variant)
    names = [variant] if variant else sorted(by_variant)
    variants = []
    for name in names:
        totals = by_variant.get(name, CellTotals())
        same = name == control_variant and control is not None
        variants.append(VariantSummary(name, totals, Lift(0.0, 0.0, 0.0, 0.0) if same else lift(totals, control)))
    coverage = served_items / catalogue_size if catalogue_size > 0 else 0.0
    return MetricsSummary(
        totals=total,
        variants=variants,
        positions=sorted(by_position.items()),
        catalogue_coverage=min(coverage, 1.0),
        score_quantiles=histogram_quantiles(score_hist),
    )
