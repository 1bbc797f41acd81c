"""Online aggregates without a broker: the click join, dedupe inputs, lift CI, quantiles, the store round trip."""

from __future__ import annotations

import math
import random
import sqlite3

import pytest

from recsys.monitoring.aggregates import (
    BatchDelta,
    CellTotals,
    OnlineAggregator,
    bin_value,
    ctr_lift_ci,
    histogram_quantiles,
    lift,
    score_bins,
    seen_key,
    summarize,
)
from recsys.monitoring.coverage import CoverageTracker, union_count
from recsys.monitoring.store import DriftBatch, MonitoringStore, Prune
from recsys.v1 import events_pb2

T0 = 1_750_000_000_000
CLICK, PURCHASE = events_pb2.EVENT_TYPE_CLICK, events_pb2.EVENT_TYPE_PURCHASE


def impression(request_id: str, variant: str, items: list[str], ts: int = T0, scores=None) -> events_pb2.Impression:
    scores = scores or [0.5] * len(items)
    return events_pb2.Impression(
        event_id=f"imp-{request_id}",
        request_id=request_id,
        user_id="u1",
        variant=variant,
        timestamp_ms=ts,
        items=[
            events_pb2.ImpressionItem(item_id=i, position=p, score=s)
            for p, (i, s) in enumerate(zip(items, scores, strict=True))
        ],
    )


def event(event_id: str, kind: int, request_id: str, item: str, ts: int = T0 + 1000, value: float = 0.0):
    return events_pb2.Event(
        event_id=event_id, type=kind, user_id="u1", item_id=item, request_id=request_id, timestamp_ms=ts, value=value
    )


def add(agg: OnlineAggregator, imp: events_pb2.Impression, delta: BatchDelta) -> None:
    agg.add_impression(imp, imp.SerializeToString(), delta, T0)


def totals(delta: BatchDelta) -> dict[tuple[str, int], list]:
    delta.finalize()
    out: dict[tuple[str, int], list] = {}
    for (_bucket, variant, position), row in delta.cells.items():
        acc = out.setdefault((variant, position), [0, 0, 0, 0.0])
        for i in range(4):
            acc[i] += row[i]
    return out


def test_clicks_join_impressions_by_request_and_count_once_per_item():
    agg, delta = OnlineAggregator(bucket_s=60, join_window_s=600), BatchDelta()
    add(agg, impression("r1", "control", ["a", "b", "c"]), delta)
    agg.add_event(event("c1", CLICK, "r1", "b"), "k1", delta, T0)
    agg.add_event(event("c2", CLICK, "r1", "b"), "k2", delta, T0)  # a second click on the same item
    agg.add_event(event("c3", CLICK, "r1", "zzz"), "k3", delta, T0)  # an item that was not served
    agg.add_event(event("p1", PURCHASE, "r1", "c", value=12.5), "k4", delta, T0)
    cells = totals(delta)
    assert cells[("control", 0)] == [1, 0, 0, 0.0]
    assert cells[("control", 1)] == [1, 1, 0, 0.0]
    assert cells[("control", 2)] == [1, 0, 1, 12.5]
    assert delta.counters["repeat_clicks"] == 1
    assert delta.counters["unattributed_clicks_not_served"] == 1
    assert delta.clicked == [(agg.requests["r1"].seq, "b")]


def test_a_click_before_its_impression_waits_and_joins():
    agg, delta = OnlineAggregator(60, 600), BatchDelta()
    agg.add_event(event("c1", CLICK, "r9", "a"), "k1", delta, T0)
    assert delta.pending_add and not delta.cells
    add(agg, impression("r9", "treatment", ["a", "b"]), delta)
    assert totals(delta)[("treatment", 0)] == [1, 1, 0, 0.0]
    assert delta.pending_del == ["k1"]


