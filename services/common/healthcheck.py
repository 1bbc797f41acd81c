"""A tiny gRPC health probe for container HEALTHCHECKs and exec probes.

    python -m recsys.common.healthcheck ADDR [--service NAME] [--timeout S] [--ray-serve] [--server-name NAME]

Exits 0 when `grpc.health.v1.Health/Check` at ADDR answers SERVING, 1 otherwise (not serving, unreachable,
timed out). `--ray-serve` asks Ray Serve's gRPC proxy instead (`/ray.serve.RayServeAPIService/Healthz`),
which answers for the proxy itself and does not implement `grpc.health.v1`. Plays the part of
grpc_health_probe, which cannot be downloaded into the image here. The standard check follows RECSYS_TLS_*
like every client (TLS, with the pod's own certificate under mTLS), so it also probes servers that Kubernetes'
native gRPC probes, which have no TLS, cannot reach.
"""

from __future__ import annotations

import argparse
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from recsys.common.clients import channel

RAY_SERVE_HEALTHZ = "/ray.serve.RayServeAPIService/Healthz"


def check(address: str, service: str = "", timeout_s: float = 2.0, server_name: str | None = None) -> tuple[bool, str]:
    """Ask the standard health service at address (TLS per RECSYS_TLS_*); (serving, what was seen)."""
    with channel(address, server_name=server_name) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
        except grpc.RpcError as exc:
            return False, f"{exc.code().name}: {exc.details()}"
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return reply.status == health_pb2.HealthCheckResponse.SERVING, status


def check_ray_serve(address: str, timeout_s: float = 2.0) -> tuple[bool, str]:
    """Ask Ray Serve's gRPC proxy health method (an empty request; the reply carries a message)."""
    with grpc.insecure_channel(address) as ch:
        healthz = ch.unary_unary(
            RAY_SERVE_HEALTHZ, request_serializer=lambda raw: raw, response_deserializer=lambda raw: raw
        )
        try:
            reply = healthz(b"", timeout=timeout_s)
        except grpc.RpcError as exc:
            return False, f"{exc.code().name}: {exc.details()}"
    return True, reply.decode("utf-8", errors="replace").strip("\x00\n\r\t ") or "OK"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recsys.common.healthcheck", description=__doc__.splitlines()[0])
    parser.add_argument("address", help="host:port of the gRPC server")
    parser.add_argument("--service", default="", help="service name to check ('' = the whole server)")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for the answer")
    parser.add_argument("--ray-serve", action="store_true", help="probe Ray Serve's gRPC proxy Healthz")
    parser.add_argument("--server-name", default=None, help="host name expected in the server's TLS certificate")
    args = parser.parse_args(argv)
    if args.ray_serve:
        ok, seen = check_ray_serve(args.address, args.timeout)
    else:
        ok, seen = check(args.address, args.service, args.timeout, args.server_name)
    print(f"{args.address}: {seen}", file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
