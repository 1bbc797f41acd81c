"""The rank hop's route: straight to a ranking replica's own gRPC ingress when one is up, else the Serve proxy.

Ray Serve's direct ingress (`RECSYS_RANKING_DIRECT_PORTS` on the ranking service) has each replica serve
the same RankingService on a port of its own. Calling it skips the Serve proxy's hop: on 2 cores at 300
candidates, 6.4 -> 3.8 ms of the ranking service's CPU and 5.1 -> 2.8 ms p50 for the rank hop. The proxy
stays the route whenever no replica's port is connected (the channel watches its state), and a call that
fails UNAVAILABLE on a replica (stopped or restarting) is sent again through the proxy within its deadline.
"""

from __future__ import annotations

import logging
import time

import grpc
from prometheus_client import Counter

from recsys.common.clients import channel, retry_service_config
from recsys.v1 import ranking_pb2, ranking_pb2_grpc

log = logging.getLogger("recsys.gateway.ranking_route")

ROUTED = Counter("recsys_gateway_rank_calls_total", "Rank calls by route (direct: a replica's port)", ["route"])


class RankingRoute:
    """Rank calls to `direct_addr` (one or more replicas' ports; "" = never) while connected, else `proxy_addr`."""

    def __init__(self, proxy_addr: str, direct_addr: str = "") -> None:
        self.proxy_channel = channel(proxy_addr, service_config=retry_service_config())
        self._proxy = ranking_pb2_grpc.RankingServiceStub(self.proxy_channel)
        self.direct_channel = channel(direct_addr) if direct_addr.strip() else None
        self._direct = ranking_pb2_grpc.RankingServiceStub(self.direct_channel) if self.direct_channel else None
        self._direct_ready = False
        if self.direct_channel is not None:
            self.direct_channel.subscribe(self._on_direct_state, try_to_connect=True)

    def _on_direct_state(self, state: grpc.ChannelConnectivity) -> None:
        ready = state == grpc.ChannelConnectivity.READY
        if ready != self._direct_ready:
            log.info("ranking replicas' direct ingress " + ("connected" if ready else "not connected; via the proxy"))
        self._direct_ready = ready

    @property
    def direct_ready(self) -> bool:
        """True while a connection to a replica's own port is up."""
        return self._direct_ready

    def Rank(self, request: ranking_pb2.RankRequest, timeout: float, metadata: tuple) -> ranking_pb2.RankResponse:  # noqa: N802 - a stub's method
        """RankingService.Rank through the best route up now; the proxy answers a replica's UNAVAILABLE."""
        if self._direct is not None and self._direct_ready:
            started = time.monotonic()
            try:
                response = self._direct.Rank(request, timeout=timeout, metadata=metadata)
                ROUTED.labels("direct").inc()
                return response
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
                timeout -= time.monotonic() - started
                if timeout <= 0.0005:
                    raise
        ROUTED.labels("proxy").inc()
        return self._proxy.Rank(request, timeout=timeout, metadata=metadata)

    def close(self) -> None:
        if self.direct_channel is not None:
            self.direct_channel.unsubscribe(self._on_direct_state)
            self.direct_channel.close()
        self.proxy_channel.close()
