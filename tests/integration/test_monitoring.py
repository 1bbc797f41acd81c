"""The monitoring service as its own process on a real Kafka broker.

Online metrics equal a hand count (duplicates, out-of-order clicks, orphans, malformed records included);
the gRPC surface answers with the right statuses; a process killed mid-stream and restarted counts exactly;
an unshifted stream raises no drift while demographic, popularity and score shifts are flagged within one
window, naming the drifted columns, with alerts stored and POSTed to the webhook.
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter
from pathlib import Path

import grpc
import numpy as np
import pandas as pd
import pytest
from kafka import KafkaConsumer, TopicPartition

from recsys.common import kafka as rk
from recsys.common.clients import insecure_channel, wait_ready
from recsys.common.ports import free_port
from recsys.v1 import events_pb2, monitoring_pb2, monitoring_pb2_grpc

pytestmark = pytest.mark.integration

CLICK, PURCHASE = events_pb2.EVENT_TYPE_CLICK, events_pb2.EVENT_TYPE_PURCHASE
FEATURES = ["user_age", "user_gender", "item_popularity", "item_price", "ctx_hour"]




class Service:
    """`python -m recsys.monitoring` with its own topics, group and state folder; stopped by PID."""

    def __init__(self, tmp: Path, bootstrap: str, **env: str) -> None:
        suffix = uuid.uuid4().hex[:8]
        self.topics = {kind: f"mon-{kind}-{suffix}" for kind in ("events", "impressions", "predictions", "dlq")}
        rk.ensure_topics(list(self.topics.values()), bootstrap)
        self.bootstrap = bootstrap
        self.state = tmp / f"state-{suffix}"
        self.log_path = tmp / f"service-{suffix}.log"
        self.port = free_port()
        self.env = {
            **os.environ,
            "RECSYS_KAFKA_BOOTSTRAP": bootstrap,
            "RECSYS_KAFKA_EVENTS_TOPIC": self.topics["events"],
            "RECSYS_KAFKA_IMPRESSIONS_TOPIC": self.topics["impressions"],
            "RECSYS_KAFKA_PREDICTIONS_TOPIC": self.topics["predictions"],
            "RECSYS_KAFKA_DLQ_TOPIC": self.topics["dlq"],
            "RECSYS_MONITORING_GROUP": f"mon-{suffix}",
            "RECSYS_MONITORING_PORT": str(self.port),
            "RECSYS_MONITORING_STATE_DIR": str(self.state),
            "RECSYS_MONITORING_REFERENCE": str(tmp / "no-reference.parquet"),
            "RECSYS_METRICS_PORT": "0",
            "RECSYS_SHUTDOWN_GRACE_S": "2",
            **env,
        }
        self.proc: subprocess.Popen | None = None
        self.channel: grpc.Channel | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Service:
        log = self.log_path.open("a")
        self.proc = subprocess.Popen([sys.executable, "-m", "recsys.monitoring"], env=self.env, stdout=log, stderr=log)
        log.close()
        try:
            wait_ready(self.target, timeout_s=60)
        except TimeoutError:
            self.kill()
            raise AssertionError(f"monitoring did not start:\n{self.log_tail()}") from None
        self.channel = insecure_channel(self.target)
        return self

    @property
    def stub(self) -> monitoring_pb2_grpc.MonitoringServiceStub:
        return monitoring_pb2_grpc.MonitoringServiceStub(self.channel)

    def kill(self) -> None:
        """SIGKILL: no chance to finish a batch or commit anything."""
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> int | None:
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        return self.proc.returncode

    def prometheus(self) -> str:
        """The /metrics text of the running process (its port is in the "serving" log line)."""
        for line in reversed(self.log_path.read_text(errors="replace").splitlines()):
            if line.startswith("{") and json.loads(line).get("msg") == "serving":
                port = json.loads(line)["metrics_port"]
                return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        raise AssertionError("no serving line in the log")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def produce(self, kind: str, messages, raw: list[bytes] = ()) -> None:
        producer = rk.make_producer(self.bootstrap, linger_ms=20)
        try:
            for message in messages:
                rk.publish(producer, self.topics[kind], message)
            for value in raw:
                producer.send(self.topics[kind], key=b"bad", value=value)
            producer.flush(timeout=60)
        finally:
            producer.close(timeout=10)

    def metrics(self, window_seconds: int = 0, variant: str = "") -> monitoring_pb2.OnlineMetrics:
        request = monitoring_pb2.GetOnlineMetricsRequest(window_seconds=window_seconds, variant=variant)
        return self.stub.GetOnlineMetrics(request, timeout=10)

    def wait_for(self, condition, timeout_s: float = 90.0, what: str = "condition", poll_s: float = 0.2):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            assert self.proc.poll() is None, f"monitoring exited:\n{self.log_tail()}"
            time.sleep(poll_s)
        raise AssertionError(f"timed out waiting for {what}:\n{self.log_tail()}")


@pytest.fixture()
def service_factory(tmp_path, kafka_bootstrap):
    services: list[Service] = []

    def make(**env: str) -> Service:
        service = Service(tmp_path, kafka_bootstrap, **env)
        services.append(service)
        return service

    yield make
    for service in services:
        service.stop()


# -- a served stream with a hand count -------------------------------------------------------------


def served(request_id: str, variant: str, items: list[str], ts: int, event_id: str | None = None):
    return events_pb2.Impression(
        event_id=event_id or f"imp-{request_id}",
        request_id=request_id,
        user_id=f"u-{request_id}",
        variant=variant,
        timestamp_ms=ts,
        items=[
            events_pb2.ImpressionItem(item_id=item, position=p, score=0.1 * (p + 1)) for p, item in enumerate(items)
        ],
    )


def user_event(event_id: str, kind: int, request_id: str, item: str, ts: int, value: float = 0.0):
    return events_pb2.Event(
        event_id=event_id,
        type=kind,
        user_id=f"u-{request_id}",
        item_id=item,
        request_id=request_id,
        timestamp_ms=ts,
        value=value,
    )


def test_online_metrics_equal_a_hand_count_and_malformed_records_are_dead_lettered(service_factory):
    service = service_factory(RECSYS_MONITORING_CATALOGUE_SIZE="40").start()
    now = int(time.time() * 1000)
    impressions, events = [], []
    want_imp, want_clicks, want_rev = Counter(), Counter(), Counter()  # by (variant, position)
    items_served = set()
    for r in range(120):
        variant = "control" if r % 2 == 0 else "treatment"
        items = [f"item-{(r + k) % 30}" for k in range(5)]
        impressions.append(served(f"r{r}", variant, items, now - 1000))
        items_served.update(items)
        for p in range(5):
            want_imp[(variant, p)] += 1
        clicked = [0] if r % 3 == 0 else []
        if variant == "treatment" and r % 5 == 0:
            clicked.append(1)
        for p in clicked:
            events.append(user_event(f"c{r}-{p}", CLICK, f"r{r}", items[p], now))
            want_clicks[(variant, p)] += 1
        if r % 10 == 0:
            events.append(user_event(f"p{r}", PURCHASE, f"r{r}", items[0], now, value=20.0))
            want_rev[variant] += 20.0
    # Noise that must not change the counts: a re-sent click and impression (same event ids), a second
    # click on an already clicked item, a click on an unknown request, a click on an item not served.
    events += [events[0], user_event("again-0", CLICK, "r0", "item-0", now)]
    events += [user_event("orphan", CLICK, "nope", "item-1", now), user_event("ns", CLICK, "r1", "zzz", now)]
    early = [e for e in events if e.request_id in ("r3", "r6")]  # clicks published before their impressions
    service.produce("events", early)
    service.produce(
        "impressions",
        [*impressions, impressions[5]],
        raw=[b"\x00garbage", events_pb2.Impression(request_id="no-event-id").SerializeToString()],
    )
    service.produce("events", [e for e in events if e not in early], raw=[b"\xff\xff\xff"])
    bad_prediction = events_pb2.PredictionLog(request_id="x", feature_names=["a", "b"], features=[1.0], scores=[0.5])
    service.produce("predictions", [bad_prediction])

    total_imp, total_clicks = sum(want_imp.values()), sum(want_clicks.values())
    service.wait_for(
        lambda: (m := service.metrics()).impressions == total_imp and m.clicks == total_clicks, what="the counts"
    )
    time.sleep(1.0)  # nothing more arrives: no double counting after the fact
    m = service.metrics()
    assert (m.impressions, m.clicks) == (total_imp, total_clicks)
    assert m.ctr == pytest.approx(total_clicks / total_imp)
    assert m.revenue_per_impression == pytest.approx(sum(want_rev.values()) / total_imp)
    assert m.catalogue_coverage == pytest.approx(len(items_served) / 40)
    by_variant = {v.variant: v for v in m.variants}
    for variant in ("control", "treatment"):
        imp = sum(n for (v, _), n in want_imp.items() if v == variant)
        clicks = sum(n for (v, _), n in want_clicks.items() if v == variant)
        got = by_variant[variant]
        assert (got.impressions, got.clicks) == (imp, clicks)
        assert got.revenue_per_impression == pytest.approx(want_rev[variant] / imp)
    control, treatment = by_variant["control"], by_variant["treatment"]
    assert control.ctr_lift == 0.0
    assert treatment.ctr_lift == pytest.approx(treatment.ctr / control.ctr - 1)
    assert treatment.ctr_lift_ci_low < treatment.ctr_lift < treatment.ctr_lift_ci_high
    rpi_ratio = treatment.revenue_per_impression / control.revenue_per_impression
    assert treatment.revenue_lift == pytest.approx(rpi_ratio - 1)
    positions = {p.position: (p.impressions, p.clicks) for p in m.positions}
    assert positions == {
        p: (sum(n for (_, q), n in want_imp.items() if q == p), sum(n for (_, q), n in want_clicks.items() if q == p))
        for p in range(5)
    }
    assert m.score_quantiles == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5], rel=0.03)
    only = service.metrics(window_seconds=3600, variant="treatment")
    assert (only.impressions, only.clicks) == (treatment.impressions, treatment.clicks)
    assert [v.variant for v in only.variants] == ["treatment"]

    reader = KafkaConsumer(bootstrap_servers=service.bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=5000)
    try:
        partitions = reader.partitions_for_topic(service.topics["dlq"])
        reader.assign([TopicPartition(service.topics["dlq"], p) for p in partitions])
        dead = [dict(record.headers) for record in reader]
    finally:
        reader.close()
    assert Counter(h["dlq.topic"].decode() for h in dead) == {
        service.topics["impressions"]: 2,
        service.topics["events"]: 1,
        service.topics["predictions"]: 1,
    }
    assert all(h["dlq.error"] for h in dead)


def test_grpc_statuses(service_factory):
    service = service_factory(RECSYS_MONITORING_BUCKET_S="60", RECSYS_MONITORING_RETENTION_S="86400").start()
    stub = service.stub

    def code(call, request) -> tuple[grpc.StatusCode, str]:
        with pytest.raises(grpc.RpcError) as err:
            call(request, timeout=10)
        return err.value.code(), err.value.details()

    for window in (-1, 30, 86_401):
        status, details = code(stub.GetOnlineMetrics, monitoring_pb2.GetOnlineMetricsRequest(window_seconds=window))
        assert status == grpc.StatusCode.INVALID_ARGUMENT and "window_seconds" in details
    status, details = code(stub.GetOnlineMetrics, monitoring_pb2.GetOnlineMetricsRequest(variant="nope"))
    assert status == grpc.StatusCode.NOT_FOUND and "nope" in details
    assert code(stub.GetDriftReport, monitoring_pb2.GetDriftReportRequest())[0] == grpc.StatusCode.NOT_FOUND
    status, details = code(stub.GetDriftReport, monitoring_pb2.GetDriftReportRequest(report_id="drift-424242"))
    assert status == grpc.StatusCode.NOT_FOUND and "drift-424242" in details
    assert code(stub.ListAlerts, monitoring_pb2.ListAlertsRequest(limit=-1))[0] == grpc.StatusCode.INVALID_ARGUMENT
    empty = stub.GetOnlineMetrics(monitoring_pb2.GetOnlineMetricsRequest(window_seconds=3600), timeout=10)
    assert (empty.impressions, empty.ctr, list(empty.variants)) == (0, 0.0, [])
    assert list(stub.ListAlerts(monitoring_pb2.ListAlertsRequest(), timeout=10).alerts) == []
    assert service.stop() == 0  # SIGTERM drains and exits cleanly


# -- restart exactness ---------------------------------------------------------------------------------


def _traffic(start: int, n: int, now: int) -> tuple[list, list, int, int]:
    impressions, clicks = [], []
    for r in range(start, start + n):
        items = [f"i{(r * 7 + k) % 500}" for k in range(4)]
        impressions.append(served(f"q{r}", "control" if r % 2 else "treatment", items, now))
        if r % 4 == 0:
            clicks.append(user_event(f"k{r}", CLICK, f"q{r}", items[r % 4 % 4], now + 500))
    return impressions, clicks, 4 * n, len(clicks)


def _predictions(start: int, n: int, now: int, rng: np.random.Generator) -> list:
    return [prediction(f"pred-{i}", now, rng) for i in range(start, start + n)]


def test_killed_mid_stream_and_restarted_counts_exactly(service_factory):
    service = service_factory(
        RECSYS_MONITORING_MAX_POLL_RECORDS="100",
        RECSYS_MONITORING_DRIFT_WINDOW_ROWS="1000",
        RECSYS_MONITORING_DRIFT_WINDOW_S="3600",
    ).start()
    now = int(time.time() * 1000)
    rng = np.random.default_rng(5)
    imp_a, clicks_a, n_imp_a, n_clicks_a = _traffic(0, 1500, now)
    imp_b, clicks_b, n_imp_b, n_clicks_b = _traffic(1500, 1500, now)
    service.produce("predictions", _predictions(0, 60, now, rng))  # 600 of the 1,000 rows of the first window
    # Produce while it consumes, and kill it mid-stream.
    producing = threading.Thread(
        target=lambda: (service.produce("impressions", imp_a), service.produce("events", clicks_a))
    )
    producing.start()
    progress = lambda: (n := service.metrics().impressions) >= 400 and n  # noqa: E731
    seen_at_kill = service.wait_for(progress, what="progress", poll_s=0.02)
    service.kill()
    producing.join()
    # While it is down: the rest, and re-sends of records it has (maybe) already counted.
    service.produce("impressions", imp_b + imp_a[:100])
    service.produce("events", clicks_b + clicks_a[:50])
    service.produce("predictions", _predictions(60, 40, now, rng) + _predictions(0, 10, now, rng))
    service.start()
    want = (n_imp_a + n_imp_b, n_clicks_a + n_clicks_b)
    service.wait_for(lambda: (service.metrics().impressions, service.metrics().clicks) == want, what="exact counts")
    time.sleep(1.5)
    m = service.metrics()
    assert (m.impressions, m.clicks) == want, f"killed at {seen_at_kill} impressions"
    report = service.wait_for(lambda: _report(service, ""), what="the first drift report")
    assert report.rows == 1000  # the window spanning the kill holds every prediction row exactly once


def _report(service: Service, report_id: str) -> monitoring_pb2.DriftReport | None:
    try:
        return service.stub.GetDriftReport(monitoring_pb2.GetDriftReportRequest(report_id=report_id), timeout=10)
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.NOT_FOUND:
            return None
        raise


# -- drift ------------------------------------------------------------------------------------------------


def feature_rows(rng: np.random.Generator, n: int, shift: str = "") -> np.ndarray:
    """Served rows: user age and gender (demographics), item popularity and price, hour of day."""
    age = rng.normal(35, 10, n) + (15 if shift == "demographics" else 0)
    gender = (rng.random(n) < (0.8 if shift == "demographics" else 0.5)).astype(float)
    popularity = rng.lognormal(2.0 + (1.5 if shift == "popularity" else 0.0), 0.6, n)
    price = rng.gamma(2.0, 10.0, n)
    hour = rng.integers(0, 24, n).astype(float)
    return np.column_stack([age, gender, popularity, price, hour])


def scores(rng: np.random.Generator, n: int, shift: str = "") -> np.ndarray:
    return np.clip(rng.beta(2, 5, n) + (0.3 if shift == "score" else 0.0), 0, 1)


def prediction(request_id: str, ts: int, rng: np.random.Generator, shift: str = "", items: int = 10):
    return events_pb2.PredictionLog(
        request_id=request_id,
        user_id=f"u-{request_id}",
        variant="control",
        timestamp_ms=ts,
        feature_names=FEATURES,
        features=feature_rows(rng, items, shift).ravel().tolist(),
        scores=scores(rng, items, shift).tolist(),
        item_ids=[f"i{k}" for k in range(items)],
    )


class Webhook(http.server.ThreadingHTTPServer):
    """Records the JSON bodies POSTed to it."""

    def __init__(self) -> None:
        self.received: list[dict] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(handler) -> None:  # noqa: N805
                body = handler.rfile.read(int(handler.headers["Content-Length"]))
                self.received.append(json.loads(body))
                handler.send_response(204)
                handler.end_headers()

            def log_message(handler, *args) -> None:  # noqa: N805
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/alerts"


def test_drift_is_flagged_within_one_window_naming_the_columns(service_factory, tmp_path):
    rng = np.random.default_rng(11)
    reference = pd.DataFrame(feature_rows(rng, 20_000), columns=FEATURES)
    reference["score"] = scores(rng, 20_000)
    reference.to_parquet(tmp_path / "reference.parquet", index=False)
    webhook = Webhook()
    service = service_factory(
        RECSYS_MONITORING_REFERENCE=str(tmp_path / "reference.parquet"),
        RECSYS_MONITORING_DRIFT_WINDOW_ROWS="2000",
        RECSYS_MONITORING_DRIFT_WINDOW_S="3600",
        RECSYS_MONITORING_WEBHOOK_URL=webhook.url,
    ).start()
    try:
        reports = {}
        for n, shift in enumerate(["", "demographics", "popularity", "score"], start=1):
            ts = int(time.time() * 1000)
            service.produce("predictions", [prediction(f"{shift}-{i}", ts, rng, shift) for i in range(200)])
            reports[shift] = service.wait_for(lambda n=n: _report(service, f"drift-{n:06d}"), what=f"window {n}")
    finally:
        webhook.shutdown()
    drifted = {shift: {c.column for c in r.columns if c.drifted} for shift, r in reports.items()}
    assert drifted[""] == set() and not reports[""].dataset_drift and not reports[""].prediction_drift
    assert {"user_age", "user_gender"} <= drifted["demographics"] and "item_popularity" not in drifted["demographics"]
    assert drifted["popularity"] == {"item_popularity"}
    assert reports["score"].prediction_drift and drifted["score"] == set()
    assert all(r.rows == 2000 and len(r.columns) == len(FEATURES) for r in reports.values())

    # Each window's Evidently HTML report is drawn after its verdict; its path is filled in once written.
    def drawn(report_id: str) -> monitoring_pb2.DriftReport | None:
        report = _report(service, report_id)
        return report if report is not None and report.report_path else None

    for n, shift in enumerate(reports, start=1):
        html = service.wait_for(lambda n=n: drawn(f"drift-{n:06d}"), what=f"the HTML report of window {n}")
        assert html.columns == reports[shift].columns and html.dataset_drift == reports[shift].dataset_drift
        assert Path(html.report_path).is_file() and "user_age" in Path(html.report_path).read_text()
        reports[shift] = html
    assert service.stub.GetDriftReport(monitoring_pb2.GetDriftReportRequest(), timeout=10) == reports["score"]

    alerts = service.stub.ListAlerts(monitoring_pb2.ListAlertsRequest(), timeout=10).alerts
    by_report = {(a.report_id, a.kind): a.message for a in alerts}
    assert not any(report_id == "drift-000001" for report_id, _ in by_report)
    assert "user_age" in by_report[("drift-000002", "data_drift")]
    assert "item_popularity" in by_report[("drift-000003", "data_drift")]
    assert ("drift-000004", "prediction_drift") in by_report
    service.wait_for(lambda: len(webhook.received) >= len(alerts), timeout_s=10, what="webhook deliveries")
    assert {(a["report_id"], a["kind"]) for a in webhook.received} == set(by_report)

    # The service's own /metrics mirrors the latest report (the drift process reports, the service publishes).
    def published() -> str | None:
        text = service.prometheus()
        return text if "recsys_monitoring_prediction_drift 1.0" in text else None

    gauges = service.wait_for(published, timeout_s=10, what="the drift gauges")
    assert 'recsys_monitoring_column_drift_score{column="user_age"}' in gauges
    assert "recsys_monitoring_dataset_drift 0.0" in gauges
    assert 'recsys_monitoring_alerts_total{kind="data_drift"} 2.0' in gauges
