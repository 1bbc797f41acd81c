"""The Feast project: entities, sources, feature views and feature services, built from the offline tables.

Feature names and genre vocabularies depend on the dataset, so the definitions are built from the offline
tables' schemas (see `recsys.features.offline`) rather than written out by hand; `feature_repo/repo.py`
exposes the same objects to the `feast` CLI.

Views
  user_profile, user_activity, user_genre_affinity   per-feature user views (Float32 columns)
  item_stats                                          per-feature item view
  user_history                                        recent_item_ids of the offline history
  user_vector, item_vector                            packed float32 vectors (the serving path); tags hold
                                                      the column order and the defaults of unknown entities
  user_stream, item_stream                            stream views fed by the push sources: click counters
                                                      (1 h / 24 h), the user's last items, dedup state
Feature services
  retrieval   what the user tower and candidate exclusion need
  ranking     user and item features plus fresh counters for the rankers
  serving     the views the gRPC FeatureService reads
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource, ValueType
from feast.stream_feature_view import StreamFeatureView
from feast.types import Array, Bytes, Float32, Int64, String

from recsys.features import offline

USER_VECTOR = "user_vector"
ITEM_VECTOR = "item_vector"
USER_HISTORY = "user_history"
USER_STREAM = "user_stream"
ITEM_STREAM = "item_stream"
USER_PUSH = "user_events_push"
ITEM_PUSH = "item_events_push"
BATCH_VIEWS = ("user_profile", "user_activity", "user_genre_affinity", "item_stats")
PACKED_VIEWS = (USER_VECTOR, ITEM_VECTOR, USER_HISTORY)
COLUMNS_TAG = "recsys.columns"
DEFAULTS_TAG = "recsys.defaults"

_ACTIVITY = ("user_count_30d", "user_days_since_last", "user_active_days", "user_mean_item_pop", "user_mean_item_year")

# Streaming features (Feast field name -> type). Counters are as of the last update; the service recomputes
# the windows from click_buckets at read time so they decay without new events.
USER_STREAM_FIELDS = {
    "clicks_1h": Int64,
    "clicks_24h": Int64,
    "recent_items": Array(String),  # most recent first
    "click_buckets": Array(Int64),  # flattened (bucket start epoch s, count) pairs
    "event_ids": Array(String),  # most recent applied event ids (idempotency)
}
ITEM_STREAM_FIELDS = {
    "clicks_1h": Int64,
    "clicks_24h": Int64,
    "click_buckets": Array(Int64),
    "offsets": Array(Int64),  # per Kafka partition: the last offset applied (-1 = none)
}
_ARROW = {Int64: pa.int64(), Array(String): pa.list_(pa.string()), Array(Int64): pa.list_(pa.int64())}


@dataclass(frozen=True)
class Layout:
    """Column order and defaults of the packed user and item vectors."""

    user_columns: list[str]
    item_columns: list[str]
    user_defaults: list[float] = field(default_factory=list)
    item_defaults: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class Paths:
    """Where the sources of every view live."""

    offline_dir: Path
    feast_dir: Path

    @property
    def user_table(self) -> Path:
        return self.offline_dir / offline.USER_TABLE

    @property
    def item_table(self) -> Path:
        return self.offline_dir / offline.ITEM_TABLE

    @property
    def history_table(self) -> Path:
        return self.offline_dir / offline.HISTORY_TABLE

    @property
    def user_vectors(self) -> Path:
        return self.feast_dir / "packed" / "user_vectors.parquet"

    @property
    def item_vectors(self) -> Path:
        return self.feast_dir / "packed" / "item_vectors.parquet"

    @property
    def layout_file(self) -> Path:
        return self.feast_dir / "packed" / "layout.json"

    def stream_table(self, name: str) -> Path:
        return self.feast_dir / "streams" / f"{name}.parquet"


def group_user_columns(columns: list[str]) -> dict[str, list[str]]:
    """Split the user feature columns into the profile, activity and genre-affinity views."""
    groups: dict[str, list[str]] = {"user_profile": [], "user_activity": [], "user_genre_affinity": []}
    for name in columns:
        if name.startswith("user_genre_"):
            groups["user_genre_affinity"].append(name)
        elif name in _ACTIVITY:
            groups["user_activity"].append(name)
        else:
            groups["user_profile"].append(name)
    return {view: cols for view, cols in groups.items() if cols}


def stream_schema(key: str, fields: dict) -> pa.Schema:
    """The arrow schema of a push source's batch table."""
    return pa.schema(
        [(key, pa.string()), *((name, _ARROW[kind]) for name, kind in fields.items()),
         (offline.TIMESTAMP, pa.timestamp("us", tz="UTC"))]
    )


