"""`recsys config`: the declared environment variables, their defaults and effective values."""

from __future__ import annotations

import argparse

from recsys.common import config


def markdown_table() -> str:
    """The README's configuration table, generated from the registry."""
    rows = ["| variable | default | scope | meaning |", "|---|---|---|---|"]
    for var in sorted(config.REGISTRY.values(), key=lambda v: (v.scope != "common", v.scope, v.name)):
        rows.append(f"| `{var.name}` | `{var.default}` | {var.scope} | {var.help} |")
    return "\n".join(rows)


def _run(args: argparse.Namespace) -> int:
    from recsys import cli

    cli.build_parser()  # import every command module so all variables are declared
    if args.markdown:
        print(markdown_table())
        return 0
    for var in sorted(config.REGISTRY.values(), key=lambda v: v.name):
        print(f"{var.name}={var.raw()}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("config", help="print the configuration (environment variables)")
    parser.add_argument("--markdown", action="store_true", help="print the README table")
    parser.set_defaults(func=_run)
