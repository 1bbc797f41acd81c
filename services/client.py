"""`recsys.client`: a typed Python client for the public API (RecommendService, EventService,
MonitoringService), with a deadline on every call.

    from recsys.client import RecsysClient
    with RecsysClient("127.0.0.1:50051") as client:
        recs = client.recommend("42", k=10)
        client.click("42", recs.items[0].item_id, request_id=recs.request_id, position=0)

    # what the monitoring dashboard draws, as JSON (overview, experiments, drift, models, alerts)
    with RecsysClient("127.0.0.1:50051", dashboard="http://127.0.0.1:50080") as client:
        client.dashboard_data("experiments", window_s=600)["variants"]
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass

from recsys.common.clients import channel, credential_metadata, request_metadata
from recsys.v1 import (
    candidates_pb2,
    catalog_pb2,
    catalog_pb2_grpc,
    events_pb2,
    events_pb2_grpc,
    monitoring_pb2,
    monitoring_pb2_grpc,
    recommend_pb2,
    recommend_pb2_grpc,
)

SOURCES = {v.number: v.name.removeprefix("CANDIDATE_SOURCE_").lower()
           for v in candidates_pb2.CandidateSource.DESCRIPTOR.values}


@dataclass(frozen=True)
class Item:
    item_id: str
    score: float
    position: int
    source: str
    propensity: float = 1.0  # P(this item at this position) under the variant's exploration policy


@dataclass(frozen=True)
class Recommendations:
    request_id: str
    items: list[Item]
    variant: str
    degraded: bool
    degraded_reasons: list[str]
    timings_ms: dict[str, float]
    model: str
    model_version: str


class RecsysClient:
    """One channel to the gateway (and optionally the monitoring service)."""

    def __init__(self, gateway: str, monitoring: str | None = None, timeout_s: float = 0.2,
                 dashboard: str | None = None) -> None:
        self.timeout_s = timeout_s
        self.dashboard = dashboard.rstrip("/") if dashboard else None
        self._channel = channel(gateway)
        self._recommend = recommend_pb2_grpc.RecommendServiceStub(self._channel)
        self._events = events_pb2_grpc.EventServiceStub(self._channel)
        self._catalog = catalog_pb2_grpc.CatalogServiceStub(self._channel)
        self._mon_channel = channel(monitoring) if monitoring else None
        self._monitoring = monitoring_pb2_grpc.MonitoringServiceStub(self._mon_channel) if monitoring else None

    def recommend(
        self,
        user_id: str,
        k: int = 10,
        *,
        include_genres: list[str] | None = None,
        exclude_genres: list[str] | None = None,
        exclude_item_ids: list[str] | None = None,
        context: dict[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> Recommendations:
        """Top-k items for user_id (raises grpc.RpcError on INVALID_ARGUMENT and transport failures)."""
        request = recommend_pb2.RecommendRequest(
            user_id=user_id, k=k, context=context or {},
            filter=candidates_pb2.ItemFilter(include_genres=include_genres or [], exclude_genres=exclude_genres or [],
                                             exclude_item_ids=exclude_item_ids or []),
        )
        r = self._recommend.Recommend(request, timeout=timeout_s or self.timeout_s, metadata=request_metadata())
        return _recommendations(r)

    def publish(self, events: list[events_pb2.Event], timeout_s: float = 5.0) -> int:
        """Send product events (click, rating, purchase, view); returns how many were accepted."""
        return self._events.Publish(events_pb2.PublishRequest(events=events), timeout=timeout_s).accepted

    def similar(self, item_id: str, k: int = 10, *, user_id: str = "", include_genres: list[str] | None = None,
                exclude_genres: list[str] | None = None, timeout_s: float | None = None) -> Recommendations:
        """Items like item_id (ranked for user_id when given); an unknown item gets its category's popular items."""
        request = recommend_pb2.SimilarItemsQuery(
            item_id=item_id, k=k, user_id=user_id,
            filter=candidates_pb2.ItemFilter(include_genres=include_genres or [], exclude_genres=exclude_genres or []),
        )
        r = self._recommend.SimilarItems(request, timeout=timeout_s or self.timeout_s, metadata=request_metadata())
        return _recommendations(r)

    def upsert_items(self, items: list[catalog_pb2.Item], timeout_s: float = 5.0) -> int:
        """Create or replace items (acknowledged by Kafka on return); returns how many were accepted."""
        return self._catalog.UpsertItems(catalog_pb2.UpsertItemsRequest(items=items), timeout=timeout_s).accepted

    def delete_items(self, item_ids: list[str], timeout_s: float = 5.0) -> int:
        """Delete items: from the answer on, the gateway never serves them; returns how many were accepted."""
        return self._catalog.DeleteItems(catalog_pb2.DeleteItemsRequest(item_ids=item_ids), timeout=timeout_s).accepted

    def click(self, user_id: str, item_id: str, *, request_id: str = "", position: int = 0,
              variant: str = "", timeout_s: float = 5.0) -> int:
        """Report one click on a recommended item."""
        event = events_pb2.Event(
            event_id=uuid.uuid4().hex, type=events_pb2.EVENT_TYPE_CLICK, user_id=user_id, item_id=item_id,
            request_id=request_id, position=position, variant=variant, timestamp_ms=int(time.time() * 1000),
        )
        return self.publish([event], timeout_s)

    def online_metrics(self, window_seconds: int = 0, variant: str = "", timeout_s: float = 5.0):
        """The monitoring service's online metrics (CTR, lift per variant, coverage)."""
        if self._monitoring is None:
            raise ValueError("no monitoring address given")
        request = monitoring_pb2.GetOnlineMetricsRequest(window_seconds=window_seconds, variant=variant)
        return self._monitoring.GetOnlineMetrics(request, timeout=timeout_s)

    def dashboard_data(self, view: str, timeout_s: float = 10.0, **params: int) -> dict:
        """The JSON a dashboard page draws (`view`: overview, experiments, drift, models or alerts; params such
        as window_s or limit), with the same credentials as the gRPC calls (RECSYS_CLIENT_TOKEN / _API_KEY)."""
        if self.dashboard is None:
            raise ValueError("no dashboard URL given")
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        request = urllib.request.Request(f"{self.dashboard}/api/{urllib.parse.quote(view)}{query}",
                                         headers=dict(credential_metadata()))
        with urllib.request.urlopen(request, timeout=timeout_s) as resp:
            return json.loads(resp.read())

    def close(self) -> None:
        self._channel.close()
        if self._mon_channel is not None:
            self._mon_channel.close()

    def __enter__(self) -> RecsysClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _recommendations(r: recommend_pb2.RecommendResponse) -> Recommendations:
    return Recommendations(
        request_id=r.request_id,
        items=[Item(i.item_id, i.score, i.position, SOURCES.get(i.source, "unknown"), i.propensity or 1.0)
               for i in r.items],
        variant=r.variant, degraded=r.degraded, degraded_reasons=list(r.degraded_reasons),
        timings_ms={t.hop: t.ms for t in r.timings}, model=r.model, model_version=r.model_version,
    )
