"""The gRPC surface of the CandidateService (logic in `recsys.candidates.retrieval`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import grpc

from recsys.candidates import settings
from recsys.candidates.active import ActiveIndex
from recsys.candidates.milvus import Milvus, MilvusTarget, connect
from recsys.candidates.retrieval import RetrievalSettings, Retriever
from recsys.candidates.schema import parse_params
from recsys.common.breaker import Breaker
from recsys.common.feature_client import FeatureClient
from recsys.common.server import GrpcServer, ServerOptions, run_forever
from recsys.model.spec import HISTORY_LEN
from recsys.v1 import candidates_pb2, candidates_pb2_grpc

log = logging.getLogger("recsys.candidates.server")

SERVICE_NAME = candidates_pb2.DESCRIPTOR.services_by_name["CandidateService"].full_name


class CandidateServicer(candidates_pb2_grpc.CandidateServiceServicer):
    def __init__(self, retriever: Retriever) -> None:
        self.retriever = retriever

    def Retrieve(self, request: candidates_pb2.RetrieveRequest, context: grpc.ServicerContext):
        return self.retriever.retrieve(request, context.time_remaining(), _forwarded(context))

    def SimilarItems(self, request: candidates_pb2.SimilarItemsRequest, context: grpc.ServicerContext):
        return self.retriever.similar_items(request, context.time_remaining())


def _forwarded(context: grpc.ServicerContext) -> tuple[tuple[str, str], ...]:
    return tuple((k, v) for k, v in (context.invocation_metadata() or ()) if k == "x-request-id")


@dataclass
class CandidateService:
    """The assembled service: Milvus connection, version follower, retriever and gRPC server."""

    milvus: Milvus
    active: ActiveIndex
    retriever: Retriever
    fetcher: FeatureClient
    server: GrpcServer

    def close(self) -> None:
        self.server.stop(grace_s=1.0)
        self.active.stop()
        self.retriever.close()
        self.fetcher.close()
        self.milvus.close()


def build_service(port: int | None = None, target: MilvusTarget | None = None) -> CandidateService:
    """Wire the service from the environment (tests pass a port and a Milvus target)."""
    target = target or MilvusTarget.from_env()
    milvus = connect(target, timeout_s=10.0, lazy=True)
    breaker = Breaker(threshold=3, cooldown_s=settings.BREAKER_COOLDOWN_S.float())
    active = ActiveIndex(
        milvus,
        settings.MILVUS_COLLECTION.str(),
        settings.MODELS_DIR.str(),
        settings.REFRESH_S.float(),
        breaker,
    ).start()
    version = active.current
    # Fetch the whole stored history: all of it is excluded as seen; the user tower reads only its tail.
    history_len = max(HISTORY_LEN, version.encoder.history_len if version is not None else 0)
    fetcher = FeatureClient(
        settings.FEATURES_ADDR.str(),
        timeout_s=settings.FEATURES_TIMEOUT_MS.float() / 1000.0,
        breaker=Breaker(threshold=3, cooldown_s=settings.BREAKER_COOLDOWN_S.float()),
        recent_limit=history_len,
    )
    retriever = Retriever(
        active,
        milvus,
        fetcher,
        RetrievalSettings(
            max_k=settings.MAX_K.int(),
            max_exclude=settings.MAX_EXCLUDE.int(),
            search_timeout_s=settings.SEARCH_TIMEOUT_MS.float() / 1000.0,
            cold_start_ann_share=settings.COLD_START_ANN_SHARE.float(),
            search_params=parse_params(settings.SEARCH_PARAMS.str(), "RECSYS_MILVUS_SEARCH_PARAMS"),
            search_batch=settings.SEARCH_BATCH.int(),
        ),
        breaker,
    )
    servicer = CandidateServicer(retriever)
    server = GrpcServer(
        "candidates",
        [lambda s: candidates_pb2_grpc.add_CandidateServiceServicer_to_server(servicer, s)],
        [SERVICE_NAME],
        ServerOptions.from_env(settings.PORT.int() if port is None else port),
    )
    return CandidateService(milvus, active, retriever, fetcher, server)


def main(port: int | None = None) -> None:
    """Serve until SIGTERM / SIGINT."""
    service = build_service(port=port)
    try:
        run_forever(service.server)
    finally:
        service.active.stop()
        service.retriever.close()
        service.fetcher.close()
        service.milvus.close()
