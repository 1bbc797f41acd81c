"""Item changes into the online store: a new or changed item's content features (genre flags, the number of
genres, and any item feature an attribute names, e.g. year -> item_year) are written into its packed item vector,
so the rankers score a new item from what is known of it. Its interaction features keep their values (a changed
item) or the column defaults (a new one), and the click counters come from events as for every item.

Fed by the items changelog (`recsys.common.kafka.changelog`) in the features consumer process."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np
from feast import FeatureStore
from feast.protos.feast.types.Value_pb2 import Value as ValueProto

from recsys.features import definitions, offline
from recsys.features.vectors import VectorReader, entity_key_proto
from recsys.model.item_encoder import set_attributes
from recsys.model.spec import feature_name
from recsys.v1 import catalog_pb2

log = logging.getLogger("recsys.features.catalog")
GENRE_PREFIX = "item_genre_"


class ItemContentWriter:
    """Writes content features of upserted items into the ITEM_VECTOR view (thread-safe, a batch at a time)."""

    def __init__(self, fs: FeatureStore) -> None:
        view = fs.get_feature_view(definitions.ITEM_VECTOR)
        self.provider, self.config, self.view = fs._get_provider(), fs.config, view
        self.columns: list[str] = json.loads(view.tags[definitions.COLUMNS_TAG])
        self.defaults = np.asarray(json.loads(view.tags[definitions.DEFAULTS_TAG]), dtype=np.float32)
        self.reader = VectorReader(fs, view, offline.VECTOR_COLUMN, len(self.columns))
        self.index = {name: i for i, name in enumerate(self.columns)}
        self.genre_cols = {name[len(GENRE_PREFIX):]: i for name, i in self.index.items()
                           if name.startswith(GENRE_PREFIX)}
        self._lock = threading.Lock()

    def vector(self, current: np.ndarray | None, item: catalog_pb2.Item) -> np.ndarray:
        """The item's packed row: `current` (or the defaults) with its content features replaced."""
        row = (current if current is not None else self.defaults).astype(np.float32).copy()
        genres = {feature_name(g) for g in item.genres}
        for genre, col in self.genre_cols.items():
            row[col] = 1.0 if genre in genres else 0.0
        if "item_n_genres" in self.index:
            row[self.index["item_n_genres"]] = float(sum(1 for g in genres if g in self.genre_cols))
        set_attributes(row, self.index, dict(item.attributes))
        return row

    def apply(self, changes: Sequence[catalog_pb2.ItemChange]) -> int:
        """Write the content of every available upsert (the latest per item in the batch); returns how many."""
        latest: dict[str, catalog_pb2.Item] = {}
        for change in changes:
            if change.WhichOneof("change") == "upsert":
                latest[change.upsert.item_id] = change.upsert
            elif change.WhichOneof("change") == "delete_item_id":
                latest.pop(change.delete_item_id, None)  # a deleted item is never served: nothing to write
        if not latest:
            return 0
        with self._lock:
            ids = list(latest)
            current, found = self.reader.read(ids)
            now = datetime.now(tz=UTC)
            rows = [
                (entity_key_proto(self.view.join_keys[0], item_id),
                 {offline.VECTOR_COLUMN: ValueProto(bytes_val=self.vector(current[i] if found[i] else None,
                                                                          latest[item_id]).astype("<f4").tobytes())},
                 now, None)
                for i, item_id in enumerate(ids)
            ]
            self.provider.online_write_batch(self.config, self.view, rows, progress=None)
        log.info("item content written", extra={"items": len(rows)})
        return len(rows)
