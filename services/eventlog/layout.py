"""The event log's on-storage format: tables, their Arrow schemas, partitions and file names.

  <root>/<table>/date=YYYY-MM-DD/hour=HH/<topic>+<partition>+<first>-<last>+<i>of<n>.parquet

- `table` is `impressions` (one row per shown item), `events` (clicks, purchases, ratings, views) or `items` (the
  catalogue's changes: one row per upsert or delete, never expired);
- `date` / `hour` are the event's own time (UTC), hive-style, so pyarrow, DuckDB, Spark and Ray Data read the
  folder as one partitioned dataset (`read_table` here, `duckdb.read_parquet('<root>/events/**/*.parquet',
  hive_partitioning=1)`, `spark.read.parquet(root + '/events')`, `ray.data.read_parquet(root + '/events')`);
- a file is one part of one write: Kafka records `first`..`last` (inclusive offsets) of one topic partition,
  split by the hour the rows belong to into `n` files. A write is complete when all its `n` parts exist; a
  reader skips incomplete writes and the writer deletes them when it starts (they are re-consumed).
- every row carries its Kafka coordinates (`topic`, `partition`, `offset`), so a duplicate would be visible.

`root` is a local folder or any URI pyarrow's filesystems open (`s3://bucket/prefix`, `gs://…`, `file://…`).
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs

from recsys.v1 import events_pb2

IMPRESSIONS = "impressions"
EVENTS = "events"
ITEMS = "items"
TABLES = (IMPRESSIONS, EVENTS, ITEMS)
#: Tables retention never expires: the catalogue's changes are its history (a rebuild replays all of them).
KEPT_FOREVER = (ITEMS,)

_KAFKA = [pa.field("topic", pa.string()), pa.field("partition", pa.int32()), pa.field("offset", pa.int64())]

SCHEMAS: dict[str, pa.Schema] = {
    IMPRESSIONS: pa.schema([
        pa.field("event_id", pa.string()),
        pa.field("request_id", pa.string()),
        pa.field("user_id", pa.string()),
        pa.field("variant", pa.string()),
        pa.field("model", pa.string()),
        pa.field("model_version", pa.string()),
        pa.field("timestamp_ms", pa.int64()),
        pa.field("degraded", pa.bool_()),
        pa.field("item_id", pa.string()),
        pa.field("position", pa.int32()),
        pa.field("score", pa.float32()),
        pa.field("source", pa.string()),
        # exploration (recsys.model.exploration): the propensity of the item at its position, the policy, and
        # the ranked pool it drew from (files written before these columns read them as nulls)
        pa.field("propensity", pa.float32()),
        pa.field("exploration", pa.string()),
        pa.field("pool_item_ids", pa.list_(pa.string())),
        *_KAFKA,
    ]),
    EVENTS: pa.schema([
        pa.field("event_id", pa.string()),
        pa.field("type", pa.string()),  # click | purchase | rating | view | impression (lower-case EventType name)
        pa.field("user_id", pa.string()),
        pa.field("item_id", pa.string()),
        pa.field("request_id", pa.string()),
        pa.field("position", pa.int32()),
        pa.field("model", pa.string()),
        pa.field("variant", pa.string()),
        pa.field("timestamp_ms", pa.int64()),
        pa.field("value", pa.float64()),
        *_KAFKA,
    ]),
    ITEMS: pa.schema([
        pa.field("change_id", pa.string()),
        pa.field("op", pa.string()),  # upsert | delete
        pa.field("item_id", pa.string()),
        pa.field("title", pa.string()),
        pa.field("genres", pa.list_(pa.string())),
        pa.field("attributes", pa.map_(pa.string(), pa.string())),
        pa.field("available", pa.bool_()),
        pa.field("published_at_ms", pa.int64()),
        pa.field("updated_at_ms", pa.int64()),
        pa.field("timestamp_ms", pa.int64()),
        *_KAFKA,
    ]),
}

#: EventType number -> the `type` column's value: the lower-case name without its prefix ("click").
EVENT_TYPE_NAMES: dict[int, str] = {
    number: name.removeprefix("EVENT_TYPE_").lower() for name, number in events_pb2.EventType.items()
}

PARTITIONING = pads.partitioning(pa.schema([("date", pa.string()), ("hour", pa.string())]), flavor="hive")
_NAME = re.compile(r"^(?P<topic>.+)\+(?P<partition>\d+)\+(?P<first>\d+)-(?P<last>\d+)\+(?P<part>\d+)of(?P<parts>\d+)"
                   r"\.parquet$")


@dataclass(frozen=True, order=True)
class FileName:
    """One part of one write: offsets first..last of a topic partition, part `part` of `parts` (1-based)."""

    topic: str
    partition: int
    first: int
    last: int
    part: int
    parts: int

    def __str__(self) -> str:
        return f"{self.topic}+{self.partition}+{self.first}-{self.last}+{self.part}of{self.parts}.parquet"

    @classmethod
    def parse(cls, name: str) -> FileName | None:
        """The parts of a log file's base name; None for anything else (temporary files, other files)."""
        m = _NAME.match(name)
        if m is None:
            return None
        return cls(m["topic"], int(m["partition"]), int(m["first"]), int(m["last"]), int(m["part"]), int(m["parts"]))


