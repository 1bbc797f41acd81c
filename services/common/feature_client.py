"""The one client of the FeatureService: a blocking form (`FeatureClient`: the candidate service, the gateway)
and an asyncio one (`AsyncFeatureClient`: ranking replicas) that build the same requests and share the deadline
rule, the optional `Breaker` and the error mapping.

Every failure comes out as a `FeatureCallError` whose `status` is the gRPC code's name, or `DISABLED` (no
address), `SKIPPED_NO_BUDGET` (the caller's budget is spent) or `BREAKER_OPEN` (skipped after failures) when no
call was made; `message` is the short text the candidate service reports, and `service_error(field)` the
FAILED_PRECONDITION / UNAVAILABLE a ranking replica answers. `UserContext` and `matrix_row` turn a reply into
the feature row of a model's spec.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import grpc
import numpy as np

from recsys.common.breaker import Breaker
from recsys.common.clients import aio_channel
from recsys.common.clients import channel as grpc_channel
from recsys.common.errors import FailedPrecondition, ServiceError, Unavailable
from recsys.v1 import features_pb2, features_pb2_grpc

NO_BUDGET_S = 0.0005  # a deadline this short cannot be met: the call is not made
DISABLED, SKIPPED_NO_BUDGET, BREAKER_OPEN = "DISABLED", "SKIPPED_NO_BUDGET", "BREAKER_OPEN"
Metadata = Sequence[tuple[str, str]]


class FeatureCallError(Exception):
    """A feature-service call that gave no reply. `called`: an RPC was made (else it was skipped)."""

    def __init__(self, status: str, message: str, address: str = "", details: str = "", called: bool = False):
        super().__init__(message)
        self.status, self.message, self.address, self.details, self.called = status, message, address, details, called

    def service_error(self, field: str, off_setting: str = "RECSYS_RANKING_FETCH_FEATURES") -> ServiceError:
        """The error of a request whose `field` was empty: FAILED_PRECONDITION when fetching is off (the
        `off_setting`), else UNAVAILABLE naming the feature service and its status."""
        if self.status == DISABLED:
            return FailedPrecondition(f"{field}: empty, and fetching features is off ({off_setting})")
        return Unavailable(
            f"{field}: empty, and the feature service at {self.address} failed: {self.status} {self.details}"
        )


def user_request(user_id: str, names: Sequence[str] = (), recent_limit: int = 0) -> features_pb2.GetUserFeaturesRequest:
    """The user's features (`names` in the caller's order; none: all) and up to `recent_limit` recent items."""
    return features_pb2.GetUserFeaturesRequest(user_id=user_id, feature_names=list(names), recent_limit=recent_limit)


def items_request(item_ids: Sequence[str], names: Sequence[str] = ()) -> features_pb2.GetItemFeaturesRequest:
    """One row per item id, in the same order."""
    return features_pb2.GetItemFeaturesRequest(item_ids=list(item_ids), feature_names=list(names))


def rpc_failure(exc: grpc.RpcError, address: str = "") -> FeatureCallError:
    """An RpcError as a FeatureCallError: status = its code's name (UNKNOWN when it has none)."""
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else ""
    message = f"feature service {code.name if code is not None else 'error'}"
    return FeatureCallError(code.name if code is not None else "UNKNOWN", message, address, details, True)


@dataclass
class UserContext:
    """What is known about the user: feature row (spec order, NaN = unknown) and recent items, oldest first."""

    features: np.ndarray | None = None
    found: bool = False
    recent_items: list[str] = field(default_factory=list)
    source: str = "none"  # request | feature-service | none
    error: str = ""

    @classmethod
    def from_reply(cls, reply: features_pb2.GetUserFeaturesResponse, names: list[str]) -> UserContext:
        row, found = matrix_row(reply.features, names)
        items = list(reversed(reply.recent_item_ids))  # the service answers most recent first
        return cls(features=row, found=found or reply.recent_found, recent_items=items, source="feature-service")


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


class _Calls:
    """What both forms share: the settings, the checks before a call and the bookkeeping after it."""

    def __init__(self, address: str, timeout_s: float | None, breaker: Breaker | None, recent_limit: int) -> None:
        self.address = address.strip()
        self.timeout_s = timeout_s
        self.breaker = breaker
        self.recent_limit = recent_limit

    def _user_request(self, user_id, names, recent_limit) -> features_pb2.GetUserFeaturesRequest:
        return user_request(user_id, names, self.recent_limit if recent_limit is None else recent_limit)

    def _deadline(self, enabled: bool, timeout_s: float | None) -> float | None:
        """This call's deadline: the client's timeout, cut to the caller's `timeout_s` (its budget). Raises
        when no call is to be made: no feature service, no budget left, or the breaker open."""
        if not enabled:
            raise FeatureCallError(DISABLED, "no feature service configured", self.address)
        if timeout_s is not None and timeout_s <= NO_BUDGET_S:
            raise FeatureCallError(SKIPPED_NO_BUDGET, "feature service skipped: no time left", self.address)
        if self.breaker is not None and not self.breaker.allow():
            message = f"feature service skipped after failures: {self.breaker.last_error}"
            raise FeatureCallError(BREAKER_OPEN, message, self.address)
        if timeout_s is None:
            return self.timeout_s
        return timeout_s if self.timeout_s is None else min(self.timeout_s, timeout_s)

    def _failed(self, exc: grpc.RpcError) -> FeatureCallError:
        error = rpc_failure(exc, self.address)
        if self.breaker is not None:
            self.breaker.failure(error.message)
        return error

    def _answered(self, reply):
        if self.breaker is not None:
            self.breaker.success()
        return reply


