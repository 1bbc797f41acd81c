"""`recsys monitoring serve`: run the monitoring service in this process."""

from __future__ import annotations

import argparse

from recsys.monitoring import settings  # noqa: F401  (declares the service's environment variables)


def _serve(args: argparse.Namespace) -> int:
    from recsys.monitoring.app import main

    return main(port=args.port)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("monitoring", help="online metrics and drift monitoring service")
    sub = parser.add_subparsers(dest="monitoring_command", required=True)
    serve = sub.add_parser("serve", help="consume Kafka and serve MonitoringService over gRPC")
    serve.add_argument("--port", type=int, default=None, help="gRPC port (default RECSYS_MONITORING_PORT)")
    serve.set_defaults(func=_serve)
