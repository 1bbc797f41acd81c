"""The shared gRPC bootstrap on a real server process: health, reflection, errors, metrics, draining."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from recsys.common.clients import insecure_channel, request_metadata
from recsys.v1 import events_pb2, events_pb2_grpc

APP = Path(__file__).with_name("bootstrap_app.py")
SERVICE = "recsys.v1.EventService"


@pytest.fixture()
def app():
    proc = subprocess.Popen(
        [sys.executable, str(APP), "5"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("PORT"), proc.stderr.read()
        _, port, metrics_port = line.split()
        yield proc, f"127.0.0.1:{port}", int(metrics_port)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def _metric(metrics_port: int, name: str, **labels: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0 if want else float("nan")


def test_health_and_reflection(app):
    _, target, _ = app
    with insecure_channel(target) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        for name in ("", SERVICE):
            status = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5).status
            assert status == health_pb2.HealthCheckResponse.SERVING
        refl = reflection_pb2_grpc.ServerReflectionStub(ch)
        responses = refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        names = {s.name for r in responses for s in r.list_services_response.service}
        assert SERVICE in names and "grpc.health.v1.Health" in names


def test_invalid_argument_names_the_field_and_metrics_move(app):
    _, target, metrics_port = app
    with insecure_channel(target) as ch:
        stub = events_pb2_grpc.EventServiceStub(ch)
        ok = stub.Publish(
            events_pb2.PublishRequest(events=[events_pb2.Event(user_id="u1")]),
            timeout=5,
            metadata=request_metadata("req-1"),
        )
        assert ok.accepted == 1
        with pytest.raises(grpc.RpcError) as err:
            stub.Publish(events_pb2.PublishRequest(events=[events_pb2.Event(item_id="i1")]), timeout=5)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "events[0].user_id" in err.value.details()
    labels = {"service": "bootstrap-test", "method": "Publish"}
    assert _metric(metrics_port, "recsys_grpc_requests_total", **labels) == 2
    assert _metric(metrics_port, "recsys_grpc_errors_total", code="INVALID_ARGUMENT", **labels) == 1
    assert _metric(metrics_port, "recsys_grpc_latency_seconds_count", **labels) == 2


def test_sigterm_drains_in_flight_rpcs(app):
    proc, target, _ = app
    result: dict = {}

    def slow_call() -> None:
        with insecure_channel(target) as ch:
            stub = events_pb2_grpc.EventServiceStub(ch)
            event = events_pb2.Event(user_id="u1", value=1.5)
            try:
                result["resp"] = stub.Publish(events_pb2.PublishRequest(events=[event]), timeout=10)
            except grpc.RpcError as exc:  # recorded for the assertion below
                result["err"] = exc

    caller = threading.Thread(target=slow_call)
    caller.start()
    time.sleep(0.5)  # the slow RPC is in flight
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    caller.join(timeout=15)
    assert "err" not in result, result.get("err")
    assert result["resp"].accepted == 1
    assert proc.wait(timeout=10) == 0
    assert time.monotonic() - started < 8
    with insecure_channel(target) as ch, pytest.raises(grpc.RpcError) as err:
        events_pb2_grpc.EventServiceStub(ch).Publish(events_pb2.PublishRequest(), timeout=1)
    assert err.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
