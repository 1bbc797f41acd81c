"""A balanced channel over two real gRPC servers: calls spread over both, and none fails when one stops."""

from __future__ import annotations

from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from recsys.common.clients import channel, retry_service_config
from recsys.common.tls import TlsConfig


class _CountingHealth(health.HealthServicer):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def Check(self, request, context):
        self.calls += 1
        return super().Check(request, context)


def _server() -> tuple[grpc.Server, _CountingHealth, int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    servicer = _CountingHealth()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, servicer, port


def test_calls_spread_over_instances_and_survive_one_stopping():
    (a, count_a, port_a), (b, count_b, port_b) = _server(), _server()
    address = f"127.0.0.1:{port_a},127.0.0.1:{port_b}"
    try:
        with channel(address, tls=TlsConfig(), service_config=retry_service_config()) as ch:
            grpc.channel_ready_future(ch).result(timeout=10)
            stub = health_pb2_grpc.HealthStub(ch)
            request = health_pb2.HealthCheckRequest()
            for _ in range(40):
                stub.Check(request, timeout=2)
            assert count_a.calls > 5 and count_b.calls > 5, (count_a.calls, count_b.calls)

            a.stop(grace=None).wait()
            before = count_b.calls
            for _ in range(40):  # none fails: the stopped one is skipped (or the call retried on the other)
                stub.Check(request, timeout=2)
            assert count_b.calls - before == 40
    finally:
        a.stop(grace=None)
        b.stop(grace=None)
