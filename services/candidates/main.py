"""The candidates process: Milvus connection, active-version follower, feature client, retriever and the gRPC
server, until SIGTERM / SIGINT (`python -m recsys.candidates`, `recsys candidates serve`)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from recsys.candidates.active import ActiveIndex
from recsys.candidates.changes import CatalogChanges
from recsys.candidates.milvus import Milvus, connect
from recsys.candidates.server import create_server
from recsys.candidates.service import Retriever
from recsys.candidates.settings import CandidateSettings, MilvusTarget, catalog_writer
from recsys.candidates.writer_child import ChildWriter
from recsys.common import config
from recsys.common.breaker import Breaker
from recsys.common.feature_client import FeatureClient
from recsys.common.kafka.changelog import ItemChangeFollower
from recsys.common.pacing import DutyCycle
from recsys.common.server import GrpcServer, ServerOptions, run_forever
from recsys.model.spec import HISTORY_LEN


@dataclass
class CandidateService:
    """The assembled service: Milvus connection, version follower, retriever and gRPC server."""

    milvus: Milvus
    active: ActiveIndex
    retriever: Retriever
    fetcher: FeatureClient
    server: GrpcServer
    changes: CatalogChanges | None = None
    follower: ItemChangeFollower | None = None

    def close(self) -> None:
        self.server.stop(grace_s=1.0)
        self.stop_changes()
        self.active.stop()
        self.retriever.close()
        self.fetcher.close()
        self.milvus.close()

    def stop_changes(self) -> None:
        if self.follower is not None:
            self.follower.stop()
        if self.changes is not None:
            self.changes.stop()


def follow_items(changes: CatalogChanges, bootstrap: str | None = None) -> ItemChangeFollower:
    """The items changelog into `changes`, on a thread (Kafka down: it retries; requests are served meanwhile)."""
    return ItemChangeFollower(config.KAFKA_ITEMS_TOPIC.str(), changes.apply, bootstrap, name="candidates").start()


def build_service(port: int | None = None, target: MilvusTarget | None = None, follow: bool = True) -> CandidateService:
    """Wire the service from the environment (tests pass a port and a Milvus target; `follow=False`: no items
    changelog, for tests without Kafka)."""
    settings = CandidateSettings.from_env()
    if port is not None:
        settings = replace(settings, port=port)
    if target is not None:
        settings = replace(settings, milvus=target)
    milvus = connect(settings.milvus, timeout_s=10.0, lazy=True)
    breaker = Breaker(threshold=3, cooldown_s=settings.breaker_cooldown_s)
    active = ActiveIndex(milvus, settings.collection, settings.models_dir, settings.refresh_s, breaker).start()
    version = active.current
    # Fetch the whole stored history: all of it is excluded as seen; the user tower reads only its tail.
    history_len = max(HISTORY_LEN, version.encoder.history_len if version is not None else 0)
    fetcher = FeatureClient(
        settings.features_addr,
        timeout_s=settings.features_timeout_s,
        breaker=Breaker(threshold=3, cooldown_s=settings.breaker_cooldown_s),
        recent_limit=history_len,
    )
    where, nice = catalog_writer()
    writer = ChildWriter(milvus.endpoint, nice).start() if where == "child" else None
    changes = CatalogChanges(active, pace=DutyCycle.from_env(), writer=writer).start()
    follower = follow_items(changes) if follow else None
    retriever = Retriever(active, milvus, fetcher, settings.retrieval, breaker, changes=changes)
    server = create_server(retriever, ServerOptions.from_env(settings.port))
    return CandidateService(milvus, active, retriever, fetcher, server, changes, follower)


def main(port: int | None = None) -> int:
    """Serve until SIGTERM / SIGINT."""
    service = build_service(port=port)
    try:
        run_forever(service.server)
    finally:
        service.stop_changes()
        service.active.stop()
        service.retriever.close()
        service.fetcher.close()
        service.milvus.close()
    return 0
