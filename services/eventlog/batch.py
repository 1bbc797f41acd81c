"""The records of one topic partition consumed since its last write, held as the columns of its log table.

A batch covers a contiguous offset range `first`..`last`: every record polled from its partition, including
those whose value cannot be decoded (the writer dead-letters them), so the next write resumes after them. It
becomes one Arrow table in the layout's schema, which `split_by_hour` cuts into the parts of one write.

Impressions are flattened to one row per shown item; a served list without items keeps one row whose item
columns are null, so that every Kafka record of the impressions topic stays visible in the log.
"""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa
from kafka.consumer.fetcher import ConsumerRecord

from recsys.common.kafka.codec import decode
from recsys.eventlog.layout import EVENT_TYPE_NAMES, EVENTS, IMPRESSIONS, ITEMS, SCHEMAS, hour_of
from recsys.v1 import catalog_pb2, events_pb2

_HOUR_MS = 3_600_000


class _Impressions:
    """Impression rows: one tuple per served list, one per shown item with the index of its list."""

    LIST_FIELDS = ("event_id", "request_id", "user_id", "variant", "model", "model_version", "timestamp_ms",
                   "degraded", "exploration", "pool_item_ids", "offset")
    ITEM_FIELDS = ("item_id", "position", "score", "source", "propensity")
    _NO_ITEM = (None, None, None, None, None)

    def __init__(self) -> None:
        self.lists: list[tuple] = []
        self.items: list[tuple] = []
        self.parent: list[int] = []

    def append(self, value: bytes | None, offset: int) -> int:
        imp = decode(events_pb2.Impression, value)
        index = len(self.lists)
        self.lists.append((imp.event_id, imp.request_id, imp.user_id, imp.variant, imp.model, imp.model_version,
                           imp.timestamp_ms, imp.degraded, imp.exploration, list(imp.pool_item_ids), offset))
        # propensity 0 = not set (a gateway before exploration): it served its top k, each item with certainty
        shown = [(item.item_id, item.position, item.score, item.source, item.propensity or 1.0)
                 for item in imp.items] or [self._NO_ITEM]
        self.items.extend(shown)
        self.parent.extend([index] * len(shown))
        return len(shown)

    def table(self, topic: str, partition: int) -> pa.Table:
        schema = SCHEMAS[IMPRESSIONS]
        take = pa.array(self.parent, pa.int64())
        columns = {name: array.take(take) for name, array in _columns(self.LIST_FIELDS, self.lists, schema).items()}
        columns.update(_columns(self.ITEM_FIELDS, self.items, schema))
        return _in_schema(columns, schema, topic, partition)


class _Events:
    """Event rows: one tuple per event."""

    FIELDS = ("event_id", "type", "user_id", "item_id", "request_id", "position", "model", "variant",
              "timestamp_ms", "value", "offset")

    def __init__(self) -> None:
        self.rows: list[tuple] = []

    def append(self, value: bytes | None, offset: int) -> int:
        ev = decode(events_pb2.Event, value)
        kind = EVENT_TYPE_NAMES.get(ev.type, str(ev.type))  # a number this code does not know stays readable
        self.rows.append((ev.event_id, kind, ev.user_id, ev.item_id, ev.request_id, ev.position, ev.model,
                          ev.variant, ev.timestamp_ms, ev.value, offset))
        return 1

    def table(self, topic: str, partition: int) -> pa.Table:
        schema = SCHEMAS[EVENTS]
        return _in_schema(_columns(self.FIELDS, self.rows, schema), schema, topic, partition)


class _Items:
    """Item change rows: one tuple per change (a delete has only its item_id)."""

    FIELDS = ("change_id", "op", "item_id", "title", "genres", "attributes", "available", "published_at_ms",
              "updated_at_ms", "timestamp_ms", "offset")

    def __init__(self) -> None:
        self.rows: list[tuple] = []

    def append(self, value: bytes | None, offset: int) -> int:
        change = decode(catalog_pb2.ItemChange, value)
        if change.WhichOneof("change") == "upsert":
            item = change.upsert
            available = not item.HasField("available") or item.available
            self.rows.append((change.change_id, "upsert", item.item_id, item.title, list(item.genres),
                              sorted(item.attributes.items()), available, item.published_at_ms,
                              item.updated_at_ms, change.timestamp_ms, offset))
        else:
            self.rows.append((change.change_id, "delete", change.delete_item_id, None, None, None, False, None,
                              None, change.timestamp_ms, offset))
        return 1

    def table(self, topic: str, partition: int) -> pa.Table:
        schema = SCHEMAS[ITEMS]
        return _in_schema(_columns(self.FIELDS, self.rows, schema), schema, topic, partition)


def _columns(names: tuple[str, ...], rows: list[tuple], schema: pa.Schema) -> dict[str, pa.Array]:
    """Row tuples transposed into Arrow arrays of the schema's types."""
    transposed = list(zip(*rows, strict=True)) if rows else [()] * len(names)
    return {name: pa.array(values, schema.field(name).type) for name, values in zip(names, transposed, strict=True)}


def _in_schema(columns: dict[str, pa.Array], schema: pa.Schema, topic: str, partition: int) -> pa.Table:
    rows = len(columns["offset"])
    columns["topic"] = pa.array([topic] * rows, pa.string())
    columns["partition"] = pa.array(np.full(rows, partition, dtype=np.int32))
    return pa.Table.from_arrays([columns[field.name] for field in schema], schema=schema)


_COLUMNS = {IMPRESSIONS: _Impressions, EVENTS: _Events, ITEMS: _Items}


class PartitionBatch:
    """Consumed records of one topic partition, in offset order, not yet written."""

    def __init__(self, topic: str, partition: int, table: str) -> None:
        self.topic = topic
        self.partition = partition
        self.table_name = table
        self.first: int | None = None
        self.last = -1
        self.leader_epoch: int | None = None
        self.records = 0
        self.rows = 0
        self.since = 0.0  # time.monotonic() of the first record
        self.dead_letters: list = []  # send futures of this batch's dead-lettered records
        self._columns = _COLUMNS[table]()

    def add(self, record: ConsumerRecord) -> int:
        """Cover the record's offset and add its rows; returns the rows added. Raises UndecodableMessage (with
        the offset covered and no row added) when the value cannot be decoded: the caller dead-letters it."""
        if record.offset <= self.last:
            raise ValueError(f"{self.topic}[{self.partition}]: offset {record.offset} after {self.last}")
        if self.first is None:
            self.first, self.since = record.offset, time.monotonic()
        self.last, self.leader_epoch = record.offset, record.leader_epoch
        self.records += 1
        rows = self._columns.append(record.value, record.offset)
        self.rows += rows
        return rows

    def to_table(self) -> pa.Table:
        """The rows in the layout's schema of this batch's table, in offset order."""
        return self._columns.table(self.topic, self.partition)


def split_by_hour(table: pa.Table) -> list[tuple[str, str, pa.Table]]:
    """(date, hour, rows) per hour of event time the rows fall in, oldest first; offset order kept within."""
    if table.num_rows == 0:
        return []
    hours = table["timestamp_ms"].to_numpy() // _HOUR_MS
    distinct = np.unique(hours)
    if len(distinct) == 1:
        return [(*hour_of(int(distinct[0]) * _HOUR_MS), table)]
    return [(*hour_of(int(h) * _HOUR_MS), table.filter(pa.array(hours == h))) for h in distinct]
