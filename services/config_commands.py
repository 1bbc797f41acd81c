"""`recsys config`: the declared environment variables, their defaults and effective values.

Every variable is declared in `recsys.common.config` or in a service's `settings` module; this command imports
them all (the only module that does), so the table is complete without importing any service's code.
"""

from __future__ import annotations

import argparse
import importlib

from recsys.common import config

SETTINGS_MODULES = (
    "recsys.common.config",
    "recsys.candidates.settings",
    "recsys.eventlog.settings",
    "recsys.features.settings",
    "recsys.gateway.settings",
    "recsys.monitoring.settings",
    "recsys.ranking.settings",
    "recsys.lifecycle.settings",
    "recsys.training.settings",
)


def declare_all() -> None:
    """Import every settings module, so that every variable is in `config.REGISTRY`."""
    for name in SETTINGS_MODULES:
        importlib.import_module(name)


def markdown_table() -> str:
    """The README's configuration table, generated from the registry."""
    declare_all()
    rows = ["| variable | default | scope | meaning |", "|---|---|---|---|"]
    for var in sorted(config.REGISTRY.values(), key=lambda v: (v.scope != "common", v.scope, v.name)):
        rows.append(f"| `{var.name}` | `{var.default}` | {var.scope} | {var.help} |")
    return "\n".join(rows)


def _run(args: argparse.Namespace) -> int:
    declare_all()
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
