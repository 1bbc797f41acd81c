"""`recsys gateway serve`."""

from __future__ import annotations

import argparse


def _serve(_args: argparse.Namespace) -> int:
    from recsys.gateway.__main__ import main

    main()
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    gateway = subparsers.add_parser("gateway", help="the public API service")
    gateway_sub = gateway.add_subparsers(dest="gateway_command", required=True)
    gateway_sub.add_parser("serve", help="run the gateway until SIGTERM").set_defaults(func=_serve)
