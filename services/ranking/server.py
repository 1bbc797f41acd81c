"""The ranking service process: `python -m recsys.ranking` / `recsys ranking serve`.

Starts Ray (local, bounded) or joins RECSYS_RAY_ADDRESS, starts Serve's gRPC proxy and the ranker, prints
one READY line, follows the registry's `latest` for hot swaps, and on SIGTERM / SIGINT shuts Serve and Ray
down before exiting (see `runtime` for why Serve's proxy replaces the shared GrpcServer bootstrap).
"""

from __future__ import annotations

import json
import logging
import signal
import threading
from typing import Any

from recsys.common import config
from recsys.common.logs import configure_logging
from recsys.ranking.runtime import RankingRuntime
from recsys.ranking.settings import RankingSettings

log = logging.getLogger("recsys.ranking.server")


def serve_forever(settings: RankingSettings | None = None) -> int:
    """Run until SIGTERM / SIGINT; returns the exit code."""
    configure_logging("ranking", config.LOG_LEVEL.str())
    settings = settings or RankingSettings.from_env()
    stop = threading.Event()

    def _handle(signum: int, _frame: Any) -> None:
        log.info("signal received, stopping", extra={"signal": signum})
        stop.set()

    previous = {sig: signal.signal(sig, _handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    runtime = RankingRuntime(settings)
    try:
        runtime.start()
        versions = json.dumps(runtime.versions, separators=(",", ":"))
        print(
            f"READY ranking port={settings.port} metrics_port={runtime.metrics_port or ''} "
            f"app={settings.app_name} versions={versions}",
            flush=True,
        )
        if not stop.is_set():
            runtime.watch(stop)
        return 0
    finally:
        runtime.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
