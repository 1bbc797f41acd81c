"""The logic behind the gateway's RPCs: Recommend (validation, the pipeline, the impression and prediction
logs) and Publish (validation, produced with Kafka's acks)."""

from __future__ import annotations

import random
import time

from recsys.common import config
from recsys.common.errors import InvalidArgument
from recsys.common.kafka.changelog import item_key
from recsys.common.pacing import DutyCycle, PacedGate
from recsys.gateway import metrics
from recsys.gateway.events import AsyncPublisher, SyncProducer, validate_events
from recsys.gateway.items import LiveCatalog, validate_deletes, validate_upserts
from recsys.gateway.pipeline import Outcome, Recommender
from recsys.gateway.rerank import FilterSpec
from recsys.gateway.settings import GatewaySettings
from recsys.model.spec import feature_name
from recsys.v1 import catalog_pb2, events_pb2, recommend_pb2


def validate_recommend(
    request: recommend_pb2.RecommendRequest, s: GatewaySettings, genres: frozenset[str] = frozenset()
) -> FilterSpec:
    """Check a Recommend request; raises InvalidArgument naming the field.

    Genres are normalised like the feature definition names them ('Sci-Fi' -> 'sci_fi') and, when the
    catalogue's genre vocabulary is known, must belong to it."""
    if not request.user_id.strip():
        raise InvalidArgument("user_id", "required")
    if len(request.user_id) > 128:
        raise InvalidArgument("user_id", "longer than 128 characters")
    if request.k <= 0:
        raise InvalidArgument("k", f"must be at least 1 (got {request.k})")
    if request.k > s.max_k:
        raise InvalidArgument("k", f"must be at most {s.max_k} (got {request.k})")
    if len(request.context) > s.max_context:
        raise InvalidArgument("context", f"at most {s.max_context} entries (got {len(request.context)})")
    for key, value in request.context.items():
        if len(key) > 64 or len(value) > 256:
            raise InvalidArgument(f"context[{key[:64]}]", "key over 64 or value over 256 characters")
    f = request.filter
    if len(f.exclude_item_ids) > s.max_filter_ids:
        raise InvalidArgument("filter.exclude_item_ids", f"at most {s.max_filter_ids} ids")
    for name in ("include_genres", "exclude_genres"):
        values = getattr(f, name)
        if len(values) > 64 or any(not g.strip() or len(g) > 64 for g in values):
            raise InvalidArgument(f"filter.{name}", "at most 64 non-empty genres of up to 64 characters")
        for i, genre in enumerate(values):
            if genres and feature_name(genre) not in genres:
                raise InvalidArgument(f"filter.{name}[{i}]", f"unknown genre {genre!r}")
    return FilterSpec(
        include_genres=frozenset(feature_name(g) for g in f.include_genres),
        exclude_genres=frozenset(feature_name(g) for g in f.exclude_genres),
        exclude_item_ids=frozenset(f.exclude_item_ids),
    )