class FeatureClient(_Calls):
    """Blocking calls over a channel opened at once (`address=""`: disabled), or over a given `channel` or
    `stub` (any object with the FeatureService's unary methods)."""

    def __init__(
        self, address: str = "", timeout_s: float | None = None, breaker: Breaker | None = None, recent_limit: int = 0,
        service_config: str | None = None, channel: grpc.Channel | None = None, stub=None,
    ) -> None:
        super().__init__(address, timeout_s, breaker, recent_limit)
        if channel is None and stub is None and self.address:
            channel = grpc_channel(self.address, service_config=service_config)
        self.channel = channel
        self._stub = stub if stub is not None or channel is None else features_pb2_grpc.FeatureServiceStub(channel)

    @classmethod
    def wrap(cls, client_or_stub) -> FeatureClient:
        """`client_or_stub` when it is a FeatureClient, else a client calling it (a stub or a test double)."""
        return client_or_stub if isinstance(client_or_stub, FeatureClient) else cls(stub=client_or_stub)

    @property
    def enabled(self) -> bool:
        return self._stub is not None

    def user(
        self, user_id: str, names: Sequence[str] = (), recent_limit: int | None = None,
        timeout_s: float | None = None, metadata: Metadata = (),
    ) -> features_pb2.GetUserFeaturesResponse:
        """The user's features and recent items (`recent_limit`: the client's by default) in one call."""
        request = self._user_request(user_id, names, recent_limit)
        return self._call("GetUserFeatures", request, timeout_s, metadata)

    def items(
        self, item_ids: Sequence[str], names: Sequence[str] = (), timeout_s: float | None = None,
        metadata: Metadata = (),
    ) -> features_pb2.GetItemFeaturesResponse:
        return self._call("GetItemFeatures", items_request(item_ids, names), timeout_s, metadata)

    def user_context(self, user_id: str, names: list[str], metadata: Metadata = ()) -> UserContext:
        """`user` as a UserContext in `names`' order; a failure gives an empty context with the error recorded."""
        try:
            return UserContext.from_reply(self.user(user_id, metadata=metadata), names)
        except FeatureCallError as exc:
            return UserContext(error=exc.message)

    def _call(self, method: str, request, timeout_s: float | None, metadata: Metadata):
        deadline = self._deadline(self._stub is not None, timeout_s)
        try:
            reply = getattr(self._stub, method)(request, timeout=deadline, metadata=metadata)
        except grpc.RpcError as exc:
            raise self._failed(exc) from exc
        return self._answered(reply)

    def close(self) -> None:
        if self.channel is not None:
            self.channel.close()


class AsyncFeatureClient(_Calls):
    """asyncio calls over a grpc.aio channel opened on first use, inside the running loop (`address=""`:
    disabled)."""

    def __init__(
        self, address: str = "", timeout_s: float | None = None, breaker: Breaker | None = None, recent_limit: int = 0,
        service_config: str | None = None,
    ) -> None:
        super().__init__(address, timeout_s, breaker, recent_limit)
        self.service_config = service_config
        self._channel: grpc.aio.Channel | None = None
        self._stub: features_pb2_grpc.FeatureServiceStub | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    async def user(
        self, user_id: str, names: Sequence[str] = (), recent_limit: int | None = None,
        timeout_s: float | None = None, metadata: Metadata = (),
    ) -> features_pb2.GetUserFeaturesResponse:
        request = self._user_request(user_id, names, recent_limit)
        return await self._call("GetUserFeatures", request, timeout_s, metadata)

    async def items(
        self, item_ids: Sequence[str], names: Sequence[str] = (), timeout_s: float | None = None,
        metadata: Metadata = (),
    ) -> features_pb2.GetItemFeaturesResponse:
        return await self._call("GetItemFeatures", items_request(item_ids, names), timeout_s, metadata)

    async def _call(self, method: str, request, timeout_s: float | None, metadata: Metadata):
        deadline = self._deadline(self.enabled, timeout_s)
        if self._stub is None:  # TLS / mTLS when RECSYS_TLS_* configure it
            self._channel = aio_channel(self.address, service_config=self.service_config)
            self._stub = features_pb2_grpc.FeatureServiceStub(self._channel)
        try:
            reply = await getattr(self._stub, method)(request, timeout=deadline, metadata=metadata)
        except grpc.RpcError as exc:
            raise self._failed(exc) from exc
        return self._answered(reply)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = self._stub = None
