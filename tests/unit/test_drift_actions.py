"""Drift acts: the signals that start a retrain, the CTR drop against a variant's own baseline, the debounce,
the local trigger (a request file) and the lifecycle loop's wait for post-shift data."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from recsys.model import requests
from recsys.monitoring.actions import DriftActions, FileRetrainRequest, ctr_drops, one_sided_drop_p
from recsys.monitoring.settings import MonitoringSettings

NOW = 1_000_000.0  # seconds


class FakeStore:
    """The store queries DriftActions makes: variant totals per bucket span, alerts, reports, meta."""

    def __init__(self) -> None:
        self.cells: dict[str, dict[int, tuple[int, int]]] = {}  # variant -> bucket -> (impressions, clicks)
        self.alert_rows: list[tuple[int, str]] = []
        self.dataset_drift = False
        self.meta: dict[str, bytes] = {}

    def variant_totals(self, first: int, last: int) -> dict[str, tuple[int, int]]:
        out = {}
        for variant, buckets in self.cells.items():
            inside = [v for b, v in buckets.items() if first <= b <= last]
            if inside:
                out[variant] = (sum(n for n, _ in inside), sum(c for _, c in inside))
        return out

    def last_alert_rowid(self) -> int:
        return self.alert_rows[-1][0] if self.alert_rows else 0

    def alerts_after(self, rowid: int) -> list[tuple[int, str]]:
        return [row for row in self.alert_rows if row[0] > rowid]

    def reports(self, limit: int):
        return [type("Report", (), {"dataset_drift": self.dataset_drift})()]

    def get_meta(self, key: str) -> bytes | None:
        return self.meta.get(key)

    def set_meta(self, key: str, value: bytes) -> None:
        self.meta[key] = value


class FakeAlerts:
    def __init__(self) -> None:
        self.fired: list[tuple[str, str]] = []

    def fire(self, kind: str, message: str, report_id: str = "") -> None:
        self.fired.append((kind, message))


class FakeTrigger:
    def __init__(self, answer: str | None = "job-1") -> None:
        self.answer, self.reasons = answer, []

    def trigger(self, reason: str) -> str | None:
        self.reasons.append(reason)
        return self.answer


SETTINGS = MonitoringSettings(
    state_dir=Path("."), reference_path=Path("."), bucket_s=10, ctr_maturity_s=10, ctr_drop_recent_s=60,
    ctr_drop_baseline_s=120, ctr_drop_min_impressions=1000, ctr_drop_min_relative=0.15, ctr_drop_p=0.001,
    retrain_on=("data_drift", "ctr_drop"), retrain_min_interval_s=600,
)


def _fill(store: FakeStore, variant: str, base_ctr: float, recent_ctr: float, per_bucket: int = 500) -> None:
    """Buckets of 10 s: the baseline span then the recent span, ending at the last mature bucket."""
    last = int((NOW - SETTINGS.ctr_maturity_s) // 10 * 10) - 10
    buckets = {}
    for b in range(last - 170, last + 1, 10):
        ctr = recent_ctr if b > last - 60 else base_ctr
        buckets[b] = (per_bucket, round(per_bucket * ctr))
    store.cells[variant] = buckets


def test_the_one_sided_test_tells_a_drop_from_noise():
    assert one_sided_drop_p(500, 10_000, 300, 5_000) > 0.9  # 5% -> 6%: up, not a drop
    assert one_sided_drop_p(600, 10_000, 200, 5_000) < 1e-6  # 6% -> 4%
    assert one_sided_drop_p(600, 10_000, 295, 5_000) > 0.1  # 6% -> 5.9%
    assert one_sided_drop_p(0, 0, 10, 100) == 1.0


def test_a_variant_is_compared_with_its_own_baseline():
    store = FakeStore()
    _fill(store, "control", 0.10, 0.05)  # halved
    _fill(store, "weak", 0.04, 0.04)  # lower than control all along: not a drop
    drops = ctr_drops(store, SETTINGS, NOW)
    assert [d.variant for d in drops] == ["control"]
    assert drops[0].relative == pytest.approx(0.5, abs=0.02)
    _fill(store, "control", 0.10, 0.095)  # a 5% dip is below the least relative fall
    assert ctr_drops(store, SETTINGS, NOW) == []


def test_a_baseline_that_does_not_span_its_whole_length_is_not_used():
    store = FakeStore()
    _fill(store, "control", 0.10, 0.05)
    first = min(store.cells["control"])
    del store.cells["control"][first]  # the service started after the baseline span began
    assert ctr_drops(store, SETTINGS, NOW) == []


def test_too_few_impressions_are_not_tested():
    store = FakeStore()
    _fill(store, "control", 0.10, 0.02, per_bucket=50)
    assert ctr_drops(store, SETTINGS, NOW) == []


def test_a_drop_starts_one_retrain_and_the_interval_debounces_the_next():
    store, alerts, trigger = FakeStore(), FakeAlerts(), FakeTrigger()
    clock = [NOW]
    actions = DriftActions(store, alerts, trigger, SETTINGS, clock=lambda: clock[0])
    _fill(store, "control", 0.10, 0.05)
    assert actions.check() == "job-1"
    assert trigger.reasons == ["ctr_drop:control"]
    assert [k for k, _ in alerts.fired] == ["ctr_drop", "retrain_started"]
    store.alert_rows.append((1, "data_drift"))  # new signal within the interval: no second retrain
    store.dataset_drift = True
    clock[0] += 60
    assert actions.check() is None and len(trigger.reasons) == 1
    clock[0] += 600  # past the interval (kept in the store's meta: a restarted service remembers it)
    store.alert_rows.append((2, "data_drift"))
    again = DriftActions(store, alerts, trigger, replace(SETTINGS), clock=lambda: clock[0])
    again._alert_rowid = 1
    assert again.check() == "job-1" and trigger.reasons[-1] == "data_drift"


def test_column_drift_alone_and_unlisted_signals_start_nothing():
    store, trigger = FakeStore(), FakeTrigger()
    actions = DriftActions(store, FakeAlerts(), trigger, SETTINGS, clock=lambda: NOW)
    store.alert_rows += [(1, "data_drift"), (2, "prediction_drift"), (3, "ctr_drift")]
    store.dataset_drift = False  # only some columns drifted
    assert actions.check() is None and trigger.reasons == []


def test_a_pending_retrain_absorbs_the_signal():
    store, trigger = FakeStore(), FakeTrigger(answer=None)
    actions = DriftActions(store, FakeAlerts(), trigger, SETTINGS, clock=lambda: NOW)
    _fill(store, "control", 0.10, 0.05)
    assert actions.check() is None and trigger.reasons == ["ctr_drop:control"]
    assert store.get_meta("actions.last_retrain_s") is None  # nothing started: no interval either


def test_the_file_trigger_writes_one_request_until_it_is_taken(tmp_path):
    trigger = FileRetrainRequest(tmp_path)
    assert trigger.trigger("ctr_drop:control") == str(tmp_path / requests.REQUEST)
    assert trigger.trigger("data_drift") is None  # pending
    assert requests.age_s(tmp_path) == pytest.approx(0.0, abs=5.0)
    assert requests.age_s(tmp_path, now=requests.time.time() + 100) >= 99
    assert requests.take_request(tmp_path) == "ctr_drop:control"
    assert requests.take_request(tmp_path) is None and requests.age_s(tmp_path) is None
