"""Fetch features a Rank request left empty from the feature service (optional; asyncio, inside a replica)."""

from __future__ import annotations

import grpc

from recsys.common.clients import aio_channel
from recsys.common.errors import FailedPrecondition, Unavailable
from recsys.v1 import features_pb2, features_pb2_grpc


class FeatureFetcher:
    """A lazily opened grpc.aio channel to FeatureService; `address=""` means fetching is off."""

    def __init__(self, address: str, timeout_ms: float) -> None:
        self.address = address
        self.timeout_s = timeout_ms / 1000.0
        self._channel: grpc.aio.Channel | None = None
        self._stub: features_pb2_grpc.FeatureServiceStub | None = None

    def _get_stub(self, field: str) -> features_pb2_grpc.FeatureServiceStub:
        if not self.address:
            raise FailedPrecondition(f"{field}: empty, and fetching features is off (RECSYS_RANKING_FETCH_FEATURES)")
        if self._stub is None:
            self._channel = aio_channel(self.address)  # TLS / mTLS when RECSYS_TLS_* configure it
            self._stub = features_pb2_grpc.FeatureServiceStub(self._channel)
        return self._stub

    async def user(self, user_id: str, names: list[str]) -> features_pb2.FeatureMatrix:
        """One row of the user's features (names in the model's order)."""
        stub = self._get_stub("user_features")
        request = features_pb2.GetUserFeaturesRequest(user_id=user_id, feature_names=names)
        reply = await self._call(stub.GetUserFeatures, request, "user_features")
        return reply.features

    async def items(self, item_ids: list[str], names: list[str]) -> features_pb2.FeatureMatrix:
        """One row per item id, in the same order."""
        stub = self._get_stub("item_features")
        request = features_pb2.GetItemFeaturesRequest(item_ids=item_ids, feature_names=names)
        reply = await self._call(stub.GetItemFeatures, request, "item_features")
        return reply.features

    async def _call(self, method, request, field: str):
        try:
            return await method(request, timeout=self.timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise Unavailable(
                f"{field}: empty, and the feature service at {self.address} failed: {exc.code().name} {exc.details()}"
            ) from exc

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = self._stub = None
