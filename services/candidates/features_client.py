"""The user's features and recent items: from the request, else the feature service, else nothing.

The feature service is optional for retrieval: calls carry a short deadline, run in parallel, and a
breaker skips them while the service keeps failing; without features the user tower still embeds
the user (cold start).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import grpc
import numpy as np

from recsys.candidates.breaker import Breaker
from recsys.common.clients import channel as grpc_channel
from recsys.v1 import features_pb2, features_pb2_grpc

log = logging.getLogger("recsys.candidates.features")


@dataclass
class UserContext:
    """What is known about the user: feature row (spec order, NaN = unknown) and recent items, oldest first."""

    features: np.ndarray | None = None
    found: bool = False
    recent_items: list[str] = field(default_factory=list)
    source: str = "none"  # request | feature-service | none
    error: str = ""


def matrix_row(matrix: features_pb2.FeatureMatrix, names: list[str]) -> tuple[np.ndarray | None, bool]:
    """The first row of a FeatureMatrix re-ordered to `names` (NaN where a name is absent)."""
    n_cols = len(matrix.names)
    if not matrix.entity_ids or n_cols == 0:
        return None, False
    values = np.asarray(matrix.values[:n_cols], dtype=np.float32)
    if len(values) < n_cols:
        return None, False
    found = bool(matrix.found[0]) if len(matrix.found) else True
    position = {name: i for i, name in enumerate(matrix.names)}
    row = np.full(len(names), np.nan, dtype=np.float32)
    for j, name in enumerate(names):
        i = position.get(name)
        if i is not None:
            row[j] = values[i]
    return row, found


class FeatureFetcher:
    """Fetches one user's features and recent items from the FeatureService with a short deadline."""

    def __init__(self, address: str, timeout_s: float, history_len: int, breaker: Breaker) -> None:
        self.address = address.strip()
        self.timeout_s = timeout_s
        self.history_len = history_len
        self.breaker = breaker
        self._channel = grpc_channel(self.address) if self.address else None
        self._stub = features_pb2_grpc.FeatureServiceStub(self._channel) if self._channel else None

    @property
    def enabled(self) -> bool:
        return self._stub is not None

    def fetch(self, user_id: str, feature_names: list[str], metadata=()) -> UserContext:
        """Features and recent items in one call; any failure gives an empty context with the error recorded."""
        if self._stub is None:
            return UserContext(error="no feature service configured")
        if not self.breaker.allow():
            return UserContext(error=f"feature service skipped after failures: {self.breaker.last_error}")
        try:
            reply = self._stub.GetUserFeatures(
                features_pb2.GetUserFeaturesRequest(user_id=user_id, recent_limit=self.history_len),
                timeout=self.timeout_s,
                metadata=metadata,
            )
        except grpc.RpcError as exc:
            error = f"feature service {exc.code().name if hasattr(exc, 'code') else 'error'}"
            self.breaker.failure(error)
            return UserContext(error=error)
        self.breaker.success()
        row, found = matrix_row(reply.features, feature_names)
        items = list(reversed(reply.recent_item_ids))  # the service answers most recent first
        return UserContext(features=row, found=found or reply.recent_found, recent_items=items,
                           source="feature-service")

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
