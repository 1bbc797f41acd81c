"""Prometheus metrics shared by every gRPC server, and the HTTP endpoint that exposes them."""

from __future__ import annotations

from prometheus_client import Counter, Histogram, start_http_server

REQUESTS = Counter("recsys_grpc_requests_total", "gRPC requests handled", ["service", "method"])
ERRORS = Counter("recsys_grpc_errors_total", "gRPC requests that ended in an error", ["service", "method", "code"])
LATENCY = Histogram(
    "recsys_grpc_latency_seconds",
    "gRPC handler latency",
    ["service", "method"],
    buckets=(0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.1, 0.25, 0.5, 1.0, 2.5),
)


def start_metrics_server(host: str, port: int) -> int:
    """Serve /metrics on host:port (0 = a free port) and return the bound port."""
    server, _thread = start_http_server(port, addr=host)
    return int(server.server_address[1])
