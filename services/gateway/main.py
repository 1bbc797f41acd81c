"""The gateway process: catalogue and fallbacks, backends, Kafka publishers, the gRPC server, until SIGTERM
(`python -m recsys.gateway`, `recsys gateway serve`)."""

from __future__ import annotations

import logging
from dataclasses import replace

from recsys.common import config
from recsys.common.kafka.changelog import ItemChangeFollower
from recsys.common.logs import configure_logging
from recsys.common.pacing import DutyCycle, PacedGate
from recsys.common.server import run_forever
from recsys.gateway.admission import Admission
from recsys.gateway.catalogue import load_catalogue
from recsys.gateway.events import AsyncPublisher, SyncProducer
from recsys.gateway.experiments import Experiment
from recsys.gateway.fallbacks import BatchLists
from recsys.gateway.hops import Backends
from recsys.gateway.items import LiveCatalog
from recsys.gateway.pipeline import Recommender
from recsys.gateway.rollout import CanaryExperiment, RolloutFollower
from recsys.gateway.server import create_server
from recsys.gateway.service import CatalogService, EventService, RecommendService
from recsys.gateway.settings import GatewaySettings

log = logging.getLogger("recsys.gateway")


def main(port: int | None = None) -> int:
    """Load the catalogue and fallbacks, connect to the backends, and serve until SIGTERM."""
    configure_logging("gateway", config.LOG_LEVEL.str())
    settings = GatewaySettings.from_env()
    if port is not None:
        settings = replace(settings, port=port)
    refresh_s = settings.rollout_refresh_s
    follower = RolloutFollower(settings.models_dir, refresh_s) if refresh_s > 0 else None
    experiment = CanaryExperiment(Experiment.from_json(settings.experiments_json, settings.exploration), follower)
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
    admission = Admission(settings.max_full_path, settings.admission_wait_ms / 1000, settings.admission_adaptive)
    live = LiveCatalog(popular.genres)
    follower = _follow_items(live, bootstrap)
    if not follower.wait_caught_up(settings.catalog_wait_s):  # a restart must not serve what was deleted before
        log.warning("serving before the items changelog caught up (Kafka slow or down)",
                    extra={"waited_s": settings.catalog_wait_s})
    # after the follower made the items topic (compacted): a metadata request must not auto-create it
    producer.warm([config.KAFKA_EVENTS_TOPIC.str(), config.KAFKA_ITEMS_TOPIC.str()])
    recommender = Recommender(settings, backends, experiment, popular, batch, admission, live)
    server = create_server(settings, RecommendService(recommender, publisher, settings), EventService(producer),
                           CatalogService(producer, live, PacedGate(DutyCycle.from_env())))
    try:
        run_forever(server)
    finally:
        follower.stop()
        publisher.close()
        producer.close()
        backends.close()
    return 0


def _follow_items(live: LiveCatalog, bootstrap: str) -> ItemChangeFollower:
    """The items changelog into the live catalogue, on a thread (from the topic's beginning; the topic is made,
    compacted, when missing)."""
    return ItemChangeFollower(config.KAFKA_ITEMS_TOPIC.str(), live.apply, bootstrap, name="gateway",
                              pace=DutyCycle.from_env()).start()
