"""The gateway's gRPC surface: RecommendService, EventService and CatalogService (logic in
`recsys.gateway.service`)."""

from __future__ import annotations

import grpc

from recsys.common.interceptors import request_id_from
from recsys.common.ratelimit import KeyedRateLimiter, RateLimitInterceptor
from recsys.common.server import GrpcServer, ServerOptions
from recsys.gateway.service import CatalogService, EventService, RecommendService
from recsys.gateway.settings import GatewaySettings
from recsys.v1 import (
    catalog_pb2,
    catalog_pb2_grpc,
    events_pb2,
    events_pb2_grpc,
    recommend_pb2,
    recommend_pb2_grpc,
)


class RecommendServicer(recommend_pb2_grpc.RecommendServiceServicer):
    def __init__(self, service: RecommendService) -> None:
        self.service = service

    def Recommend(self, request: recommend_pb2.RecommendRequest, context: grpc.ServicerContext):
        return self.service.recommend(request, context.time_remaining(), request_id_from(context))

    def SimilarItems(self, request: recommend_pb2.SimilarItemsQuery, context: grpc.ServicerContext):
        return self.service.similar(request, context.time_remaining(), request_id_from(context))


class EventServicer(events_pb2_grpc.EventServiceServicer):
    def __init__(self, service: EventService) -> None:
        self.service = service

    def Publish(self, request: events_pb2.PublishRequest, context: grpc.ServicerContext):
        return self.service.publish(request, context.time_remaining())


class CatalogServicer(catalog_pb2_grpc.CatalogServiceServicer):
    def __init__(self, service: CatalogService) -> None:
        self.service = service

    def UpsertItems(self, request: catalog_pb2.UpsertItemsRequest, context: grpc.ServicerContext):
        return self.service.upsert(request, context.time_remaining())

    def DeleteItems(self, request: catalog_pb2.DeleteItemsRequest, context: grpc.ServicerContext):
        return self.service.delete(request, context.time_remaining())


def create_server(settings: GatewaySettings, recommend: RecommendService, events: EventService,
                  catalog: CatalogService | None = None) -> GrpcServer:
    """The gateway's GrpcServer (not started): authentication from RECSYS_AUTH_* (in the bootstrap), then the
    per-key rate limit of RECSYS_GATEWAY_RATE_LIMIT_* on both services."""
    recommend_servicer = RecommendServicer(recommend)
    events_servicer = EventServicer(events)
    adders = [
        lambda s: recommend_pb2_grpc.add_RecommendServiceServicer_to_server(recommend_servicer, s),
        lambda s: events_pb2_grpc.add_EventServiceServicer_to_server(events_servicer, s),
    ]
    names = [
        recommend_pb2.DESCRIPTOR.services_by_name["RecommendService"].full_name,
        events_pb2.DESCRIPTOR.services_by_name["EventService"].full_name,
    ]
    if catalog is not None:
        catalog_servicer = CatalogServicer(catalog)
        adders.append(lambda s: catalog_pb2_grpc.add_CatalogServiceServicer_to_server(catalog_servicer, s))
        names.append(catalog_pb2.DESCRIPTOR.services_by_name["CatalogService"].full_name)
    limiter = KeyedRateLimiter.from_env()
    return GrpcServer(
        "gateway",
        adders,
        names,
        ServerOptions.from_env(settings.port),
        interceptors=[RateLimitInterceptor(limiter)] if limiter is not None else [],
    )
