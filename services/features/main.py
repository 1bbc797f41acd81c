"""The features process: FeatureService over the configured Feast store until SIGTERM / SIGINT
(`python -m recsys.features`, `recsys features serve`)."""

from __future__ import annotations

from recsys.common.server import ServerOptions, run_forever
from recsys.features.server import create_server
from recsys.features.service import OnlineFeatures
from recsys.features.settings import PORT, FeatureSettings
from recsys.features.store import open_store


def main(port: int | None = None) -> int:
    """Serve until SIGTERM / SIGINT (the store's registry is resolved here, once)."""
    settings = FeatureSettings.from_env()
    online = OnlineFeatures(open_store(settings), settings)
    run_forever(create_server(online, ServerOptions.from_env(PORT.int() if port is None else port)))
    return 0
