"""The event log's two tables as clean frames: read (complete writes only), deduplicated, malformed rows dropped.

Kafka delivers at least once, so a record can be logged twice (same content, other coordinates): events are
kept once per event_id (per Kafka coordinates when it is empty), impressions once per (request_id, item_id).
Rows without a user_id or item_id cannot become training data and are dropped. Every frame comes back in a
total order of its keys, whatever order the files were read in.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from recsys.eventlog import layout
from recsys.training.data.schema import arrow_to_pandas

_KAFKA = ["topic", "partition", "offset"]


@dataclass
class LogTable:
    """Clean rows of one table, and how many rows were read, dropped as duplicates, dropped as malformed."""

    rows: pd.DataFrame
    read: int
    duplicates: int
    malformed: int


def read_events(uri: str, types: tuple[str, ...], since_ms: int | None, until_ms: int | None) -> LogTable:
    """Events of `types` in [since_ms, until_ms), once per event_id, sorted by (timestamp_ms, event_id)."""
    table = layout.read_table(uri, layout.EVENTS, since_ms, until_ms)
    table = table.filter(pc.is_in(table["type"], value_set=pa.array(types, pa.string())))
    table = table.set_column(table.column_names.index("position"), "position", pc.fill_null(table["position"], 0))
    frame, malformed = _well_formed(table)
    frame = frame.sort_values(["event_id", *_KAFKA], kind="stable")
    first = ~frame["event_id"].duplicated() | (frame["event_id"] == "")
    rows = frame.loc[first].sort_values(["timestamp_ms", "event_id", *_KAFKA], kind="stable")
    return LogTable(rows.reset_index(drop=True), table.num_rows, int((~first).sum()), malformed)


def read_impressions(uri: str, since_ms: int | None, until_ms: int | None) -> LogTable:
    """Impression rows in [since_ms, until_ms), once per (request_id, item_id) (the top position kept),
    sorted by (request_id, position, item_id)."""
    table = layout.read_table(uri, layout.IMPRESSIONS, since_ms, until_ms)
    frame, malformed = _well_formed(table, ids=("request_id",), values=("position",))
    keys = ["request_id", "item_id"]
    frame = frame.sort_values([*keys, "position", *_KAFKA], kind="stable")
    first = ~frame.duplicated(keys)
    rows = frame.loc[first].sort_values(["request_id", "position", "item_id"], kind="stable")
    return LogTable(rows.reset_index(drop=True), table.num_rows, int((~first).sum()), malformed)


def _well_formed(table: pa.Table, ids: tuple[str, ...] = (), values: tuple[str, ...] = ()) -> tuple[pd.DataFrame, int]:
    """The rows with user_id, item_id and `ids` non-empty and timestamp_ms and `values` set, as a DataFrame
    (other text columns: null -> ""); and how many rows were not."""
    checks = [pc.fill_null(pc.not_equal(table[c], ""), False) for c in ("user_id", "item_id", *ids)]
    checks += [pc.is_valid(table[c]) for c in ("timestamp_ms", *values)]
    ok = checks[0]
    for check in checks[1:]:
        ok = pc.and_(ok, check)
    kept = table.filter(ok)
    frame = arrow_to_pandas(kept)
    for column, dtype in zip(kept.column_names, kept.schema.types, strict=True):
        if pa.types.is_string(dtype):
            frame[column] = frame[column].fillna("")
    return frame, table.num_rows - kept.num_rows
