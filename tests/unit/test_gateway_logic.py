"""Gateway logic without servers: experiment assignment, re-ranking, budgets, request validation."""

from __future__ import annotations

import time

import grpc
import pytest

from recsys.common.config import ConfigError
from recsys.common.errors import InvalidArgument
from recsys.gateway.budget import Budget
from recsys.gateway.events import validate_events
from recsys.gateway.experiments import Experiment, Variant
from recsys.gateway.rerank import FilterSpec, Scored, rerank
from recsys.gateway.service import validate_recommend
from recsys.gateway.settings import GatewaySettings
from recsys.v1 import events_pb2, recommend_pb2


def test_ab_split_is_deterministic_and_within_two_percent():
    exp = Experiment.from_json(
        '{"salt": "s1", "variants": [{"name": "a", "share": 0.7}, {"name": "b", "share": 0.3, "ranker": "dcn"}]}'
    )
    users = [f"user-{i}" for i in range(10_000)]
    first = [exp.assign(u).name for u in users]
    assert first == [exp.assign(u).name for u in users]
    share_a = first.count("a") / len(users)
    assert abs(share_a - 0.7) <= 0.02
    other_salt = Experiment.from_json('{"salt": "s2", "variants": [{"name": "a", "share": 0.7}, '
                                      '{"name": "b", "share": 0.3}]}')
    assert [other_salt.assign(u).name for u in users] != first


@pytest.mark.parametrize(
    "doc",
    [
        '{"variants": []}',
        '{"variants": [{"name": "a", "share": 0.6}]}',
        '{"variants": [{"name": "a", "share": 1.0, "ranker": "xgboost"}]}',
        '{"variants": [{"name": "a", "share": 0.5}, {"name": "a", "share": 0.5}]}',
        "not json",
    ],
)
def test_bad_experiments_are_refused(doc):
    with pytest.raises(ConfigError):
        Experiment.from_json(doc)


def _items(*pairs):
    return [Scored(item, score, 1) for item, score in pairs]


def test_rerank_dedupes_filters_and_caps_genres():
    items = _items(("a", 0.9), ("b", 0.8), ("a", 0.7), ("c", 0.6), ("d", 0.5), ("e", 0.4), ("seen", 0.99))
    genres = {k: frozenset({"drama"}) for k in "abc"} | {"d": frozenset({"comedy"}), "e": frozenset({"horror"})}
    top = rerank(items, 3, genres, FilterSpec(exclude_genres=frozenset({"horror"})), 0.5, frozenset({"seen"}))
    # cap = ceil(0.5 * 3) = 2 dramas, then comedy; horror excluded, seen excluded, duplicate dropped
    assert [s.item_id for s in top] == ["a", "b", "d"]


def test_rerank_fills_from_held_back_items_when_short():
    items = _items(("a", 0.9), ("b", 0.8), ("c", 0.7))
    genres = {k: frozenset({"drama"}) for k in "abc"}
    assert [s.item_id for s in rerank(items, 3, genres, FilterSpec(), 0.34, frozenset())] == ["a", "b", "c"]


def test_budget_hops_never_exceed_what_is_left():
    budget = Budget(total_ms=50, reserve_ms=5, caller_remaining_s=0.02)
    assert budget.hop_timeout(100) <= 0.015
    assert budget.hop_timeout(1) == pytest.approx(0.001)
    time.sleep(0.02)
    assert budget.hop_timeout(100) == 0.0


def _settings(**overrides) -> GatewaySettings:
    values = dict(
        port=0, features_addr="", candidates_addr="", ranking_addr="", ranking_app="ranking", ranking_direct_addr="",
        budget_ms=100,
        rerank_reserve_ms=5, max_k=100, retrieval_k=300, max_context=4, max_filter_ids=10, genre_cap=0.5,
        experiments_json="", models_dir="", batch_recs_path="", event_buffer=10, event_interval_ms=0.0, max_full_path=0,
        admission_wait_ms=20.0,
        prediction_sample=0.0,
    )
    values.update(overrides)
    return GatewaySettings(**values)


@pytest.mark.parametrize(
    "request_kwargs, field",
    [
        ({"k": 10}, "user_id"),
        ({"user_id": "u", "k": 0}, "k"),
        ({"user_id": "u", "k": 101}, "k"),
        ({"user_id": "u", "k": 5, "context": {str(i): "v" for i in range(5)}}, "context"),
        ({"user_id": "u", "k": 5, "filter": {"exclude_item_ids": [str(i) for i in range(11)]}},
         "filter.exclude_item_ids"),
        ({"user_id": "u", "k": 5, "filter": {"include_genres": [""]}}, "filter.include_genres"),
    ],
)
def test_recommend_validation_names_the_field(request_kwargs, field):
    with pytest.raises(InvalidArgument) as err:
        validate_recommend(recommend_pb2.RecommendRequest(**request_kwargs), _settings())
    assert err.value.field == field


