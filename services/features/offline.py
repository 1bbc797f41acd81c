"""The Feast offline store: the parquet feature tables of the training pipeline, and their packed form.

The training feature pipeline (`recsys.training.features`, `write_offline_tables`) produces one table per
entity, keyed by `user_id` / `item_id`, with numeric feature columns in the FeatureSpec's order and an
`event_timestamp` (file names: `recsys.model.layout`):

    <offline_dir>/user_features.parquet   user_id, user_*..., event_timestamp
    <offline_dir>/item_features.parquet   item_id, item_*..., event_timestamp
    <offline_dir>/user_history.parquet    user_id, recent_item_ids (list of str, oldest first), event_timestamp

Those tables are the FileSources of the per-feature views. For serving, each entity table is also packed
into one float32 vector per row (`values`, raw little-endian bytes, columns in table order) so that an online
read parses one value per entity instead of one per feature; the packed tables are Feast sources as well
and are materialized like any other view.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recsys.model import layout

USER_TABLE = layout.USER_FEATURES
ITEM_TABLE = layout.ITEM_FEATURES
HISTORY_TABLE = layout.USER_HISTORY
TIMESTAMP = "event_timestamp"
USER_KEY = "user_id"
ITEM_KEY = "item_id"
HISTORY_COLUMN = "recent_item_ids"
VECTOR_COLUMN = "values"


class OfflineTableError(ValueError):
    """An offline feature table is missing or does not have the expected shape."""


@dataclass(frozen=True)
class PackedTable:
    """What packing an entity table produced: the column order, per-column defaults, the row count."""

    key: str
    columns: list[str]
    defaults: list[float]
    rows: int


def feature_columns(path: Path, key: str) -> list[str]:
    """The numeric feature columns of an entity table, in table order (its schema only is read)."""
    if not path.exists():
        raise _missing(path)
    schema = pq.read_schema(path)
    names = schema.names
    for required in (key, TIMESTAMP):
        if required not in names:
            raise OfflineTableError(f"{path.name}: missing column {required!r}")
    cols = []
    for field in schema:
        if field.name in (key, TIMESTAMP):
            continue
        if not (pa.types.is_floating(field.type) or pa.types.is_integer(field.type) or pa.types.is_boolean(field.type)):
            raise OfflineTableError(f"{path.name}: column {field.name!r} is {field.type}, not numeric")
        cols.append(field.name)
    if not cols:
        raise OfflineTableError(f"{path.name}: no feature columns")
    return cols


def pack_table(src: Path, dst: Path, key: str) -> PackedTable:
    """Pack the feature columns of `src` into one float32 vector per row, written to `dst` as
    (key, values: binary, event_timestamp). Defaults (for unknown entities) are the column means."""
    columns = feature_columns(src, key)
    table = pq.read_table(src, columns=[key, *columns, TIMESTAMP])
    n = table.num_rows
    mat = np.empty((n, len(columns)), dtype="<f4")
    for j, name in enumerate(columns):
        mat[:, j] = table[name].to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    with np.errstate(invalid="ignore"):
        means = np.nanmean(mat, axis=0) if n else np.zeros(len(columns), dtype=np.float32)
    defaults = np.where(np.isfinite(means), means, 0.0).astype(np.float32)
    nan = np.isnan(mat)
    if nan.any():
        mat[nan] = np.broadcast_to(defaults, mat.shape)[nan]
    width = 4 * len(columns)
    blobs = pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), n, [None, pa.py_buffer(mat.tobytes())])
    keys = table[key].cast(pa.string())
    ts = table[TIMESTAMP]
    if not pa.types.is_timestamp(ts.type):
        raise OfflineTableError(f"{src.name}: {TIMESTAMP} is {ts.type}, not a timestamp")
    out = pa.table({key: keys, VECTOR_COLUMN: blobs.cast(pa.binary()), TIMESTAMP: ts})
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_suffix(".tmp")
    pq.write_table(out, tmp)
    tmp.replace(dst)
    return PackedTable(key=key, columns=columns, defaults=[float(x) for x in defaults], rows=n)


def check_history_table(path: Path) -> None:
    """Raise OfflineTableError unless `path` holds user_id, recent_item_ids (list of str), event_timestamp."""
    if not path.exists():
        raise _missing(path)
    schema = pq.read_schema(path)
    for required in (USER_KEY, HISTORY_COLUMN, TIMESTAMP):
        if required not in schema.names:
            raise OfflineTableError(f"{path.name}: missing column {required!r}")
    kind = schema.field(HISTORY_COLUMN).type
    if not (pa.types.is_list(kind) or pa.types.is_large_list(kind)):
        raise OfflineTableError(f"{path.name}: {HISTORY_COLUMN} is {kind}, not a list of item ids")


def timestamp_range(path: Path) -> tuple[pd.Timestamp, pd.Timestamp] | None:
    """Earliest and latest event_timestamp of a table (UTC), or None when it is empty."""
    col = pq.read_table(path, columns=[TIMESTAMP])[TIMESTAMP]
    if len(col) == 0:
        return None
    bounds = pc.min_max(col)
    return _utc(bounds["min"].as_py()), _utc(bounds["max"].as_py())


def _utc(value) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def fingerprint(path: Path) -> str:
    """A content hash of a file (changes whenever the table is rewritten with different data)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:32]


def _missing(path: Path) -> OfflineTableError:
    return OfflineTableError(f"offline table {path} does not exist (the training pipeline writes it; or use --data)")


def write_empty_table(path: Path, schema: pa.Schema) -> None:
    """Create an empty parquet table (the batch source behind a push source) unless one exists."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(schema.empty_table(), path)
