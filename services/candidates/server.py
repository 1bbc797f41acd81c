"""The gRPC surface of the CandidateService (logic in `recsys.candidates.service`)."""

from __future__ import annotations

import grpc

from recsys.candidates.service import Retriever
from recsys.common.server import GrpcServer, ServerOptions
from recsys.v1 import candidates_pb2, candidates_pb2_grpc

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


def create_server(retriever: Retriever, options: ServerOptions) -> GrpcServer:
    """The CandidateService on the shared bootstrap (health, reflection, metrics, draining)."""
    servicer = CandidateServicer(retriever)
    return GrpcServer(
        "candidates",
        [lambda s: candidates_pb2_grpc.add_CandidateServiceServicer_to_server(servicer, s)],
        [SERVICE_NAME],
        options,
    )
