"""Stubs of the services the gateway calls, and a helper to run a hop with a deadline."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc

from recsys.common.clients import channel, retry_service_config
from recsys.common.feature_client import NO_BUDGET_S, SKIPPED_NO_BUDGET, FeatureCallError, FeatureClient
from recsys.gateway.ranking_route import RankingRoute
from recsys.v1 import (
    candidates_pb2_grpc,
    recommend_pb2,
)


@dataclass
class HopResult:
    """What one hop returned (or why it did not) and how long it took."""

    name: str
    value: Any = None
    status: str = "ok"
    ms: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def timing(self) -> recommend_pb2.HopTiming:
        return recommend_pb2.HopTiming(hop=self.name, ms=self.ms, status=self.status)


def call_hop(name: str, method: Callable, request: Any, timeout_s: float, metadata: tuple) -> HopResult:
    """Call method(...) blocking, with the timeout (or report 'skipped' when no budget is left). The calling
    thread waits on the call itself: a `.future()` on a sync channel with nothing else in flight starts a
    channel thread per call (measured: the gateway's largest CPU item)."""
    if timeout_s <= NO_BUDGET_S:
        return HopResult(name, None, SKIPPED_NO_BUDGET, 0.0)
    started = time.perf_counter()
    try:
        value = method(request, timeout=timeout_s, metadata=metadata)
        return HopResult(name, value, "ok", (time.perf_counter() - started) * 1000)
    except grpc.RpcError as exc:
        code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
        return HopResult(name, None, code.name, (time.perf_counter() - started) * 1000)


def feature_hop(name: str, call: Callable[..., Any], *args: Any, **kwargs: Any) -> HopResult:
    """call(*args, **kwargs), a FeatureClient method (its deadline rule and error mapping), as a hop: the
    status is the gRPC code's name, or SKIPPED_NO_BUDGET (0 ms) when the budget was spent."""
    started = time.perf_counter()
    try:
        value = call(*args, **kwargs)
        return HopResult(name, value, "ok", (time.perf_counter() - started) * 1000)
    except FeatureCallError as exc:
        return HopResult(name, None, exc.status, (time.perf_counter() - started) * 1000 if exc.called else 0.0)


class Backends:
    """Long-lived channels and stubs to features, candidates and ranking (its proxy, and its replicas' own
    ports when `ranking_direct_addr` is set: ranking_route.py)."""

    def __init__(
        self, features_addr: str, candidates_addr: str, ranking_addr: str, ranking_app: str,
        ranking_direct_addr: str = "",
    ) -> None:
        # Every hop is a read: a call failing UNAVAILABLE (its instance died) is retried once, on another
        # instance when the address lists several, within the hop's deadline.
        retry = retry_service_config()
        self._channels = [channel(a, service_config=retry) for a in (features_addr, candidates_addr)]
        self.features = FeatureClient(features_addr, channel=self._channels[0])
        self.candidates = candidates_pb2_grpc.CandidateServiceStub(self._channels[1])
        self.ranking = RankingRoute(ranking_addr, ranking_direct_addr)
        self.ranking_metadata = (("application", ranking_app),)

    def warm_up(self, timeout_s: float = 10.0) -> list[str]:
        """Connect every channel before serving (bounded); returns the backends not reachable yet."""
        missing = []
        channels = [*self._channels, self.ranking.proxy_channel]
        names = ["features", "candidates", "ranking"]
        if self.ranking.direct_channel is not None:
            channels.append(self.ranking.direct_channel)
            names.append("ranking replicas (direct ingress)")
        for name, ch in zip(names, channels, strict=True):
            try:
                grpc.channel_ready_future(ch).result(timeout=timeout_s)
            except grpc.FutureTimeoutError:
                missing.append(name)
        return missing

    def close(self) -> None:
        for ch in self._channels:
            ch.close()
        self.ranking.close()
