"""RankingRoute: Rank goes to a replica's own port while one is connected, else (and on UNAVAILABLE) the proxy."""

from __future__ import annotations

import time
from concurrent import futures

import grpc
import pytest

from recsys.common.ports import free_port
from recsys.gateway.ranking_route import RankingRoute
from recsys.v1 import ranking_pb2, ranking_pb2_grpc


class _Ranker(ranking_pb2_grpc.RankingServiceServicer):
    """Answers Rank with its own name as the model, or aborts UNAVAILABLE when told to."""

    def __init__(self, name: str) -> None:
        self.name, self.unavailable, self.calls = name, False, 0

    def Rank(self, request, context):  # noqa: N802 - gRPC's name
        self.calls += 1
        if self.unavailable:
            context.abort(grpc.StatusCode.UNAVAILABLE, "draining")
        return ranking_pb2.RankResponse(model=self.name, scores=[1.0] * len(request.item_ids))


def _serve(ranker: _Ranker, port: int) -> grpc.Server:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    ranking_pb2_grpc.add_RankingServiceServicer_to_server(ranker, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    return server


def _until(predicate, timeout_s: float = 5.0) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached")


@pytest.fixture
def servers():
    proxy, replica = _Ranker("proxy"), _Ranker("replica")
    proxy_port, replica_port = free_port(), free_port()
    started = {"proxy": _serve(proxy, proxy_port), "replica": _serve(replica, replica_port)}
    yield proxy, replica, proxy_port, replica_port, started
    for server in started.values():
        server.stop(None)


def _rank(route: RankingRoute, timeout: float = 2.0) -> str:
    return route.Rank(ranking_pb2.RankRequest(item_ids=["a"]), timeout=timeout, metadata=()).model


@pytest.fixture
def route(servers):
    """route(direct_port or None): a RankingRoute to the proxy server and, when given, that direct port."""
    made = []

    def make(direct_port: int | None) -> RankingRoute:
        proxy_port = servers[2]
        made.append(RankingRoute(f"127.0.0.1:{proxy_port}", f"127.0.0.1:{direct_port}" if direct_port else ""))
        return made[-1]

    yield make
    for r in made:
        r.close()


def test_rank_goes_to_the_replica_once_connected(servers, route):
    proxy, _, _, replica_port, _ = servers
    r = route(replica_port)
    _until(lambda: r.direct_ready)
    assert _rank(r) == "replica" and proxy.calls == 0


def test_without_a_direct_address_rank_goes_through_the_proxy(servers, route):
    _, replica, _, _, _ = servers
    r = route(None)
    assert _rank(r) == "proxy" and replica.calls == 0 and not r.direct_ready


def test_a_replica_port_nothing_listens_on_leaves_the_proxy_route(route):
    r = route(free_port())
    time.sleep(0.3)  # the connection attempt fails
    assert not r.direct_ready and _rank(r) == "proxy"


def test_a_replica_answering_unavailable_is_covered_by_the_proxy(servers, route):
    proxy, replica, _, replica_port, _ = servers
    r = route(replica_port)
    _until(lambda: r.direct_ready)
    replica.unavailable = True
    assert _rank(r) == "proxy" and replica.calls == 1 and proxy.calls == 1


def test_a_stopped_replica_sends_rank_to_the_proxy(servers, route):
    _, _, _, replica_port, started = servers
    r = route(replica_port)
    _until(lambda: r.direct_ready)
    started["replica"].stop(None)
    assert _rank(r) == "proxy"  # the call in the gap, or the state change, takes the proxy
    _until(lambda: not r.direct_ready)
    assert _rank(r) == "proxy"