class RecommendService:
    """Recommend: validate, run the pipeline, publish the impression (never blocking)."""

    def __init__(self, recommender: Recommender, publisher: AsyncPublisher, settings: GatewaySettings) -> None:
        self.recommender = recommender
        self.publisher = publisher
        self.settings = settings

    def recommend(
        self, request: recommend_pb2.RecommendRequest, remaining_s: float | None, request_id: str
    ) -> recommend_pb2.RecommendResponse:
        """The answer to one request (`remaining_s`: the caller's deadline, None when it set none)."""
        filters = validate_recommend(request, self.settings, self.recommender.vocabulary())
        outcome = self.recommender.recommend(
            request.user_id, request.k, filters, dict(request.context),
            caller_remaining_s=remaining_s, request_id=request_id,
        )
        self._publish(request.user_id, outcome)
        metrics.observe(outcome.response)
        return outcome.response

    def similar(
        self, request: recommend_pb2.SimilarItemsQuery, remaining_s: float | None, request_id: str
    ) -> recommend_pb2.RecommendResponse:
        """Items like request.item_id (validated like Recommend; user_id optional)."""
        if not request.item_id.strip():
            raise InvalidArgument("item_id", "required")
        if len(request.item_id) > 128:
            raise InvalidArgument("item_id", "longer than 128 characters")
        probe = recommend_pb2.RecommendRequest(user_id=request.user_id or request.item_id, k=request.k,
                                               context=request.context, filter=request.filter)
        filters = validate_recommend(probe, self.settings, self.recommender.vocabulary())
        response = self.recommender.similar(request.item_id, request.k, filters, request.user_id,
                                            dict(request.context), remaining_s, request_id)
        metrics.observe(response)
        return response

    def _publish(self, user_id: str, outcome: Outcome) -> None:
        r = outcome.response
        ts = int(time.time() * 1000)
        self.publisher.offer(config.KAFKA_IMPRESSIONS_TOPIC.str(), events_pb2.Impression(
            event_id=r.request_id, request_id=r.request_id, user_id=user_id, variant=r.variant, model=r.model,
            model_version=r.model_version, timestamp_ms=ts, degraded=r.degraded,
            items=[events_pb2.ImpressionItem(item_id=i.item_id, position=i.position, score=i.score,
                                             source=str(i.source), propensity=i.propensity) for i in r.items],
            exploration=outcome.exploration, pool_item_ids=outcome.pool_item_ids,
        ))
        matrix = outcome.item_features
        if matrix is None or not matrix.names or random.random() >= self.settings.prediction_sample:
            return
        n = len(matrix.names)
        index = {item_id: row for row, item_id in enumerate(matrix.entity_ids)}
        rows = [index[i.item_id] for i in r.items if i.item_id in index]
        values = [v for row in rows for v in matrix.values[row * n:(row + 1) * n]]
        self.publisher.offer(config.KAFKA_PREDICTIONS_TOPIC.str(), events_pb2.PredictionLog(
            request_id=r.request_id, user_id=user_id, variant=r.variant, model=r.model, timestamp_ms=ts,
            feature_names=list(matrix.names), features=values,
            scores=[outcome.ranked_scores.get(matrix.entity_ids[row], 0.0) for row in rows],
            item_ids=[matrix.entity_ids[row] for row in rows],
        ))


class EventService:
    """Publish: product apps' clicks, ratings, purchases and views, validated then produced with acks."""

    def __init__(self, producer: SyncProducer) -> None:
        self.producer = producer

    def publish(self, request: events_pb2.PublishRequest, remaining: float | None) -> events_pb2.PublishResponse:
        """Validate every event, then produce them all and wait for Kafka's acks (`remaining`: the deadline)."""
        events = validate_events(request.events)
        # Wait for Kafka's acks at most 5 s, and finish well inside the caller's deadline, so a broker outage
        # answers UNAVAILABLE (retry later) rather than running into DEADLINE_EXCEEDED.
        timeout = 5.0 if remaining is None else max(0.05, min(5.0, remaining / 2))
        accepted = self.producer.produce(config.KAFKA_EVENTS_TOPIC.str(), events, timeout)
        return events_pb2.PublishResponse(accepted=accepted)


class CatalogService:
    """UpsertItems / DeleteItems: validated, produced to the items topic and acknowledged by Kafka, then applied
    to this gateway's live catalogue (so its own answers honour a change from the moment the call returns)."""

    def __init__(self, producer: SyncProducer, live: LiveCatalog, gate: PacedGate | None = None) -> None:
        self.producer = producer
        self.live = live
        # catalogue writes are bulk work beside the serving path: one call at a time, paced (RECSYS_CATALOG_APPLY_SHARE
        # of the time), so a burst of them does not take the cores Recommend needs
        self.gate = gate or PacedGate(DutyCycle(1.0))

    def _produce(self, changes: list[catalog_pb2.ItemChange], remaining: float | None) -> int:
        timeout = 5.0 if remaining is None else max(0.05, min(5.0, remaining / 2))
        accepted = self.producer.produce(config.KAFKA_ITEMS_TOPIC.str(), changes, timeout, key=item_key)
        self.live.apply(changes)
        return accepted

    def _turn(self, remaining: float | None):
        """This call's turn at the gate: it waits at most a quarter of its remaining time for it."""
        return self.gate.turn(1.0 if remaining is None else remaining / 4)

    def upsert(self, request: catalog_pb2.UpsertItemsRequest, remaining: float | None):
        """Create or replace whole items (unset availability = available)."""
        with self._turn(remaining):
            accepted = self._produce(validate_upserts(request.items), remaining)
        return catalog_pb2.UpsertItemsResponse(accepted=accepted)

    def delete(self, request: catalog_pb2.DeleteItemsRequest, remaining: float | None):
        """Delete items: never served again by any source once this returns."""
        with self._turn(remaining):
            accepted = self._produce(validate_deletes(request.item_ids), remaining)
        return catalog_pb2.DeleteItemsResponse(accepted=accepted)
