"""The dashboard's data and routes over a real monitoring store and model registry (no Kafka, no browser)."""

from __future__ import annotations

import json
import time

import pytest
from fastapi.testclient import TestClient

from recsys.common.auth import ApiKey, Authenticator, KeyStore, new_api_key
from recsys.model.registry import Registry
from recsys.monitoring.aggregates import BatchDelta, bucket_of
from recsys.monitoring.dashboard import series
from recsys.monitoring.dashboard.app import create_app
from recsys.monitoring.dashboard.scrape import MetricsScraper, Scrape, parse, parse_targets
from recsys.monitoring.dashboard.views import DashboardData, wilson
from recsys.monitoring.settings import MonitoringSettings
from recsys.monitoring.store import _REPORT_COLUMNS, AlertRecord, DriftReportRecord, MonitoringStore, now_ms

EXPOSITION = """
# TYPE recsys_gateway_recommend_total counter
recsys_gateway_recommend_total{{variant="control",outcome="full"}} {full}
recsys_gateway_recommend_total{{variant="control",outcome="degraded"}} {degraded}
# TYPE recsys_gateway_degraded_total counter
recsys_gateway_degraded_total{{reason="rank: DEADLINE_EXCEEDED"}} {degraded}
# TYPE recsys_gateway_hop_seconds histogram
recsys_gateway_hop_seconds_bucket{{hop="total",le="0.01"}} {fast}
recsys_gateway_hop_seconds_bucket{{hop="total",le="0.1"}} {all}
recsys_gateway_hop_seconds_bucket{{hop="total",le="+Inf"}} {all}
recsys_gateway_hop_seconds_count{{hop="total"}} {all}
recsys_gateway_hop_seconds_sum{{hop="total"}} 1.0
# TYPE recsys_grpc_requests_total counter
recsys_grpc_requests_total{{service="gateway",method="Recommend"}} {all}
recsys_grpc_requests_total{{service="grpc.health.v1.Health",method="Check"}} 999
"""


def rounds() -> list[Scrape]:
    t0 = 1_700_000_000.0
    a = parse(EXPOSITION.format(full=100, degraded=0, fast=90, all=100))
    b = parse(EXPOSITION.format(full=280, degraded=20, fast=190, all=300))  # +200 answers in 40 s, 10% degraded
    return [Scrape(t0, {"gateway": a}), Scrape(t0 + 40, {"gateway": b})]


class FixedScraper(MetricsScraper):
    def __init__(self, history: list[Scrape]) -> None:
        super().__init__({"gateway": "127.0.0.1:1", "features": "127.0.0.1:2"})
        self._history = history

    def history(self) -> list[Scrape]:
        return self._history


def test_histogram_quantile_interpolates_like_prometheus():
    buckets = {0.01: 50.0, 0.1: 100.0, float("inf"): 100.0}
    assert series.histogram_quantile(0.5, buckets) == pytest.approx(0.01)
    assert series.histogram_quantile(0.75, buckets) == pytest.approx(0.01 + 0.09 * 0.5)
    assert series.histogram_quantile(0.99, {0.1: 0.0, float("inf"): 0.0}) is None


def test_increase_counts_a_restarted_target_from_zero():
    old = Scrape(0, {"g": {("c_total", ()): 500.0}})
    new = Scrape(10, {"g": {("c_total", ()): 30.0}})
    assert series.increase(old, new, "c_total", ()) == {(): 30.0}


def test_parse_targets_names_a_malformed_entry():
    assert parse_targets("gateway=127.0.0.1:1, features=127.0.0.1:2") == {"gateway": "127.0.0.1:1",
                                                                         "features": "127.0.0.1:2"}
    with pytest.raises(ValueError, match="nonsense"):
        parse_targets("gateway=127.0.0.1:1,nonsense")


def test_wilson_interval_contains_the_rate():
    low, high = wilson(30, 1000)
    assert low < 0.03 < high and high - low < 0.03
    assert wilson(0, 0) == (0.0, 0.0)


