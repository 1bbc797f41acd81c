"""`recsys gateway serve`."""

from __future__ import annotations

import argparse

from recsys.common.commands import add_serve_command
from recsys.gateway.settings import PORT


def register(subparsers: argparse._SubParsersAction) -> None:
    gateway = subparsers.add_parser("gateway", help="the public API service")
    gateway_sub = gateway.add_subparsers(dest="gateway_command", required=True)
    add_serve_command(gateway_sub, __package__, "run the gateway until SIGTERM", PORT)
