"""`python -m recsys.ranking`: run the ranking service (Ray Serve gRPC ingress) until SIGTERM."""

from __future__ import annotations

import sys

from recsys.common.errors import CliError
from recsys.ranking.server import serve_forever

if __name__ == "__main__":
    try:
        sys.exit(serve_forever())
    except CliError as exc:
        print(f"recsys ranking: error: {exc}", file=sys.stderr)
        sys.exit(2)
