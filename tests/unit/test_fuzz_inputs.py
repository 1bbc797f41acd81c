"""Property-based fuzzing (hypothesis) of the pure input paths: the Kafka event decoder, the gateway's request
validators, the credential parsers and the token buckets. Every input ends in a result or the one documented
error; nothing else may escape."""

from __future__ import annotations

import math
import sys
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent))  # fuzz_strategies sits beside this file (importlib import mode)
from fuzz_strategies import events, fuzz_settings, recommend_requests  # noqa: E402

from recsys.common import kafka  # noqa: E402
from recsys.common.auth import ApiKey, Authenticator, AuthError, JwtVerifier, KeyStore, Unauthenticated, mint_jwt
from recsys.common.errors import InvalidArgument
from recsys.common.ratelimit import KeyedRateLimiter
from recsys.gateway.events import validate_events
from recsys.gateway.rerank import FilterSpec
from recsys.gateway.service import validate_recommend
from recsys.gateway.settings import GatewaySettings
from recsys.v1 import events_pb2

FUZZ = fuzz_settings(150)
SHORT = st.text(max_size=40)


@FUZZ
@given(st.sampled_from(sorted(kafka.MESSAGE_TYPES)), st.one_of(st.none(), st.binary(max_size=2048)))
def test_kafka_decoder_returns_a_message_or_undecodable(type_name, data):
    message_type = kafka.MESSAGE_TYPES[type_name]
    try:
        message = kafka.decoder(message_type)(data)
    except kafka.UndecodableMessage as exc:
        assert message_type.DESCRIPTOR.full_name in str(exc)
    else:
        assert isinstance(message, message_type)


@FUZZ
@given(events)
def test_kafka_events_round_trip(event):
    assert kafka.decode(events_pb2.Event, kafka.encode(event)) == event or math.isnan(event.value)


@FUZZ
@given(st.binary(min_size=1, max_size=64), events)
def test_corrupted_events_never_escape_as_other_errors(noise, event):
    data = bytearray(kafka.encode(event))
    for i, b in enumerate(noise):
        if data:
            data[(b * 7 + i) % len(data)] ^= b
    try:
        kafka.decode(events_pb2.Event, bytes(data) + noise)
    except kafka.UndecodableMessage:
        pass


@FUZZ
@given(recommend_requests)
def test_recommend_validation_accepts_or_names_a_field(request):
    limits = GatewaySettings.from_env()
    try:
        spec = validate_recommend(request, limits)
    except InvalidArgument as exc:
        assert exc.field and exc.message.startswith(exc.field.split("[")[0])
    else:
        assert isinstance(spec, FilterSpec) and 1 <= request.k <= limits.max_k and request.user_id.strip()


@FUZZ
@given(st.lists(events, max_size=6))
def test_event_validation_accepts_or_names_a_field(batch):
    try:
        accepted = validate_events(batch)
    except InvalidArgument as exc:
        assert exc.field.startswith("events")
    else:
        assert len(accepted) == len(batch)
        assert all(e.event_id and e.timestamp_ms > 0 and math.isfinite(e.value) for e in accepted)


SECRET = b"k" * 32
KEY = "shop.Zr3cQbM1kTg2yP9vWn4sLh8dXe6aFu0oJi7cRb5tYq"
AUTH = Authenticator(KeyStore({"shop": ApiKey.for_key(KEY, ["recommend"])}), JwtVerifier(SECRET))
header_names = st.sampled_from(["x-api-key", "authorization", "x-request-id", "Authorization", "user-agent"])
credential_text = st.one_of(
    st.text(max_size=300),
    st.builds(lambda a, b, c: f"{a}.{b}.{c}", SHORT, SHORT, SHORT),
    st.builds(lambda t: "Bearer " + t, st.text(max_size=300)),
    st.builds(lambda s: "Bearer " + mint_jwt(SECRET, "x", ["recommend"], 60)[:-3] + s, st.text(max_size=3)),
    st.builds(lambda s: KEY[:-2] + s, st.text(max_size=2)),
)


@FUZZ
@given(st.lists(st.tuples(header_names, credential_text), max_size=4))
def test_credential_parsing_yields_a_principal_or_an_auth_error(metadata):
    try:
        principal = AUTH.check(metadata, "recommend")
    except AuthError as exc:
        assert exc.public_message in ("missing or invalid credentials", "permission denied")
    else:
        assert principal.key_id in ("shop", "x")


@FUZZ
@given(st.text(max_size=600))
def test_jwt_verifier_refuses_garbage(token):
    try:
        JwtVerifier(SECRET).verify(token)
    except Unauthenticated:
        return
    raise AssertionError("garbage accepted")


@FUZZ
@given(st.floats(0.5, 50), st.floats(1, 20), st.lists(st.floats(0, 0.5), min_size=1, max_size=200))
def test_token_bucket_never_exceeds_rate_times_time_plus_burst(rate, burst, gaps):
    now = [0.0]
    limiter = KeyedRateLimiter(rate, burst, clock=lambda: now[0])
    allowed = 0
    for gap in gaps:
        now[0] += gap
        allowed += limiter.acquire("k") == 0.0
    assert allowed <= math.floor(max(burst, 1.0) + rate * now[0]) + 1e-9
