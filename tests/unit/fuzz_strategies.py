"""Hypothesis strategies for the recsys.v1 request messages, shared by the unit and integration fuzz tests."""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from recsys.v1 import candidates_pb2, events_pb2, recommend_pb2

INT32 = st.integers(-(2**31), 2**31 - 1)
INT64 = st.integers(-(2**63), 2**63 - 1)
SHORT = st.text(max_size=40)

events = st.builds(
    events_pb2.Event,
    event_id=SHORT,
    type=st.integers(-3, 9),
    user_id=st.one_of(st.just("u1"), st.text(max_size=200)),
    item_id=st.one_of(st.just("i1"), st.text(max_size=200)),
    request_id=SHORT,
    position=INT32,
    model=SHORT,
    variant=SHORT,
    timestamp_ms=INT64,
    value=st.floats(allow_nan=True, allow_infinity=True),
)
ids = st.text(st.characters(min_codepoint=33, max_codepoint=0x2FFF), min_size=1, max_size=128)
valid_events = st.builds(
    events_pb2.Event,
    event_id=SHORT,
    type=st.sampled_from([events_pb2.EVENT_TYPE_CLICK, events_pb2.EVENT_TYPE_RATING, events_pb2.EVENT_TYPE_PURCHASE,
                          events_pb2.EVENT_TYPE_VIEW]),
    user_id=ids,
    item_id=ids,
    position=INT32,
    timestamp_ms=INT64,
    value=st.floats(0, 10),
)
#: Publish batches: half of them valid (so the accepting path runs too), half anything.
event_batches = st.one_of(st.lists(valid_events, min_size=1, max_size=5), st.lists(events, max_size=5))
item_filters = st.builds(
    candidates_pb2.ItemFilter,
    include_genres=st.lists(st.text(max_size=70), max_size=70),
    exclude_genres=st.lists(st.text(max_size=70), max_size=70),
    available_only=st.booleans(),
    exclude_item_ids=st.lists(st.text(max_size=12), max_size=1100),
)
recommend_requests = st.builds(
    recommend_pb2.RecommendRequest,
    user_id=st.one_of(st.just("u1"), st.text(max_size=200)),
    k=st.one_of(st.integers(1, 100), INT32),
    context=st.dictionaries(st.text(max_size=80), st.text(max_size=300), max_size=40),
    filter=item_filters,
)


def fuzz_settings(examples: int) -> settings:
    """No per-example deadline: a 2-core machine shared with other work has slow moments."""
    return settings(max_examples=examples, deadline=None, suppress_health_check=[HealthCheck.too_slow])
