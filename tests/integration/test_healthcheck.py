"""`python -m recsys.common.healthcheck`: the images' gRPC health probe, against real gRPC servers."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from recsys.common import healthcheck

pytestmark = pytest.mark.integration


@pytest.fixture()
def health_server() -> Iterator[tuple[str, health.HealthServicer]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", servicer
    finally:
        server.stop(0).wait()


@pytest.fixture()
def ray_serve_like_server() -> Iterator[str]:
    """A server answering only Ray Serve's proxy health method, as Serve's gRPC proxy does."""

    def healthz(request: bytes, context: grpc.ServicerContext) -> bytes:
        return b"\n\x07success"

    handler = grpc.method_handlers_generic_handler(
        "ray.serve.RayServeAPIService",
        {"Healthz": grpc.unary_unary_rpc_method_handler(healthz, lambda raw: raw, lambda raw: raw)},
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), handlers=[handler])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(0).wait()


def _closed_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def test_serving_and_not_serving(health_server):
    address, servicer = health_server
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    assert healthcheck.check(address) == (True, "SERVING")
    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    assert healthcheck.check(address) == (False, "NOT_SERVING")
    servicer.set("recsys.v1.FeatureService", health_pb2.HealthCheckResponse.SERVING)
    assert healthcheck.main([address, "--service", "recsys.v1.FeatureService"]) == 0
    ok, seen = healthcheck.check(address, service="recsys.v1.Unknown")
    assert not ok and seen.startswith("NOT_FOUND")


def test_unreachable_server_fails_fast():
    ok, seen = healthcheck.check(_closed_port(), timeout_s=0.5)
    assert not ok and seen.startswith(("UNAVAILABLE", "DEADLINE_EXCEEDED"))


def test_ray_serve_proxy_health(ray_serve_like_server, health_server):
    assert healthcheck.main([ray_serve_like_server, "--ray-serve"]) == 0
    address, _ = health_server  # no Healthz method there
    assert healthcheck.main([address, "--ray-serve", "--timeout", "1"]) == 1


def test_exit_codes_of_the_module(health_server):
    address, servicer = health_server
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    probe = [sys.executable, "-m", "recsys.common.healthcheck"]
    assert subprocess.run([*probe, address], capture_output=True, timeout=30).returncode == 0
    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    failed = subprocess.run([*probe, address], capture_output=True, text=True, timeout=30)
    assert failed.returncode == 1 and "NOT_SERVING" in failed.stderr
