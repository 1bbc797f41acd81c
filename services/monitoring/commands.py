"""`recsys monitoring serve`: run the monitoring service in this process."""

from __future__ import annotations

import argparse

from recsys.common.commands import add_serve_command
from recsys.monitoring.settings import PORT


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("monitoring", help="online metrics and drift monitoring service")
    sub = parser.add_subparsers(dest="monitoring_command", required=True)
    add_serve_command(sub, __package__, "consume Kafka and serve MonitoringService over gRPC", PORT)
