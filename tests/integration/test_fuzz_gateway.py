"""Fuzzing the gateway's public RPCs end to end (hypothesis): a real gateway GrpcServer in this process with
authentication on, its backends unreachable (so Recommend degrades) and a real Kafka broker behind
EventService. Any request message, raw bytes, method name or credential must end, within its deadline, in OK or
a clear status (INVALID_ARGUMENT naming the field, UNAUTHENTICATED, UNIMPLEMENTED, INTERNAL for undecodable
bytes): no crash, no hang."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import grpc
import pytest
from hypothesis import event, given
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "unit"))
from fuzz_strategies import event_batches, fuzz_settings, recommend_requests  # noqa: E402
from security_support import popular_items, running_gateway  # noqa: E402

from recsys.common import kafka  # noqa: E402
from recsys.common.auth import ApiKey  # noqa: E402
from recsys.common.clients import insecure_channel  # noqa: E402
from recsys.v1 import events_pb2, events_pb2_grpc, recommend_pb2, recommend_pb2_grpc  # noqa: E402

pytestmark = pytest.mark.integration

FUZZ = fuzz_settings(60)
KEY = "fuzzer.Zr3cQbM1kTg2yP9vWn4sLh8dXe6aFu0oJi7cRb5tYq"
CREDENTIALS = (("x-api-key", KEY),)
TOPIC = "fuzz.events"
TIMEOUT_S = 5.0
CATALOGUE = popular_items()  # what running_gateway serves from
METHODS = ["/recsys.v1.RecommendService/Recommend", "/recsys.v1.EventService/Publish", "/grpc.health.v1.Health/Check"]


@pytest.fixture(scope="module")
def gateway(kafka_bootstrap):
    kafka.ensure_topics([TOPIC], kafka_bootstrap, partitions=1)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RECSYS_KAFKA_EVENTS_TOPIC", TOPIC)
        env.setenv("RECSYS_AUTH_MODE", "api_key")
        env.setenv("RECSYS_AUTH_KEYS", json.dumps(
            {"keys": [ApiKey.for_key(KEY, ["recommend", "publish_events"]).record()]}))
        with running_gateway(kafka_bootstrap) as gw, insecure_channel(gw.address) as ch:
            grpc.channel_ready_future(ch).result(timeout=10)
            yield ch


def outcome(call) -> tuple[grpc.StatusCode, object]:
    try:
        return grpc.StatusCode.OK, call()
    except grpc.RpcError as exc:
        return exc.code(), exc.details()


@FUZZ
@given(recommend_requests)
def test_recommend_answers_ok_or_invalid_argument(gateway, request):
    stub = recommend_pb2_grpc.RecommendServiceStub(gateway)
    code, result = outcome(lambda: stub.Recommend(request, timeout=TIMEOUT_S, metadata=CREDENTIALS))
    assert code in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT), (code, result)
    if code == grpc.StatusCode.OK:
        assert len(result.items) <= request.k and result.degraded  # the backends are down: the popular list
        f = request.filter
        for item in result.items:
            genres = CATALOGUE.genres[item.item_id]
            assert item.item_id not in f.exclude_item_ids and not genres & set(f.exclude_genres)
            assert not f.include_genres or genres & set(f.include_genres)
        if not (f.include_genres or f.exclude_genres or f.exclude_item_ids):
            assert len(result.items) == min(request.k, len(CATALOGUE.ranked))
    else:
        assert ": " in result  # "<field>: <problem>"


@FUZZ
@given(event_batches)
def test_publish_answers_ok_or_invalid_argument(gateway, batch):
    stub = events_pb2_grpc.EventServiceStub(gateway)
    request = events_pb2.PublishRequest(events=batch)
    code, result = outcome(lambda: stub.Publish(request, timeout=TIMEOUT_S, metadata=CREDENTIALS))
    assert code in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT), (code, result)
    event(f"publish {code.name}")
    if code == grpc.StatusCode.OK:
        assert result.accepted == len(batch)
    else:
        assert result.startswith("events")


def test_publish_refuses_oversized_batches(gateway):
    stub = events_pb2_grpc.EventServiceStub(gateway)
    many = [events_pb2.Event(type=events_pb2.EVENT_TYPE_CLICK, user_id="u", item_id="i")] * 1001
    code, details = outcome(lambda: stub.Publish(events_pb2.PublishRequest(events=many), timeout=TIMEOUT_S,
                                                 metadata=CREDENTIALS))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "at most 1000" in details


@FUZZ
@given(st.sampled_from(METHODS), st.binary(max_size=512))
def test_raw_bytes_get_a_clear_status(gateway, method, payload):
    call = gateway.unary_unary(method, request_serializer=lambda raw: raw, response_deserializer=lambda raw: raw)
    code, _ = outcome(lambda: call(payload, timeout=TIMEOUT_S, metadata=CREDENTIALS))
    # INTERNAL is gRPC's answer to bytes that do not parse as the request message.
    assert code in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.INTERNAL), code


@FUZZ
@given(st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=80))
def test_unknown_methods_are_unimplemented(gateway, name):
    call = gateway.unary_unary(f"/{name}", request_serializer=lambda raw: raw, response_deserializer=lambda raw: raw)
    code, _ = outcome(lambda: call(b"", timeout=TIMEOUT_S))
    assert code == grpc.StatusCode.UNIMPLEMENTED, code


header_values = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=200)


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(["x-api-key", "authorization", "x-request-id", "x-other"]),
                          header_values), max_size=4))
def test_bad_credentials_are_unauthenticated(gateway, metadata):
    stub = recommend_pb2_grpc.RecommendServiceStub(gateway)
    request = recommend_pb2.RecommendRequest(user_id="u1", k=3)
    code, details = outcome(lambda: stub.Recommend(request, timeout=TIMEOUT_S, metadata=metadata))
    assert code == grpc.StatusCode.UNAUTHENTICATED and details == "missing or invalid credentials", (code, details)