def _file_source(name: str, path: Path) -> FileSource:
    return FileSource(name=name, path=str(path), timestamp_field=offline.TIMESTAMP)


def _floats(columns: list[str]) -> list[Field]:
    return [Field(name=c, dtype=Float32) for c in columns]


def build(layout: Layout, paths: Paths) -> list:
    """Every Feast object of the project, ready for `FeatureStore.apply`."""
    user = Entity(name="user", join_keys=[offline.USER_KEY], value_type=ValueType.STRING, description="A user")
    item = Entity(name="item", join_keys=[offline.ITEM_KEY], value_type=ValueType.STRING, description="An item")
    user_src = _file_source("user_features", paths.user_table)
    item_src = _file_source("item_features", paths.item_table)
    history_src = _file_source("user_history", paths.history_table)
    no_ttl = timedelta(0)

    views: dict[str, FeatureView] = {}
    for name, cols in group_user_columns(layout.user_columns).items():
        views[name] = FeatureView(name=name, entities=[user], ttl=no_ttl, schema=_floats(cols), source=user_src)
    views["item_stats"] = FeatureView(
        name="item_stats", entities=[item], ttl=no_ttl, schema=_floats(layout.item_columns), source=item_src
    )
    views[USER_HISTORY] = FeatureView(
        name=USER_HISTORY,
        entities=[user],
        ttl=no_ttl,
        schema=[Field(name=offline.HISTORY_COLUMN, dtype=Array(String))],
        source=history_src,
        description="The user's most recent items in the offline data, oldest first",
    )
    for name, entity, path, cols, defaults in (
        (USER_VECTOR, user, paths.user_vectors, layout.user_columns, layout.user_defaults),
        (ITEM_VECTOR, item, paths.item_vectors, layout.item_columns, layout.item_defaults),
    ):
        views[name] = FeatureView(
            name=name,
            entities=[entity],
            ttl=no_ttl,
            schema=[Field(name=offline.VECTOR_COLUMN, dtype=Bytes)],
            source=_file_source(f"{name}_packed", path),
            description="All features of the entity as one little-endian float32 vector (serving path)",
            tags={COLUMNS_TAG: json.dumps(cols), DEFAULTS_TAG: json.dumps(defaults)},
        )

    user_push = PushSource(name=USER_PUSH, batch_source=_file_source(USER_STREAM, paths.stream_table(USER_STREAM)))
    item_push = PushSource(name=ITEM_PUSH, batch_source=_file_source(ITEM_STREAM, paths.stream_table(ITEM_STREAM)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "stream feature views are experimental"
        user_stream = StreamFeatureView(
            name=USER_STREAM,
            entities=[user],
            ttl=timedelta(days=2),
            schema=[Field(name=n, dtype=t) for n, t in USER_STREAM_FIELDS.items()],
            source=user_push,
            timestamp_field=offline.TIMESTAMP,
            description="Fresh per-user counters and last items, pushed by the Kafka consumer",
        )
        item_stream = StreamFeatureView(
            name=ITEM_STREAM,
            entities=[item],
            ttl=timedelta(days=2),
            schema=[Field(name=n, dtype=t) for n, t in ITEM_STREAM_FIELDS.items()],
            source=item_push,
            timestamp_field=offline.TIMESTAMP,
            description="Fresh per-item click counters, pushed by the Kafka consumer",
        )

    user_views = [views[n] for n in ("user_profile", "user_activity", "user_genre_affinity") if n in views]
    services = [
        FeatureService(
            name="retrieval",
            features=[*user_views, views[USER_HISTORY], user_stream[["clicks_1h", "clicks_24h", "recent_items"]]],
            description="User features, offline history and fresh last items for the retrieval stage",
        ),
        FeatureService(
            name="ranking",
            features=[*user_views, views["item_stats"], user_stream[["clicks_1h", "clicks_24h"]],
                      item_stream[["clicks_1h", "clicks_24h"]]],
            description="User and item features with fresh click counters for the rankers",
        ),
        FeatureService(
            name="serving",
            features=[views[USER_VECTOR], views[ITEM_VECTOR], views[USER_HISTORY], user_stream, item_stream],
            description="The views the gRPC FeatureService reads",
        ),
    ]
    return [user, item, user_src, item_src, history_src, user_push, item_push, *views.values(), user_stream,
            item_stream, *services]
