"""`python -m recsys.gateway`: the gateway process."""

from __future__ import annotations

import logging

from recsys.common import config
from recsys.common.entry import run_service
from recsys.common.logs import configure_logging
from recsys.common.server import run_forever
from recsys.gateway.admission import Admission
from recsys.gateway.catalogue import load_catalogue
from recsys.gateway.events import AsyncPublisher, SyncProducer
from recsys.gateway.experiments import Experiment
from recsys.gateway.fallbacks import BatchLists
from recsys.gateway.hops import Backends
from recsys.gateway.pipeline import Recommender
from recsys.gateway.server import build_server
from recsys.gateway.settings import GatewaySettings

log = logging.getLogger("recsys.gateway")


def main() -> None:
    """Load the catalogue and fallbacks, connect to the backends, and serve until SIGTERM."""
    configure_logging("gateway", config.LOG_LEVEL.str())
    settings = GatewaySettings.from_env()
    experiment = Experiment.from_json(settings.experiments_json)
    popular = load_catalogue(settings.models_dir)
    batch = BatchLists.load(settings.batch_recs_path)
    backends = Backends(
        settings.features_addr, settings.candidates_addr, settings.ranking_addr, settings.ranking_app,
        settings.ranking_direct_addr,
    )
    bootstrap = config.KAFKA_BOOTSTRAP.str()
    publisher = AsyncPublisher(bootstrap, settings.event_buffer, interval_s=settings.event_interval_ms / 1000)
    producer = SyncProducer(bootstrap)
    missing = backends.warm_up()
    if missing:
        log.warning("backends not reachable yet; serving degraded until they are", extra={"backends": missing})
    admission = Admission(settings.max_full_path, settings.admission_wait_ms / 1000)
    recommender = Recommender(settings, backends, experiment, popular, batch, admission)
    server = build_server(settings, recommender, publisher, producer)
    try:
        run_forever(server)
    finally:
        publisher.close()
        producer.close()
        backends.close()


if __name__ == "__main__":
    run_service("gateway", main)