def test_recommend_genres_are_normalised_and_checked_against_the_catalogue():
    request = recommend_pb2.RecommendRequest(user_id="u", k=5, filter={"include_genres": ["Sci-Fi"]})
    spec = validate_recommend(request, _settings(), frozenset({"sci_fi", "drama"}))
    assert spec.include_genres == frozenset({"sci_fi"})
    bad = recommend_pb2.RecommendRequest(user_id="u", k=5, filter={"exclude_genres": ["drama", "Polka"]})
    with pytest.raises(InvalidArgument) as err:
        validate_recommend(bad, _settings(), frozenset({"sci_fi", "drama"}))
    assert err.value.field == "filter.exclude_genres[1]"


def test_event_validation():
    ok = validate_events([events_pb2.Event(type=events_pb2.EVENT_TYPE_CLICK, user_id="u", item_id="i")])
    assert ok[0].event_id and ok[0].timestamp_ms > 0
    with pytest.raises(InvalidArgument, match=r"events\[0\].type"):
        validate_events([events_pb2.Event(type=events_pb2.EVENT_TYPE_IMPRESSION, user_id="u", item_id="i")])
    with pytest.raises(InvalidArgument, match=r"events\[1\].item_id"):
        validate_events([events_pb2.Event(type=2, user_id="u", item_id="i"), events_pb2.Event(type=2, user_id="u")])
    with pytest.raises(InvalidArgument, match="events"):
        validate_events([])


class _Call:
    """A unary stub method for the Recommender: records requests; answers or fails with a status."""

    def __init__(self, answer=None, fail: bool = False):
        self.answer, self.fail, self.requests = answer, fail, []

    def __call__(self, request, timeout, metadata):
        self.requests.append(request)
        if self.fail:
            class _Late(grpc.RpcError):
                def code(self):
                    return grpc.StatusCode.DEADLINE_EXCEEDED
            raise _Late()
        return self.answer

    def future(self, request, timeout, metadata):
        call = self

        class _Future:
            def result(self):
                return call(request, timeout, metadata)

        return _Future()


def test_a_failed_user_context_hop_lets_the_candidate_service_fetch_it(monkeypatch):
    """The user's features and recent items come in one call (recent_limit set). When it fails the gateway
    passes neither, so the candidate service fetches the whole context itself and still excludes what the
    user saw; when it answers, both are passed on."""
    from types import SimpleNamespace

    from recsys.gateway.fallbacks import BatchLists, PopularItems
    from recsys.gateway.pipeline import RECENT_ITEMS_LIMIT, Recommender
    from recsys.v1 import candidates_pb2, features_pb2

    matrix = features_pb2.FeatureMatrix(entity_ids=["u1"], names=["user_age"], values=[30.0], found=[True])
    retrieve = _Call(candidates_pb2.RetrieveResponse())
    features = SimpleNamespace(GetUserFeatures=_Call(fail=True), GetItemFeatures=_Call(fail=True))
    backends = SimpleNamespace(features=features, candidates=SimpleNamespace(Retrieve=retrieve),
                               ranking=SimpleNamespace(Rank=_Call(fail=True)), ranking_metadata=())
    monkeypatch.setenv("RECSYS_GATEWAY_BUDGET_MS", "1000")
    popular = PopularItems([(f"i{j}", 1.0) for j in range(20)], {})
    recommender = Recommender(GatewaySettings.from_env(), backends, Experiment([Variant("control", 1.0)], "s"),
                              popular, BatchLists({}))
    outcome = recommender.recommend("u1", 5, FilterSpec(), {})
    assert features.GetUserFeatures.requests[0].recent_limit == RECENT_ITEMS_LIMIT > 0
    sent = retrieve.requests[0]
    assert list(sent.recent_item_ids) == [] and len(sent.user_features.names) == 0
    assert outcome.response.degraded and "user_features: DEADLINE_EXCEEDED" in outcome.response.degraded_reasons

    features.GetUserFeatures = _Call(features_pb2.GetUserFeaturesResponse(
        features=matrix, recent_item_ids=["i3"], recent_found=True))
    outcome = recommender.recommend("u1", 5, FilterSpec(), {})
    sent = retrieve.requests[1]
    assert list(sent.recent_item_ids) == ["i3"] and list(sent.user_features.names) == ["user_age"]
    assert "i3" not in [item.item_id for item in outcome.response.items]  # seen: never recommended


