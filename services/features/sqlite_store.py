"""Feast's SQLite online store with batched statements (the default online store of this project).

Feast's `SqliteOnlineStore` writes one `INSERT ... ON CONFLICT DO UPDATE` per (entity, feature), each a
separate Python -> SQLite call, and serializes every entity key field by field. The streaming consumer writes
~5 features for thousands of entities per batch, so that per-statement cost decided whether it kept up.

`BatchedSqliteOnlineStore` keeps Feast's tables, key encoding, value encoding and SQL, and only changes how the
statements are issued: one `executemany` per batch (rows sorted by key, so the B-tree is walked in order)
inside one transaction, and one query per read (of the requested features only) with the timestamp decoded
once per entity. Its connection gets a larger page cache (the stream tables outgrow SQLite's 2 MiB default)
and `synchronous=NORMAL`: with the write-ahead log (set at apply) a process crash loses nothing and a commit
needs no fsync; a power loss may lose the last commits. A writing process checkpoints the log from a thread
of its own rather than inside the commit that crosses SQLite's threshold (see `_writer_conn`). Configurations
with vectors or the OpenAI-compatible columns use Feast's code as is.

Select it with `type: recsys.features.sqlite_store.BatchedSqliteOnlineStore` in the `online_store` section.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import struct
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

from feast.feature_view import FeatureView
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.sqlite import SqliteOnlineStore, SqliteOnlineStoreConfig, _quote_id, _table_id
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.protos.feast.types.Value_pb2 import ValueType
from feast.repo_config import RepoConfig
from feast.utils import to_naive_utc

log = logging.getLogger(__name__)

STORE_TYPE = "recsys.features.sqlite_store.BatchedSqliteOnlineStore"
CHECKPOINT_INTERVAL_S = 0.5  # how often the background checkpointer copies the write-ahead log into the file
WAL_LIMIT_BYTES = 64 << 20  # size the log is truncated back to after a checkpoint
CACHE_KIB = 65536  # page cache of the store's connection (SQLite's default is 2 MiB)
_READ_CHUNK = 10_000  # entity keys per query (SQLite allows 32766 bound variables)

_U32 = struct.Struct("<I")
_U32_PAIR = struct.Struct("<II")
_STRING = ValueType.STRING
_TEXT_KINDS = {"string_val": None, "int64_val": str, "int32_val": str, "double_val": str, "float_val": str,
               "bool_val": str}


class BatchedSqliteOnlineStoreConfig(SqliteOnlineStoreConfig):
    """The SQLite online store settings of Feast (path, ...), under this store's type name."""

    type: Literal["recsys.features.sqlite_store.BatchedSqliteOnlineStore"] = STORE_TYPE  # type: ignore[assignment]


def entity_key_bytes(key: EntityKeyProto, version: int) -> bytes:
    """`serialize_entity_key(key, version)`; a single string join key (every key here) is packed directly."""
    if version >= 3 and len(key.join_keys) == 1 and key.entity_values[0].WhichOneof("val") == "string_val":
        name = key.join_keys[0].encode("utf-8")
        value = key.entity_values[0].string_val.encode("utf-8")
        return b"".join((_U32.pack(1), _U32_PAIR.pack(_STRING, len(name)), name,
                         _U32_PAIR.pack(_STRING, len(value)), value))
    return serialize_entity_key(key, entity_key_serialization_version=version)


def value_text(value: ValueProto) -> str | None:
    """The `value_text` column Feast writes for a value (`extract_text_and_num`, without the number)."""
    kind = value.WhichOneof("val")
    if kind not in _TEXT_KINDS:
        return None
    raw = getattr(value, kind)
    convert = _TEXT_KINDS[kind]
    return raw if convert is None else convert(raw)


