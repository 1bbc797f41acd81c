"""The ranking process: `python -m recsys.ranking` / `recsys ranking serve`.

Starts Ray (local, bounded) or joins RECSYS_RAY_ADDRESS, starts Serve's gRPC proxy and the ranker, prints
one READY line, follows the registry's `latest` for hot swaps, and on SIGTERM / SIGINT shuts Serve and Ray
down before exiting (see `runtime` for why Serve's proxy replaces the shared GrpcServer bootstrap).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
from typing import Any

from recsys.common import config
from recsys.common.logs import configure_logging
from recsys.ranking.runtime import RankingRuntime
from recsys.ranking.settings import MODEL_VERSIONS, PORT, RankingSettings

log = logging.getLogger("recsys.ranking.main")


def main(port: int | None = None, versions: str = "") -> int:
    """Run until SIGTERM / SIGINT; returns the exit code. `port` and `versions` ("dcn=v3,lightgbm=v2")
    override RECSYS_RANKING_PORT and RECSYS_RANKING_MODEL_VERSIONS (set in the environment, which the local
    Ray's processes inherit)."""
    if port is not None:
        os.environ[PORT.name] = str(port)
    if versions:
        os.environ[MODEL_VERSIONS.name] = versions
    configure_logging("ranking", config.LOG_LEVEL.str())
    settings = RankingSettings.from_env()
    stop = threading.Event()

    def _handle(signum: int, _frame: Any) -> None:
        log.info("signal received, stopping", extra={"signal": signum})
        stop.set()

    previous = {sig: signal.signal(sig, _handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    runtime = RankingRuntime(settings)
    try:
        runtime.start()
        active = json.dumps(runtime.versions, separators=(",", ":"))
        print(
            f"READY ranking port={settings.port} metrics_port={runtime.metrics_port or ''} "
            f"app={settings.app_name} versions={active}",
            flush=True,
        )
        if not stop.is_set():
            runtime.watch(stop)
        return 0
    finally:
        runtime.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