def hour_of(timestamp_ms: int) -> tuple[str, str]:
    """The (date, hour) partition values of an event time (UTC)."""
    t = datetime.fromtimestamp(timestamp_ms / 1000.0, tz=UTC)
    return t.strftime("%Y-%m-%d"), t.strftime("%H")


def hour_start_ms(date: str, hour: str) -> int:
    """The first millisecond (UTC) of a (date, hour) partition: the inverse of `hour_of`."""
    start = datetime.strptime(f"{date} {hour}", "%Y-%m-%d %H").replace(tzinfo=UTC)
    return int(start.timestamp()) * 1000


def partition_dir(root: str, table: str, date: str, hour: str) -> str:
    return f"{root.rstrip('/')}/{table}/date={date}/hour={hour}"


def open_root(uri: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path) of a log root: a local folder or a URI pyarrow opens (s3://, gs://, file://)."""
    if "://" in uri:
        return pafs.FileSystem.from_uri(uri)
    return pafs.LocalFileSystem(), str(uri)


@dataclass(frozen=True)
class LogFile:
    path: str
    name: FileName
    date: str
    hour: str


def list_files(fs: pafs.FileSystem, root: str, table: str) -> list[LogFile]:
    """Every log file of `table` (complete or not), in (topic, partition, first offset, part) order."""
    base = f"{root.rstrip('/')}/{table}"
    info = fs.get_file_info(base)
    if info.type == pafs.FileType.NotFound:
        return []
    found = []
    for entry in fs.get_file_info(pafs.FileSelector(base, recursive=True)):
        if entry.type != pafs.FileType.File:
            continue
        name = FileName.parse(entry.base_name)
        if name is None:
            continue
        parts = dict(p.split("=", 1) for p in entry.path[len(base):].strip("/").split("/")[:-1] if "=" in p)
        found.append(LogFile(entry.path, name, parts.get("date", ""), parts.get("hour", "")))
    return sorted(found, key=lambda f: f.name)


def complete(files: list[LogFile]) -> tuple[list[LogFile], list[LogFile]]:
    """(files of complete writes, files of incomplete writes): a write is complete when all its parts exist."""
    writes: dict[tuple[str, int, int, int, int], list[LogFile]] = defaultdict(list)
    for f in files:
        writes[(f.name.topic, f.name.partition, f.name.first, f.name.last, f.name.parts)].append(f)
    done, partial = [], []
    for (_, _, _, _, parts), group in writes.items():
        (done if {f.name.part for f in group} == set(range(1, parts + 1)) else partial).extend(group)
    return done, partial


def next_offsets(files: list[LogFile]) -> dict[tuple[str, int], int]:
    """Per (topic, partition): the offset after the last one a complete write holds (where to resume)."""
    out: dict[tuple[str, int], int] = {}
    for f in complete(files)[0]:
        key = (f.name.topic, f.name.partition)
        out[key] = max(out.get(key, 0), f.name.last + 1)
    return out


def read_table(uri: str, table: str, since_ms: int | None = None, until_ms: int | None = None) -> pa.Table:
    """The rows of the complete writes of `table`, optionally only those with since_ms <= timestamp_ms < until_ms."""
    fs, root = open_root(uri)
    files, _ = complete(list_files(fs, root, table))
    if since_ms is not None:
        first_date, _ = hour_of(since_ms)
        files = [f for f in files if f.date >= first_date]
    if not files:
        return SCHEMAS[table].empty_table()
    dataset = pads.dataset([f.path for f in files], schema=SCHEMAS[table], format="parquet", filesystem=fs)
    expr = None
    if since_ms is not None:
        expr = pads.field("timestamp_ms") >= since_ms
    if until_ms is not None:
        cond = pads.field("timestamp_ms") < until_ms
        expr = cond if expr is None else expr & cond
    return dataset.to_table(filter=expr)
