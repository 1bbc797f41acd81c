"""Free ports for local stacks: outside the kernel's ephemeral range, never twice, never a listening one;
readiness asks for the service's own name, so a stranger on the port is not taken for it."""

from __future__ import annotations

import socket
from concurrent import futures
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from recsys.common import ports
from recsys.stack.local import HEALTH_SERVICE, grpc_ready


def test_quiet_ranges_avoid_the_ephemeral_range_and_ray_workers():
    assert ports.quiet_ranges((32768, 60999)) == [(20000, 32767), (61000, 65535)]
    assert ports.quiet_ranges((1024, 65535)) == []
    assert ports.quiet_ranges((10000, 20050)) == [(20051, 65535)]


def test_ephemeral_range_falls_back_to_linux_default(tmp_path: Path):
    assert ports.ephemeral_range(tmp_path / "missing") == ports.DEFAULT_EPHEMERAL
    (tmp_path / "range").write_text("40000\t50000\n")
    assert ports.ephemeral_range(tmp_path / "range") == (40000, 50000)


def test_free_ports_are_outside_the_ephemeral_range_and_distinct():
    low, high = ports.ephemeral_range()
    picked = [ports.free_port() for _ in range(50)]
    assert len(set(picked)) == 50
    assert all(ports.FLOOR <= p and not low <= p <= high for p in picked)


def test_a_listening_port_is_never_returned(monkeypatch):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", ports.free_port()))
        busy.listen()
        taken = busy.getsockname()[1]
        draws = iter([taken, taken, taken + 1])
        monkeypatch.setattr(ports.random, "randint", lambda a, b: next(draws))
        assert ports.free_port() == taken + 1


def _health_server(service: str) -> tuple[grpc.Server, str]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    for name in ("", service):
        servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, f"127.0.0.1:{port}"


def test_readiness_wants_the_service_itself_not_any_server_on_the_port():
    server, address = _health_server(HEALTH_SERVICE["features"])
    try:
        assert grpc_ready("features", address)
        assert not grpc_ready("gateway", address)  # a server for something else answers "" SERVING too
    finally:
        server.stop(0)
