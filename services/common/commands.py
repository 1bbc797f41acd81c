"""The `recsys <service> serve` command every service registers: one helper, so that each serves alike.

`recsys <service> serve [--port N] [extra options]` runs `recsys.<service>.main.main(port=N, **extras)` in this
process, as `python -m recsys.<service>` does; a configuration problem exits with code 2 and one line.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence
from typing import Any

from recsys.common.config import ConfigError, EnvVar
from recsys.common.errors import CliError, ServiceError

#: One extra option of a serve command: (flags, add_argument keyword arguments).
Option = tuple[Sequence[str], dict[str, Any]]


def add_serve_command(
    sub: argparse._SubParsersAction,
    package: str,
    help: str,
    port: EnvVar,
    options: Sequence[Option] = (),
) -> argparse.ArgumentParser:
    """Add `serve` to a service's subcommands; `package` is the service's package (its `__package__`)."""
    parser = sub.add_parser("serve", help=help)
    parser.add_argument("--port", type=int, default=None, help=f"gRPC port (default {port.name})")
    extras = []
    for flags, kwargs in options:
        extras.append(parser.add_argument(*flags, **kwargs).dest)
    parser.set_defaults(func=lambda args: _serve(package, args, extras))
    return parser


def _serve(package: str, args: argparse.Namespace, extras: list[str]) -> int:
    main = importlib.import_module(f"{package}.main").main
    try:
        return int(main(port=args.port, **{name: getattr(args, name) for name in extras}) or 0)
    except (ConfigError, ServiceError) as exc:
        raise CliError(str(exc)) from exc
