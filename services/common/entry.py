"""The process entry every service shares: `python -m recsys.<service>` runs the service's main through here."""

from __future__ import annotations

import sys
from collections.abc import Callable

from recsys.common.config import ConfigError
from recsys.common.errors import CliError, ServiceError


def run_service(name: str, main: Callable[[], int | None]) -> None:
    """Run main as the whole process and exit with its code.

    A configuration problem (a bad environment variable, a CliError, or a ServiceError raised before the
    server is up, such as a feature store that was never applied) exits with code 2 and one line naming the
    service, never a traceback.
    """
    try:
        code = main()
    except (ConfigError, CliError, ServiceError) as exc:
        print(f"recsys {name}: error: {exc}", file=sys.stderr)
        sys.exit(2)
    sys.exit(code or 0)