@pytest.fixture
def data(tmp_path):
    settings = MonitoringSettings(state_dir=tmp_path / "mon", reference_path=tmp_path / "ref.parquet",
                                  models_dir=tmp_path / "models", bucket_s=60)
    settings.state_dir.mkdir()
    store = MonitoringStore(settings.db_path)
    bucket = bucket_of(now_ms(), 60)
    delta = BatchDelta()
    for variant, n, clicks in (("control", 2000, 60), ("treatment", 2000, 90)):
        for position in range(3):
            delta.cell(bucket - 120, variant, position)[:2] = [n // 3, clicks // 3]
            delta.cell(bucket, variant, position)[:2] = [n // 3, clicks // 3]
    store.commit_batch(delta, {("recsys.impressions", 0): 10})
    report = settings.reports_dir / "r1.html"
    report.parent.mkdir(parents=True)
    report.write_text("<html>evidently</html>")
    record = DriftReportRecord("r1", 1, now_ms(), now_ms() - 60_000, now_ms(), 500, True, 0.6, False, 0.0, 0.03,
                               500, False, 0.5, str(report),
                               [{"column": "user_age", "score": 0.12, "method": "psi", "drifted": True}])
    store._writer.execute(f"INSERT INTO drift_reports({_REPORT_COLUMNS}) VALUES ({','.join('?' * 16)})",
                          record.as_row())
    store.add_alert(AlertRecord("a1", now_ms(), "data_drift", "dataset drift in window 1", "r1"))
    store.add_alert(AlertRecord("a0", now_ms() - 7_200_000, "ctr_drop", "treatment CTR fell 30%", ""))
    registry = Registry(settings.models_dir)
    for _ in range(2):
        registry.create(lambda d: (d.joinpath("m.txt").write_text("x"), ["m.txt"])[1], {"metrics": {"auc": 0.8}})
    registry.record("gate", verdict="pass", challenger="v0002")
    served = {"control": ("two_tower+lgbm", "v0002", now_ms())}
    yield DashboardData(store, settings, FixedScraper(rounds()), served_models=lambda: served)
    store.close()


def test_overview_rates_quantiles_and_degraded_share(data):
    view = data.overview()
    assert view["answers_per_s"] == [pytest.approx(5.0)]
    assert view["degraded_share_all"] == [pytest.approx(0.1)]
    assert view["degraded_share"] == {"rank: DEADLINE_EXCEEDED": [pytest.approx(0.1)]}
    assert view["requests_per_s"] == {"gateway Recommend": [pytest.approx(5.0)]}  # health checks left out
    assert view["hop_p50_ms"]["total"][0] == pytest.approx(10.0)  # 100 of 200 new ones within 10 ms
    assert [t["up"] for t in view["targets"]] == [True, False]


def test_experiments_drift_models_alerts_views(data):
    exp = data.experiments(window_s=3600)
    by = {v["variant"]: v for v in exp["variants"]}
    assert by["treatment"]["ctr"] > by["control"]["ctr"] and by["treatment"]["lift"] == pytest.approx(0.5, rel=0.01)
    assert by["treatment"]["lift_low"] < by["treatment"]["lift"] < by["treatment"]["lift_high"]
    assert len(exp["over_time"]["control"]["ctr"]) == 2 and len(exp["positions"]) == 3
    assert exp["over_time"]["control"]["time"][-1] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(bucket_of(
        now_ms(), 60)))
    drift = data.drift()
    assert drift["windows"][0]["report_url"] == "reports/r1"
    assert drift["columns"]["user_age"]["score"] == [0.12]
    assert data.report_path("r1").read_text() == "<html>evidently</html>"
    models = data.models()
    assert models["latest"] == "v0002" and [v["version"] for v in models["versions"]] == ["v0001", "v0002"]
    assert models["versions"][0]["metrics"] == {"auc": 0.8}
    assert models["served"][0]["version"] == "v0002" and models["history"][0]["kind"] == "gate"
    alerts = data.alerts()
    assert [a["alert_id"] for a in alerts["open"]] == ["a1"] and [a["alert_id"] for a in alerts["past"]] == ["a0"]


def test_pages_and_api_without_auth(data):
    client = TestClient(create_app(data))
    for view in ("overview", "experiments", "drift", "models", "alerts"):
        page = client.get(f"/{view}")
        assert page.status_code == 200 and f'startDashboard("{view}"' in page.text
        assert client.get(f"/api/{view}").status_code == 200
    assert client.get("/").status_code == 200
    assert client.get("/api/nonsense").status_code == 404
    assert client.get("/reports/r1").text == "<html>evidently</html>"
    assert client.get("/reports/missing").status_code == 404
    assert "Plotly" in client.get("/static/plotly.min.js").text[:5000]


def test_auth_takes_the_grpc_api_credentials(data):
    key, other = new_api_key("ops"), new_api_key("app")
    keys = KeyStore({"ops": ApiKey.for_key(key, ["read_monitoring"]), "app": ApiKey.for_key(other, ["recommend"])})
    client = TestClient(create_app(data, Authenticator(keys=keys)), follow_redirects=False)
    assert client.get("/api/alerts").status_code == 401
    assert client.get("/api/alerts", headers={"x-api-key": other}).status_code == 403  # wrong scope
    ok = client.get("/api/alerts", headers={"x-api-key": key})
    assert ok.status_code == 200 and json.loads(ok.text)["open"]
    assert client.get("/overview").headers["location"].endswith("/login")
    assert client.get("/healthz").status_code == 200
    refused = client.post("/login", data={"credential": "nope"})
    assert "failed=1" in refused.headers["location"]
    accepted = client.post("/login", data={"credential": key})
    assert accepted.status_code == 303 and accepted.headers["location"] == "overview"
    assert client.get("/api/models").status_code == 200  # the cookie now
