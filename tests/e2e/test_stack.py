"""The whole stack, each service its own process: recommendations, bad input, failures degrade, never error."""

from __future__ import annotations

import threading
import time

import grpc
import pytest

from recsys.client import RecsysClient
from recsys.v1 import events_pb2

pytestmark = pytest.mark.e2e


def _light_users(stack, n: int, max_history: int = 150) -> list[str]:
    counts = stack.interactions.groupby("user_id").size()
    return [str(u) for u in counts[counts <= max_history].index[:n]]


def test_recommend_returns_k_distinct_unseen_items(stack):
    history = stack.interactions.groupby("user_id")["item_id"].agg(lambda s: set(map(str, s)))
    with RecsysClient(stack.gateway, timeout_s=2.0) as client:
        for user in _light_users(stack, 20):
            recs = client.recommend(user, 10)
            ids = [i.item_id for i in recs.items]
            assert len(ids) == 10 and len(set(ids)) == 10
            assert not set(ids) & history[user], f"user {user} got seen items; degraded: {recs.degraded_reasons}"
            assert recs.request_id and recs.variant in ("control", "dcn")
        recs = client.recommend("never-seen-user", 10)  # cold start still gets k items
        assert len({i.item_id for i in recs.items}) == 10


def test_a_healthy_stack_answers_fully_ranked_within_budget(stack):
    with RecsysClient(stack.gateway, timeout_s=2.0) as client:
        answers = [client.recommend(u, 10) for u in _light_users(stack, 30)]
    ranked = [r for r in answers if not r.degraded and r.model]
    assert len(ranked) >= 25, [r.degraded_reasons for r in answers if r.degraded]
    assert all(r.timings_ms["total"] < 100 for r in answers)
    assert {"user_features", "retrieve", "item_features", "rank"} <= set(ranked[0].timings_ms)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"user_id": "", "k": 10}, "user_id"),
        ({"user_id": "u1", "k": 0}, "k"),
        ({"user_id": "u1", "k": 10_000}, "k"),
        ({"user_id": "u1", "k": 5, "context": {f"key{i}": "v" for i in range(100)}}, "context"),
        ({"user_id": "u1", "k": 5, "include_genres": ["no-such-genre"]}, "filter.include_genres[0]"),
    ],
)
def test_bad_requests_get_invalid_argument_naming_the_field(stack, kwargs, field):
    with RecsysClient(stack.gateway, timeout_s=2.0) as client, pytest.raises(grpc.RpcError) as err:
        client.recommend(kwargs.pop("user_id"), kwargs.pop("k"), **kwargs)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith(field)


def test_click_events_are_accepted_through_the_event_api(stack):
    with RecsysClient(stack.gateway, timeout_s=2.0) as client:
        recs = client.recommend(_light_users(stack, 1)[0], 5)
        assert client.click(_light_users(stack, 1)[0], recs.items[0].item_id, request_id=recs.request_id) == 1
        with pytest.raises(grpc.RpcError) as err:
            client.publish([events_pb2.Event(type=events_pb2.EVENT_TYPE_CLICK, user_id="u1")])
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


class _Load:
    """Closed-loop background traffic, bounded in time, recording every outcome."""

    def __init__(self, gateway: str, users: list[str], seconds: float) -> None:
        self.gateway, self.users, self.seconds = gateway, users, seconds
        self.ok = self.degraded = 0
        self.errors: list[str] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + self.seconds
        with RecsysClient(self.gateway, timeout_s=2.0) as client:
            i = 0
            while time.monotonic() < deadline:
                try:
                    recs = client.recommend(self.users[i % len(self.users)], 10)
                    self.ok += 1
                    self.degraded += recs.degraded
                    assert len(recs.items) == 10
                except (grpc.RpcError, AssertionError) as exc:
                    self.errors.append(repr(exc)[:200])
                i += 1
                time.sleep(0.01)

    def __enter__(self) -> _Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._thread.join(timeout=self.seconds + 30)


def _diagnosis(stack, load: _Load) -> str:
    """What a failed load assertion prints: outcomes, the first errors, restarts, and the gateway's log tail."""
    restarts = {name: child.restarts for name, child in stack.supervisor.children.items()}
    return (f"ok={load.ok} degraded={load.degraded} errors={len(load.errors)} first={load.errors[:2]} "
            f"restarts={restarts}\n{stack.supervisor.tail('gateway', 15)}")


def _wait_fully_ranked(gateway: str, user: str, timeout_s: float) -> float:
    started = time.monotonic()
    with RecsysClient(gateway, timeout_s=2.0) as client:
        while time.monotonic() - started < timeout_s:
            recs = client.recommend(user, 10)
            if not recs.degraded and recs.model:
                return time.monotonic() - started
            time.sleep(0.5)
    raise AssertionError(f"not recovered after {timeout_s}s")


def test_killing_ranking_under_load_degrades_without_errors_and_recovers(stack):
    users = _light_users(stack, 50)
    with _Load(stack.gateway, users, seconds=12) as load:
        time.sleep(2)
        stack.supervisor.kill("ranking")
        time.sleep(6)
    assert load.errors == [] and load.ok > 20 and load.degraded > 0, _diagnosis(stack, load)
    _wait_fully_ranked(stack.gateway, users[0], timeout_s=240)  # the supervisor restarts it


def test_kafka_down_leaves_recommendations_unaffected(stack):
    users = _light_users(stack, 50)
    stack.kafka("stop")
    try:
        with _Load(stack.gateway, users, seconds=6) as load:
            pass
        assert load.errors == [] and load.ok > 20, _diagnosis(stack, load)
        with RecsysClient(stack.gateway, timeout_s=2.0) as client, pytest.raises(grpc.RpcError) as err:
            client.click(users[0], "i0001", timeout_s=10)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE  # not accepted, so nothing accepted is lost
    finally:
        stack.kafka("start")
        _wait_accepting(stack.gateway, users[0], timeout_s=90)  # the next tests start on a healthy stack


def _wait_accepting(gateway: str, user: str, timeout_s: float) -> float:
    """Seconds until the gateway acknowledges an event again (Kafka back and its producer reconnected)."""
    started = time.monotonic()
    with RecsysClient(gateway, timeout_s=2.0) as client:
        while True:
            try:
                client.click(user, "i0001", timeout_s=5)
                return time.monotonic() - started
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() - started > timeout_s:
                    raise
                time.sleep(0.5)


def test_rank_calls_reach_the_ranking_replica_without_the_proxy(stack):
    """The replica serves the RankingService on its own port (direct ingress) and the gateway uses it."""
    from recsys.common.clients import channel
    from recsys.v1 import ranking_pb2, ranking_pb2_grpc

    answered = []
    for address in stack.cfg.ranking_direct_address().split(","):
        with channel(address) as ch:
            try:
                reply = ranking_pb2_grpc.RankingServiceStub(ch).ListModels(ranking_pb2.ListModelsRequest(), timeout=2)
            except grpc.RpcError:
                continue
        answered.append((address, sorted(m.name for m in reply.models)))
    assert len(answered) == 1 and answered[0][1] == ["dcn", "lightgbm"], answered
    with RecsysClient(stack.gateway, timeout_s=2.0) as client:
        assert client.recommend(_light_users(stack, 1)[0], 5).model
    assert "direct ingress connected" in stack.supervisor.tail("gateway", 5000)