class BatchedSqliteOnlineStore(SqliteOnlineStore):
    """`SqliteOnlineStore` issuing one `executemany` per written batch and one query per read."""

    _checkpointing = False

    def _get_conn(self, config: RepoConfig):
        fresh = not self._conn
        conn = super()._get_conn(config)
        if fresh:
            conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
            conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    def _writer_conn(self, config: RepoConfig) -> sqlite3.Connection:
        """The connection, set up for writing once: SQLite's automatic checkpoint runs inside the commit that
        crosses 1000 log pages and syncs the file there (tens of ms per batch on a busy disk); here a thread
        of this process checkpoints every CHECKPOINT_INTERVAL_S instead, off the writer's path."""
        conn = self._get_conn(config)
        if not self._checkpointing:
            path = self._get_db_path(config)
            conn.execute(f"PRAGMA journal_size_limit={WAL_LIMIT_BYTES}")
            conn.execute("PRAGMA wal_autocheckpoint=0")
            _start_checkpointer(path)
            self._checkpointing = True
        return conn

    @staticmethod
    def _plain(config: RepoConfig) -> bool:
        store = config.online_store
        return not store.vector_enabled and not getattr(store, "enable_openai_compatible_store", False)

    def online_write_batch(
        self,
        config: RepoConfig,
        table: FeatureView,
        data: list[tuple[EntityKeyProto, dict[str, ValueProto], datetime, datetime | None]],
        progress: Callable[[int], Any] | None,
    ) -> None:
        if not self._plain(config):
            super().online_write_batch(config, table, data, progress)
            return
        version = config.entity_key_serialization_version
        rows = []
        for entity_key, values, timestamp, created_ts in data:
            key = entity_key_bytes(entity_key, version)
            ts = to_naive_utc(timestamp)
            created = to_naive_utc(created_ts) if created_ts is not None else None
            rows.extend((key, name, val.SerializeToString(), value_text(val), ts, created)
                        for name, val in values.items())
        rows.sort(key=lambda r: (r[0], r[1]))
        name = _quote_id(_table_id(config.project, table, config.registry.enable_online_feature_view_versioning))
        conn = self._writer_conn(config)
        with conn:
            conn.executemany(
                f"INSERT INTO {name} (entity_key, feature_name, value, value_text, event_ts, created_ts) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(entity_key, feature_name) DO UPDATE SET "
                "value = excluded.value, value_text = excluded.value_text, event_ts = excluded.event_ts, "
                "created_ts = excluded.created_ts",
                rows,
            )
        if progress:
            for _ in data:
                progress(1)

    def online_read(
        self,
        config: RepoConfig,
        table: FeatureView,
        entity_keys: list[EntityKeyProto],
        requested_features: list[str] | None = None,
    ) -> list[tuple[datetime | None, dict[str, ValueProto] | None]]:
        version = config.entity_key_serialization_version
        return self.online_read_keys(
            config, table, [entity_key_bytes(k, version) for k in entity_keys], requested_features
        )

    def online_read_keys(
        self, config: RepoConfig, table: FeatureView, keys: list[bytes], requested_features: list[str] | None = None
    ) -> list[tuple[datetime | None, dict[str, ValueProto] | None]]:
        """`online_read` for entity keys already serialized as `serialize_entity_key` does (no protos built)."""
        name = _quote_id(_table_id(config.project, table, config.registry.enable_online_feature_view_versioning))
        # Only the requested features are read (as Feast's Redis store does; its SQLite store reads them all).
        features = list(dict.fromkeys(requested_features or ()))
        only = f" AND feature_name IN ({','.join('?' * len(features))})" if features else ""
        values: dict[bytes, dict[str, ValueProto]] = {}
        stamps: dict[bytes, Any] = {}  # an entity's last row's event_ts, as Feast's read keeps it
        conn = self._get_conn(config)
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), _READ_CHUNK):
            chunk = unique[start : start + _READ_CHUNK]
            # The timestamp is read as stored (an expression has no declared type, so no per-row converter) and
            # turned into a datetime once per entity, as Feast's `timestamp` converter does.
            for key, feature, blob, ts in conn.execute(
                f"SELECT entity_key, feature_name, value, +event_ts FROM {name} "
                f"WHERE entity_key IN ({','.join('?' * len(chunk))}){only} ORDER BY entity_key",
                [*chunk, *features],
            ):
                values.setdefault(key, {})[feature] = ValueProto.FromString(blob)
                stamps[key] = ts
        return [(_stored_time(stamps[key]), values[key]) if key in values else (None, None) for key in keys]


def _stored_time(raw: Any) -> datetime:
    """A stored `event_ts` as Feast reads it back: epoch seconds -> naive local time, tagged UTC."""
    return datetime.fromtimestamp(int(raw)).replace(tzinfo=UTC)


_checkpointers: dict[str, threading.Thread] = {}
_checkpointers_lock = threading.Lock()


def _start_checkpointer(path: str) -> None:
    """One daemon thread per database file and process, checkpointing it passively (never waiting for
    readers or the writer) until the file goes away."""
    with _checkpointers_lock:
        thread = _checkpointers.get(path)
        if thread is not None and thread.is_alive():
            return
        thread = threading.Thread(target=_checkpoint_loop, args=(path,), name="sqlite-checkpoint", daemon=True)
        _checkpointers[path] = thread
        thread.start()


def _checkpoint_loop(path: str) -> None:
    try:
        conn = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=5.0)
    except sqlite3.Error as exc:
        log.warning("no checkpointer for %s: %s", path, exc)
        return
    try:
        while os.path.exists(path):  # temporary stores go away
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            time.sleep(CHECKPOINT_INTERVAL_S)
    except sqlite3.Error as exc:
        log.warning("sqlite checkpointer for %s stopped: %s", path, exc)
    finally:
        conn.close()