def test_late_clicks_and_orphans_are_not_attributed():
    agg, delta = OnlineAggregator(60, join_window_s=10), BatchDelta()
    add(agg, impression("r1", "control", ["a"]), delta)
    agg.add_event(event("c1", CLICK, "r1", "a", ts=T0 + 11_000), "k1", delta, T0)
    agg.add_event(event("c2", CLICK, "nope", "a", ts=T0 + 1000), "k2", delta, T0)
    agg.add_event(event("c3", CLICK, "", "a"), "k3", delta, T0)
    assert delta.counters["unattributed_clicks_late"] == 1
    assert delta.counters["unattributed_clicks_no_request"] == 1
    agg.add_event(event("c4", CLICK, "other", "a", ts=T0 + 40_000), "k4", delta, T0)  # moves the watermark
    agg.expire(delta)
    assert delta.counters["unattributed_clicks_no_impression"] == 1
    assert "r1" not in agg.requests


def test_ctr_lift_ci_matches_the_delta_method_and_covers_the_truth():
    lift_, low, high = ctr_lift_ci(120, 1000, 100, 1000)
    assert lift_ == pytest.approx(0.2)
    se = math.sqrt(0.88 / 120 + 0.9 / 100)
    assert low == pytest.approx(1.2 * math.exp(-1.959964 * se) - 1, rel=1e-5)
    assert high == pytest.approx(1.2 * math.exp(1.959964 * se) - 1, rel=1e-5)
    assert all(math.isnan(x) for x in ctr_lift_ci(0, 100, 5, 100))
    # Coverage: with equal true rates, ~95% of intervals contain 0.
    rng = random.Random(7)
    covered = 0
    for _ in range(400):
        a = sum(rng.random() < 0.1 for _ in range(2000))
        b = sum(rng.random() < 0.1 for _ in range(2000))
        _, lo, hi = ctr_lift_ci(a, 2000, b, 2000)
        covered += lo <= 0 <= hi
    assert 0.91 <= covered / 400 <= 0.99


def test_revenue_lift_and_undefined_lifts():
    control = CellTotals(impressions=100, clicks=10, purchases=2, revenue=50.0)
    variant = CellTotals(impressions=100, clicks=10, purchases=3, revenue=75.0)
    assert lift(variant, control).revenue_lift == pytest.approx(0.5)
    assert math.isnan(lift(variant, None).ctr_lift)


def test_histogram_quantiles_within_bin_resolution():
    rng = random.Random(1)
    scores = [rng.random() for _ in range(20_000)]
    got = histogram_quantiles(score_bins(scores))
    want = [sorted(scores)[int(q * len(scores))] for q in (0.1, 0.25, 0.5, 0.75, 0.9)]
    assert got == pytest.approx(want, rel=0.03)
    assert bin_value(next(iter(score_bins([-3.0])))) == pytest.approx(-3.0, rel=0.02)
    assert histogram_quantiles({}) == []


def test_summarize_per_variant_position_and_filter():
    cells = [
        ("control", 0, 100, 10, 1, 20.0),
        ("control", 1, 100, 5, 0, 0.0),
        ("treatment", 0, 100, 15, 2, 30.0),
        ("treatment", 1, 100, 6, 0, 0.0),
        ("treatment", -1, 0, 0, 1, 10.0),  # a purchase of an item outside the list
    ]
    s = summarize(cells, served_items=30, catalogue_size=100, score_hist={}, control_variant="control")
    assert (s.totals.impressions, s.totals.clicks) == (400, 36)
    assert s.totals.revenue_per_impression == pytest.approx(60.0 / 400)
    assert [(p, t.impressions, t.clicks) for p, t in s.positions] == [(0, 200, 25), (1, 200, 11)]
    treatment = next(v for v in s.variants if v.variant == "treatment")
    assert treatment.lift.ctr_lift == pytest.approx(21 / 15 - 1)
    assert treatment.lift.revenue_lift == pytest.approx(40 / 20 - 1)
    assert s.catalogue_coverage == pytest.approx(0.3)
    only = summarize(cells, 10, 100, {}, "control", variant="treatment")
    assert (only.totals.impressions, only.totals.clicks) == (200, 21)
    assert [v.variant for v in only.variants] == ["treatment"]


