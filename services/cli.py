"""The `recsys` command. Thin: each subcommand lives in the package that owns the work.

Every module in COMMAND_MODULES exposes `register(subparsers)`, adding its subcommands with
`set_defaults(func=...)`; `func(args)` returns an exit code. A `CliError` prints and exits 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from recsys.common.entry import process_defaults
from recsys.common.errors import CliError

COMMAND_MODULES = (
    "recsys.config_commands",
    "recsys.client_commands",
    "recsys.common.auth_commands",
    "recsys.common.protogen",
    "recsys.training.data.commands",
    "recsys.training.commands",
    "recsys.training.retrain_commands",
    "recsys.training.ope.commands",
    "recsys.monitoring.commands",
    "recsys.ranking.commands",
    "recsys.features.commands",
    "recsys.gateway.commands",
    "recsys.stack.commands",
    "recsys.candidates.commands",
    "recsys.eventlog.commands",
    "recsys.lifecycle.commands",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recsys", description="Two-stage recommender platform")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `recsys` console script."""
    process_defaults()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CliError as exc:
        print(f"recsys {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
