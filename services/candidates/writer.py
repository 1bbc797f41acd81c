"""Writing catalogue changes into Milvus: new and changed items embedded by the item tower and upserted, removed
ones deleted. `CatalogChanges` (changes.py) decides *what* to write; a writer does the writing.

Two writers, one interface (`ItemWriter.write(job) -> rows written`):
- `MilvusWriter` writes from this process (tools, tests, `RECSYS_CATALOG_WRITER=inline`);
- `ChildWriter` (writer_child.py) hands each job to a child process that runs a `MilvusWriter` at a lower CPU
  priority: embedding and pymilvus' row encoding are pure Python, and in the serving process they would hold the
  GIL that Retrieve's threads need, so a burst of item changes would queue every request behind them.

A `WriteJob` carries everything the write needs (the collection, the model folder whose item tower embeds, the
index's genre fields, the items as serialized protos and the ids to delete), so a writer keeps no state a child's
restart could lose: a failed job is retried whole by `CatalogChanges`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from pymilvus import MilvusClient

from recsys.candidates import schema
from recsys.model.bundle import load_spec
from recsys.model.item_encoder import ItemEncoder, content_features
from recsys.model.layout import BundleLayout
from recsys.model.spec import FeatureSpec, feature_name
from recsys.v1 import catalog_pb2

log = logging.getLogger("recsys.candidates.writer")

UPSERT_BATCH = 250  # rows per Milvus upsert call
DELETE_BATCH = 1000  # ids per Milvus delete call


@dataclass
class WriteJob:
    """One round of changes for one collection: `upserts` (serialized `catalog_pb2.Item`s) are embedded with the
    item tower of `model_dir` and upserted; `deletes` are deleted."""

    collection: str
    model_dir: str
    genres: list[str]  # the collection's genre fields, in order (`VersionInfo.genres`)
    upserts: list[bytes] = field(default_factory=list)
    deletes: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, collection: str, model_dir: str, genres: list[str], items: list[catalog_pb2.Item],
           deletes: list[str]) -> WriteJob:
        return cls(collection, model_dir, list(genres), [i.SerializeToString() for i in items], list(deletes))


class ItemWriter(Protocol):
    """Writes a job into Milvus; returns how many rows it wrote (upserted + deleted)."""

    def write(self, job: WriteJob) -> int: ...

    def close(self) -> None: ...


class _Model:
    """What embedding needs of one model version: its item tower (None: the model has none) and feature spec."""

    def __init__(self, folder: str) -> None:
        path = BundleLayout(folder).item_tower
        self.encoder = ItemEncoder.load(path) if path.exists() else None
        self.spec: FeatureSpec | None = load_spec(folder) if self.encoder is not None else None
        if self.encoder is None:
            log.warning("model has no item tower: new items are served by the gateway's FRESH source only",
                        extra={"model_dir": folder})


class MilvusWriter:
    """Embeds and writes jobs in this process with the client `client()` gives at the time (a reconnect replaces
    it); the item towers are loaded once per model folder."""

    def __init__(self, client: Callable[[], MilvusClient], timeout_s: float = 10.0) -> None:
        self.client = client
        self.timeout_s = timeout_s
        self._models: dict[str, _Model] = {}

    def write(self, job: WriteJob) -> int:
        written = self._upsert(job) if job.upserts else 0
        for start in range(0, len(job.deletes), DELETE_BATCH):
            self.client().delete(job.collection, ids=job.deletes[start:start + DELETE_BATCH], timeout=self.timeout_s)
        return written + len(job.deletes)

    def close(self) -> None:
        self._models.clear()

    def _model(self, folder: str) -> _Model:
        key = str(Path(folder))
        if key not in self._models:
            self._models[key] = _Model(key)
        return self._models[key]

    def _upsert(self, job: WriteJob) -> int:
        model = self._model(job.model_dir)
        if model.encoder is None or model.spec is None:
            return 0
        items = [catalog_pb2.Item.FromString(raw) for raw in job.upserts]
        flags = [(schema.genre_field(i), feature_name(g)) for i, g in enumerate(job.genres[:schema.MAX_GENRE_FIELDS])]
        for start in range(0, len(items), UPSERT_BATCH):
            batch = items[start:start + UPSERT_BATCH]
            features = [content_features(model.spec, item.genres, dict(item.attributes)) for item in batch]
            vectors = model.encoder.embed_batch([item.item_id for item in batch], features).tolist()
            rows = []
            for item, vector in zip(batch, vectors, strict=True):
                mine = {feature_name(g) for g in item.genres}
                row = {schema.ID_FIELD: item.item_id, schema.VECTOR_FIELD: vector,
                       schema.AVAILABLE_FIELD: True, schema.POPULARITY_FIELD: 0.0}
                row.update({name: flag in mine for name, flag in flags})
                rows.append(row)
            self.client().upsert(job.collection, rows, timeout=self.timeout_s)
        return len(items)
