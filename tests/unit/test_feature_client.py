"""The shared FeatureService client without a feature service: request building, deadlines, the breaker,
error mapping (candidates' messages, the gateway's statuses, ranking's gRPC errors) and `matrix_row`."""

from __future__ import annotations

import asyncio
import socket
import time

import grpc
import numpy as np
import pytest

from recsys.common.breaker import Breaker
from recsys.common.errors import FailedPrecondition, Unavailable
from recsys.common.feature_client import (
    BREAKER_OPEN,
    DISABLED,
    SKIPPED_NO_BUDGET,
    AsyncFeatureClient,
    FeatureCallError,
    FeatureClient,
    matrix_row,
)
from recsys.v1 import features_pb2


def test_matrix_row_reorders_to_the_spec_and_marks_missing():
    matrix = features_pb2.FeatureMatrix(names=["b", "a"], entity_ids=["u"], found=[True], values=[2.0, 1.0])
    row, found = matrix_row(matrix, ["a", "b", "c"])
    assert found and row[:2].tolist() == [1.0, 2.0] and np.isnan(row[2])
    assert matrix_row(features_pb2.FeatureMatrix(), ["a"]) == (None, False)


def test_breaker_opens_after_failures_and_probes_after_cooldown():
    breaker = Breaker(threshold=2, cooldown_s=0.05)
    assert breaker.allow()
    breaker.failure("x")
    assert breaker.allow()
    breaker.failure("x")
    assert breaker.is_open and not breaker.allow()
    time.sleep(0.06)
    assert breaker.allow() and not breaker.allow()  # exactly one probe per cool-down
    breaker.success()
    assert not breaker.is_open and breaker.allow()


class _Unavailable(grpc.RpcError):
    def code(self):
        return grpc.StatusCode.UNAVAILABLE

    def details(self):
        return "connection refused"


class _Stub:
    """GetUserFeatures / GetItemFeatures recording (request, timeout, metadata); fails while `down`."""

    def __init__(self):
        self.calls, self.down = [], False

    def _answer(self, request, timeout, metadata, reply):
        self.calls.append((request, timeout, metadata))
        if self.down:
            raise _Unavailable()
        return reply

    def GetUserFeatures(self, request, timeout, metadata):
        matrix = features_pb2.FeatureMatrix(names=["b", "a"], entity_ids=[request.user_id], found=[True],
                                            values=[2.0, 1.0])
        reply = features_pb2.GetUserFeaturesResponse(features=matrix, recent_item_ids=["i9", "i8"], recent_found=True)
        return self._answer(request, timeout, metadata, reply)

    def GetItemFeatures(self, request, timeout, metadata):
        return self._answer(request, timeout, metadata, features_pb2.GetItemFeaturesResponse())


def test_requests_deadlines_and_the_user_context():
    stub = _Stub()
    client = FeatureClient(timeout_s=0.05, recent_limit=7, stub=stub)
    context = client.user_context("u1", ["a", "b"], metadata=(("x-request-id", "r"),))
    request, timeout, metadata = stub.calls[-1]
    assert (request.user_id, request.recent_limit, list(request.feature_names)) == ("u1", 7, [])
    assert timeout == 0.05 and metadata == (("x-request-id", "r"),)
    assert context.features.tolist() == [1.0, 2.0] and context.found and context.source == "feature-service"
    assert context.recent_items == ["i8", "i9"]  # oldest first

    client.user("u1", ["a"], recent_limit=3, timeout_s=0.01)
    request, timeout, _ = stub.calls[-1]
    assert (request.recent_limit, list(request.feature_names), timeout) == (3, ["a"], 0.01)  # the smaller deadline
    client.items(["i1", "i2"], ["x"], timeout_s=1.0)
    request, timeout, _ = stub.calls[-1]
    assert (list(request.item_ids), list(request.feature_names), timeout) == (["i1", "i2"], ["x"], 0.05)

    with pytest.raises(FeatureCallError) as exc:
        client.user("u1", timeout_s=0.0)
    assert exc.value.status == SKIPPED_NO_BUDGET and not exc.value.called and len(stub.calls) == 3


def test_failures_open_the_breaker_with_the_candidate_services_messages():
    stub = _Stub()
    stub.down = True
    client = FeatureClient(timeout_s=0.05, breaker=Breaker(threshold=2, cooldown_s=60.0), stub=stub)
    for _ in range(2):
        assert client.user_context("u1", ["a"]).error == "feature service UNAVAILABLE"
    skipped = client.user_context("u1", ["a"]).error
    assert skipped == "feature service skipped after failures: feature service UNAVAILABLE"
    assert len(stub.calls) == 2
    with pytest.raises(FeatureCallError) as exc:
        client.items(["i1"])
    assert exc.value.status == BREAKER_OPEN and not exc.value.called

    disabled = FeatureClient("")
    assert not disabled.enabled and disabled.user_context("u1", ["a"]).error == "no feature service configured"
    with pytest.raises(FeatureCallError) as exc:
        disabled.user("u1")
    assert exc.value.status == DISABLED


def test_a_test_double_or_a_client_is_wrapped_once():
    client = FeatureClient(stub=_Stub())
    assert FeatureClient.wrap(client) is client
    assert FeatureClient.wrap(_Stub()).enabled


def test_async_client_maps_failures_to_ranking_errors():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def run():
        off = AsyncFeatureClient("", timeout_s=0.5)
        with pytest.raises(FeatureCallError) as exc:
            await off.user("u1", ["a"])
        error = exc.value.service_error("user_features")
        assert isinstance(error, FailedPrecondition)
        assert error.message == "user_features: empty, and fetching features is off (RECSYS_RANKING_FETCH_FEATURES)"

        dead = AsyncFeatureClient(f"127.0.0.1:{port}", timeout_s=2.0)
        try:
            with pytest.raises(FeatureCallError) as exc:
                await dead.items(["i1"], ["x"])
        finally:
            await dead.close()
        error = exc.value.service_error("item_features")
        assert isinstance(error, Unavailable) and exc.value.called
        assert error.message.startswith(f"item_features: empty, and the feature service at 127.0.0.1:{port} failed: ")

    asyncio.run(run())