def test_admission_sheds_beyond_the_limit_and_frees_slots():
    from recsys.gateway.admission import Admission

    admission = Admission(2, wait_s=0.01)
    with admission.slot() as first, admission.slot() as second:
        started = time.perf_counter()
        with admission.slot() as third:
            assert first is not None and second is not None and third is None
        assert time.perf_counter() - started < 0.5
    with admission.slot() as again:
        assert again is not None
    with Admission(0, 0.0).slot() as unlimited:
        assert unlimited is not None


def test_adaptive_admission_shrinks_on_overload_and_grows_back_while_full_paths_finish_in_time():
    from recsys.gateway.admission import Admission

    admission = Admission(16, wait_s=0.0, adaptive=True)
    assert admission.limit == 16
    for _ in range(5):  # hops run out of time: each miss (at most one per mean full path) takes a quarter off
        with admission.slot() as ticket:
            time.sleep(0.005)
            ticket.fail()
        time.sleep(0.02)
    assert admission.limit < 16 * 0.75 ** 4
    low = admission.limit
    for _ in range(40):  # clean full paths: one more slot per limit's worth of them
        with admission.slot():
            pass
    assert low + 3 < admission.limit <= 16
    for _ in range(200):
        with admission.slot():
            pass
    assert admission.limit == 16  # never past the ceiling


def test_adaptive_admission_limit_never_below_one_and_a_burst_of_misses_is_one_step():
    from recsys.gateway.admission import Admission

    admission = Admission(8, wait_s=0.0, adaptive=True)
    with admission.slot():
        time.sleep(0.2)  # full paths take 200 ms: one step down per 200 ms at most
    for _ in range(20):  # twenty misses within 200 ms: one step down
        with admission.slot() as ticket:
            ticket.fail()
    assert 5.9 < admission.limit < 6.1
    for _ in range(50):
        time.sleep(0.02)
        admission._mean_s = 0.0  # (a fast path: every miss may count)
        with admission.slot() as ticket:
            ticket.fail()
    assert admission.limit == 1
    with admission.slot() as ticket:
        assert ticket is not None  # one request always gets through


def test_no_full_path_is_started_or_waited_for_when_the_deadline_cannot_be_met():
    from recsys.gateway.admission import Admission

    admission = Admission(2, wait_s=1.0)
    admission._mean_s = admission.expected_s = 0.05  # full paths have recently taken 50 ms
    with admission.slot(remaining_s=0.03) as alone:  # nothing in flight: admitted (the estimate may be stale)
        assert alone is not None
        started = time.perf_counter()
        with admission.slot(remaining_s=0.03) as ticket:  # 30 ms left: not started
            assert ticket is None
        assert time.perf_counter() - started < 0.01
        with admission.slot(remaining_s=0.09) as second:  # a free slot is taken even with little time to wait
            assert second is not None
            started = time.perf_counter()
            with admission.slot(remaining_s=0.09) as ticket:  # waits 40 ms at most, not the full second
                assert ticket is None
            assert 0.03 < time.perf_counter() - started < 0.3


def test_a_shed_request_is_answered_from_fallbacks_without_calling_a_backend(monkeypatch):
    from types import SimpleNamespace

    from recsys.gateway.admission import Admission
    from recsys.gateway.fallbacks import BatchLists, PopularItems
    from recsys.gateway.pipeline import Recommender

    calls = _Call(fail=True)
    backends = SimpleNamespace(features=SimpleNamespace(GetUserFeatures=calls, GetItemFeatures=calls),
                               candidates=SimpleNamespace(Retrieve=calls), ranking=SimpleNamespace(Rank=calls),
                               ranking_metadata=())
    admission = Admission(1, wait_s=0.0)
    recommender = Recommender(GatewaySettings.from_env(), backends, Experiment([Variant("control", 1.0)], "s"),
                              PopularItems([(f"i{j}", 1.0) for j in range(20)], {}), BatchLists({}), admission)
    with admission.slot():  # the only slot is busy
        outcome = recommender.recommend("u1", 5, FilterSpec(), {})
    assert calls.requests == []
    assert outcome.response.degraded and list(outcome.response.degraded_reasons) == ["gateway: overloaded"]
    assert len(outcome.response.items) == 5
    recommender.recommend("u1", 5, FilterSpec(), {})  # the slot is free again: the full path runs
    assert calls.requests


def test_overload_is_a_hop_out_of_time_not_a_backend_that_is_down():
    from recsys.gateway.admission import overloaded

    assert overloaded(["rank: DEADLINE_EXCEEDED"]) and overloaded(["candidates: milvus unavailable (timeout)"])
    assert overloaded(["item_features: SKIPPED_NO_BUDGET"]) and overloaded(["retrieve: RESOURCE_EXHAUSTED"])
    assert not overloaded(["rank: UNAVAILABLE", "user_features: BREAKER_OPEN"]) and not overloaded([])