def _commit(store: MonitoringStore, agg: OnlineAggregator, cov: CoverageTracker, delta: BatchDelta, **kw) -> None:
    delta.coverage_rows = cov.update(delta.served_items, delta.new_items)
    delta.finalize()
    store.commit_batch(delta, kw.get("offsets", {}), DriftBatch(), kw.get("prune"))


def test_store_round_trip_restores_the_join_state(tmp_path):
    store = MonitoringStore(tmp_path / "m.sqlite")
    agg, cov, delta = OnlineAggregator(60, 600), CoverageTracker([], store.coverage_bitmap), BatchDelta()
    add(agg, impression("r1", "control", ["a", "b"]), delta)
    agg.add_event(event("c1", CLICK, "r1", "a"), "k1", delta, T0)
    agg.add_event(event("c2", CLICK, "r2", "x"), "k2", delta, T0)  # pending
    delta.seen.extend([seen_key(T0, "imp-r1"), seen_key(T0, "c1"), seen_key(T0, "c2")])
    _commit(store, agg, cov, delta, offsets={("events", 0): 3, ("impressions", 1): 1})
    assert store.offsets() == {("events", 0): 3, ("impressions", 1): 1}
    assert store.already_seen([seen_key(T0, "c1"), seen_key(T0, "new")]) == {seen_key(T0, "c1")}
    assert sorted(store.window_cells(0)) == [("control", 0, 1, 1, 0, 0.0), ("control", 1, 1, 0, 0, 0.0)]
    assert store.served_items(0) == 2 and store.variants() == {"control"}

    # A new process: the same click does not count twice, the pending click joins its late impression.
    restored = OnlineAggregator(60, 600)
    restored.restore(*store.join_state())
    cov2, delta2 = CoverageTracker(store.known_items(), store.coverage_bitmap), BatchDelta()
    restored.add_event(event("c3", CLICK, "r1", "a"), "k3", delta2, T0)
    assert delta2.counters["repeat_clicks"] == 1
    add(restored, impression("r2", "control", ["x", "a"]), delta2)
    assert restored.requests["r2"].seq > restored.requests["r1"].seq
    _commit(store, restored, cov2, delta2, prune=Prune(requests_before_seq=restored.requests["r2"].seq))
    assert sorted(store.window_cells(0)) == [("control", 0, 2, 2, 0, 0.0), ("control", 1, 2, 0, 0, 0.0)]
    assert store.served_items(0) == 3 and store.served_items(0, "control") == 3
    log, clicked, pending = store.join_state()
    again = OnlineAggregator(60, 600)
    again.restore(log, clicked, pending)
    assert set(again.requests) == {"r2"} and pending == [] and again.requests["r2"].clicked == {"x"}
    store.close()


def test_coverage_bitmaps_union_across_buckets_and_variants(tmp_path):
    store = MonitoringStore(tmp_path / "m.sqlite")
    cov = CoverageTracker([], store.coverage_bitmap, cache=1)  # tiny cache: bitmaps reload from the store
    for served in ({(0, "a"): ["x", "y"], (60, "b"): ["y", "z"]}, {(0, "a"): [f"i{i}" for i in range(100)]}):
        delta = BatchDelta()
        delta.coverage_rows = cov.update(served, delta.new_items)
        store.commit_batch(delta, {}, None, None)
    assert {item for _, item in store.known_items()[:3]} == {"x", "y", "z"} and store.items_ever_served() == 103
    assert store.served_items(0) == 103 and store.served_items(60) == 2 and store.served_items(0, "b") == 2
    assert union_count([]) == 0


def test_store_rolls_back_a_failed_batch(tmp_path):
    store = MonitoringStore(tmp_path / "m.sqlite")
    delta = BatchDelta()
    delta.cell(60, "control", 0)[0] += 5
    bad = DriftBatch(windows=[(1, 0, 0, 0, 0, 0)])  # wrong arity -> the whole batch rolls back
    with pytest.raises(sqlite3.Error):
        store.commit_batch(delta, {("events", 0): 9}, bad, None)
    assert store.offsets() == {} and store.window_cells(0) == []
    store.close()
