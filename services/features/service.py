"""The feature service's logic behind the gRPC surface: validation, online reads, pushes.

Built once per process from a FeatureStore whose registry is cached: the views, their column layouts
(tags of the packed views) and the readers are resolved at start-up, never per request.

Feature names
  user: the user table's columns (default, in order) + user_clicks_1h, user_clicks_24h (streaming)
  item: the item table's columns (default, in order) + item_clicks_1h, item_clicks_24h (streaming)
Unknown entities get the column defaults (means of the offline table; 0 for counters) and found=false.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np
from feast import FeatureStore
from feast.errors import FeastObjectNotFoundException

from recsys.common.errors import FailedPrecondition, InvalidArgument
from recsys.common.packed import extend_floats
from recsys.features import counters, definitions, offline
from recsys.features.settings import FeatureSettings
from recsys.features.streaming import ApplyResult, StreamEvent, StreamUpdater, StreamViews
from recsys.features.vectors import VectorReader
from recsys.v1 import events_pb2, features_pb2

MAX_RECENT_LIMIT = 1000


@contextmanager
def registered_views() -> Iterator[None]:
    """Turn "no such view in the registry" into FailedPrecondition (the project was never applied)."""
    try:
        yield
    except (FeastObjectNotFoundException, LookupError) as exc:
        raise FailedPrecondition(f"the feature store is not ready ({exc}); run `recsys materialize` first") from exc


class _Entity:
    """One entity kind: packed reader, column layout, streaming counter names."""

    def __init__(self, fs: FeatureStore, view_name: str, prefix: str, stream_view) -> None:
        view = fs.get_feature_view(view_name, allow_registry_cache=True)
        self.columns: list[str] = json.loads(view.tags[definitions.COLUMNS_TAG])
        self.defaults = np.asarray(json.loads(view.tags[definitions.DEFAULTS_TAG]), dtype=np.float32)
        self.reader = VectorReader(fs, view, offline.VECTOR_COLUMN, len(self.columns))
        self.stream_view = stream_view
        self.stream_names = [f"{prefix}clicks_1h", f"{prefix}clicks_24h"]
        self.names = [*self.columns, *self.stream_names]
        self._index = {name: i for i, name in enumerate(self.names)}
        self._selections: dict[tuple[str, ...], np.ndarray] = {}

    def selection(self, names: Sequence[str]) -> tuple[list[str], np.ndarray | None]:
        """(names, column indices into [batch | stream]) for the requested names; None = all batch columns."""
        if not names:
            return self.columns, None
        key = tuple(names)
        idx = self._selections.get(key)
        if idx is None:
            positions = []
            for i, name in enumerate(names):
                pos = self._index.get(name)
                if pos is None:
                    raise InvalidArgument(f"feature_names[{i}]", f"unknown feature {name!r}")
                positions.append(pos)
            idx = np.asarray(positions, dtype=np.int64)
            if len(self._selections) < 4096:
                self._selections[key] = idx
        return list(names), idx


class OnlineFeatures:
    """Reads user and item features, recent items, and applies pushed events."""

    def __init__(self, fs: FeatureStore, settings: FeatureSettings, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.clock = clock
        with registered_views():
            self.streams = StreamViews(fs)
            self.users = _Entity(fs, definitions.USER_VECTOR, "user_", self.streams.user)
            self.items = _Entity(fs, definitions.ITEM_VECTOR, "item_", self.streams.item)
            self.history = fs.get_feature_view(definitions.USER_HISTORY, allow_registry_cache=True)
            self.updater = StreamUpdater(
                fs, recent_keep=settings.recent_keep, dedup_keep=settings.dedup_keep, clock=clock
            )

    def user_features(self, user_id: str, names: Sequence[str]) -> features_pb2.FeatureMatrix:
        if not user_id:
            raise InvalidArgument("user_id", "required")
        return self._matrix(self.users, [user_id], names)

    def item_features(self, item_ids: Sequence[str], names: Sequence[str]) -> features_pb2.FeatureMatrix:
        if not item_ids:
            raise InvalidArgument("item_ids", "must not be empty")
        if len(item_ids) > self.settings.max_items:
            raise InvalidArgument("item_ids", f"{len(item_ids)} ids, at most {self.settings.max_items} allowed")
        for i, item_id in enumerate(item_ids):
            if not item_id:
                raise InvalidArgument(f"item_ids[{i}]", "empty id")
        return self._matrix(self.items, item_ids, names)

    def _matrix(self, entity: _Entity, ids: Sequence[str], names: Sequence[str]) -> features_pb2.FeatureMatrix:
        out_names, idx = entity.selection(names)
        values, found = entity.reader.read(ids)
        if not found.all():
            values[~found] = entity.defaults
        if idx is not None:
            n_batch = len(entity.columns)
            if (idx >= n_batch).any():
                values = np.concatenate([values, self._counters(entity, ids)], axis=1)
            values = values[:, idx]
        matrix = features_pb2.FeatureMatrix(names=out_names, entity_ids=ids, found=found.tolist())
        extend_floats(matrix, "values", values)
        return matrix

    def _counters(self, entity: _Entity, ids: Sequence[str]) -> np.ndarray:
        """(n, 2) clicks in the last hour and day, from the stream view's buckets at read time."""
        rows = self.streams.read(entity.stream_view, list(ids), ["click_buckets"])
        now = self.clock()
        out = np.zeros((len(ids), 2), dtype=np.float32)
        for j, (_, row) in enumerate(rows):
            if row["click_buckets"]:
                out[j] = counters.window_counts(row["click_buckets"], now)
        return out

    def recent_items(self, user_id: str, limit: int) -> tuple[list[str], bool]:
        """The user's most recent items, streamed ones first, then the offline history; and whether any."""
        if not user_id:
            raise InvalidArgument("user_id", "required")
        if limit < 0 or limit > MAX_RECENT_LIMIT:
            raise InvalidArgument("limit", f"must be between 0 and {MAX_RECENT_LIMIT}")
        limit = limit or self.settings.recent_default
        (_, fresh), = self.streams.read(self.streams.user, [user_id], ["recent_items"])
        (_, past), = self.streams.read(self.history, [user_id], [offline.HISTORY_COLUMN])
        recent = fresh["recent_items"] or []
        history = past[offline.HISTORY_COLUMN] or []
        merged = list(dict.fromkeys([*recent, *reversed(history)]))
        return merged[:limit], bool(recent or history)

    def push(self, events: Sequence[events_pb2.Event]) -> ApplyResult:
        if not events:
            raise InvalidArgument("events", "must not be empty")
        if len(events) > self.settings.max_push_events:
            raise InvalidArgument("events", f"{len(events)} events, at most {self.settings.max_push_events} allowed")
        for i, ev in enumerate(events):
            if not ev.event_id:
                raise InvalidArgument(f"events[{i}].event_id", "required")
            if not ev.user_id:
                raise InvalidArgument(f"events[{i}].user_id", "required")
        return self.updater.apply([StreamEvent(ev) for ev in events])
