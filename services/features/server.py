"""The gRPC surface of the FeatureService (logic in `recsys.features.service`)."""

from __future__ import annotations

import grpc

from recsys.common.errors import InvalidArgument
from recsys.common.server import GrpcServer, ServerOptions
from recsys.features.service import MAX_RECENT_LIMIT, OnlineFeatures
from recsys.v1 import features_pb2, features_pb2_grpc

SERVICE_NAME = features_pb2.DESCRIPTOR.services_by_name["FeatureService"].full_name


class FeatureServicer(features_pb2_grpc.FeatureServiceServicer):
    def __init__(self, online: OnlineFeatures) -> None:
        self.online = online

    def GetUserFeatures(self, request: features_pb2.GetUserFeaturesRequest, context: grpc.ServicerContext):
        if not 0 <= request.recent_limit <= MAX_RECENT_LIMIT:
            raise InvalidArgument("recent_limit", f"must be between 0 and {MAX_RECENT_LIMIT}")
        matrix = self.online.user_features(request.user_id, request.feature_names)
        if request.recent_limit == 0:
            return features_pb2.GetUserFeaturesResponse(features=matrix)
        items, found = self.online.recent_items(request.user_id, request.recent_limit)
        return features_pb2.GetUserFeaturesResponse(features=matrix, recent_item_ids=items, recent_found=found)

    def GetItemFeatures(self, request: features_pb2.GetItemFeaturesRequest, context: grpc.ServicerContext):
        matrix = self.online.item_features(request.item_ids, request.feature_names)
        return features_pb2.GetItemFeaturesResponse(features=matrix)

    def GetRecentItems(self, request: features_pb2.GetRecentItemsRequest, context: grpc.ServicerContext):
        items, found = self.online.recent_items(request.user_id, request.limit)
        return features_pb2.GetRecentItemsResponse(item_ids=items, found=found)

    def Push(self, request: features_pb2.PushRequest, context: grpc.ServicerContext):
        result = self.online.push(request.events)
        return features_pb2.PushResponse(applied=result.applied, duplicates=result.duplicates)


def create_server(online: OnlineFeatures, options: ServerOptions) -> GrpcServer:
    """The FeatureService on the shared bootstrap (health, reflection, metrics, draining)."""
    servicer = FeatureServicer(online)
    return GrpcServer(
        "features",
        [lambda s: features_pb2_grpc.add_FeatureServiceServicer_to_server(servicer, s)],
        [SERVICE_NAME],
        options,
    )
