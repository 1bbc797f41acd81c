"""The process entry every service shares: `python -m recsys.<service>` runs the service's main through here."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from recsys.common.config import ConfigError
from recsys.common.errors import CliError, ServiceError

#: Set in every recsys process before torch or LightGBM load their OpenMP runtime: OpenMP threads that spin
#: while waiting collapse throughput when the cores are shared with other processes (measured: 2 torch threads
#: ran 10x slower than 1 on a busy 2-core machine; with PASSIVE they match or beat 1).
PROCESS_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}


def process_defaults() -> None:
    """Apply PROCESS_ENV where the environment does not say otherwise (call before importing torch)."""
    for name, value in PROCESS_ENV.items():
        os.environ.setdefault(name, value)


def run_service(name: str, main: Callable[[], int | None]) -> None:
    """Run main as the whole process and exit with its code.

    A configuration problem (a bad environment variable, a CliError, or a ServiceError raised before the
    server is up, such as a feature store that was never applied) exits with code 2 and one line naming the
    service, never a traceback.
    """
    process_defaults()
    try:
        code = main()
    except (ConfigError, CliError, ServiceError) as exc:
        print(f"recsys {name}: error: {exc}", file=sys.stderr)
        sys.exit(2)
    sys.exit(code or 0)
