"""The batched SQLite online store writes and reads exactly what Feast's SqliteOnlineStore does."""

from __future__ import annotations

import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from feast import Entity, FeatureView, Field, FileSource, RepoConfig, ValueType
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import get_online_store_from_config
from feast.infra.online_stores.sqlite import SqliteOnlineStore
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Int64List, StringList
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.types import Array, Bytes, Int64, String

from recsys.features.sqlite_store import STORE_TYPE, BatchedSqliteOnlineStore, entity_key_bytes
from recsys.features.vectors import KeyEncoder


def _key(user_id: str | int) -> EntityKeyProto:
    value = ValueProto(string_val=user_id) if isinstance(user_id, str) else ValueProto(int64_val=user_id)
    return EntityKeyProto(join_keys=["user_id"], entity_values=[value])


@pytest.mark.parametrize("user_id", ["u1", "", "ünïcode-ä", "x" * 300, 42])
def test_entity_keys_are_feast_serialized_keys(user_id):
    assert entity_key_bytes(_key(user_id), 3) == serialize_entity_key(_key(user_id), 3)
    two = EntityKeyProto(join_keys=["b", "a"], entity_values=[ValueProto(string_val="1"), ValueProto(int64_val=2)])
    assert entity_key_bytes(two, 3) == serialize_entity_key(two, 3)


def _config(tmp_path, kind: str) -> RepoConfig:
    return RepoConfig(
        project="t", provider="local", registry={"path": str(tmp_path / "registry.db")},
        online_store={"type": kind, "path": str(tmp_path / "online.db")}, offline_store={"type": "file"},
        entity_key_serialization_version=3, repo_path=tmp_path,
    )


@pytest.fixture
def view() -> FeatureView:
    user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING)
    return FeatureView(
        name="user_stream", entities=[user], ttl=timedelta(days=1),
        schema=[Field(name="clicks", dtype=Int64), Field(name="recent", dtype=Array(String)),
                Field(name="buckets", dtype=Array(Int64)), Field(name="blob", dtype=Bytes)],
        source=FileSource(path="unused.parquet", timestamp_field="ts"),
    )


def _row(i: int, ts: datetime) -> tuple:
    values = {
        "clicks": ValueProto(int64_val=i),
        "recent": ValueProto(string_list_val=StringList(val=[f"i{i}", "i0"])),
        "buckets": ValueProto(int64_list_val=Int64List(val=[1700000000, i])),
        "blob": ValueProto(bytes_val=bytes([i % 256]) * 8),
    }
    return _key(f"u{i}"), values, ts, None


def _dump(path) -> list[tuple]:
    with sqlite3.connect(path) as conn:
        return sorted(conn.execute('SELECT entity_key, feature_name, value, value_text, vector_value, event_ts, '
                                   'created_ts FROM "t_user_stream"').fetchall())


def test_writes_and_reads_match_feast(tmp_path, view):
    ours_cfg = _config(tmp_path / "ours", STORE_TYPE)
    feast_cfg = _config(tmp_path / "feast", "sqlite")
    ours, feast = (get_online_store_from_config(c.online_store) for c in (ours_cfg, feast_cfg))
    assert type(ours) is BatchedSqliteOnlineStore and type(feast) is SqliteOnlineStore
    t0 = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    batches = [[_row(i, t0) for i in range(30)], [_row(i, t0 + timedelta(seconds=7)) for i in range(20, 40)]]
    batches[1].append(_row(25, t0 + timedelta(seconds=9)))  # the same entity twice in a batch: the last wins
    for store, cfg in ((ours, ours_cfg), (feast, feast_cfg)):
        store.update(cfg, [], [view], [], [], partial=False)
        progress: list[int] = []
        for batch in batches:
            store.online_write_batch(cfg, view, batch, progress.append)
        assert sum(progress) == sum(len(b) for b in batches)
    assert _dump(tmp_path / "ours" / "online.db") == _dump(tmp_path / "feast" / "online.db")

    keys = [_key(f"u{i}") for i in (39, 0, 25, 99, 0)]
    got = ours.online_read(ours_cfg, view, keys)
    assert got == feast.online_read(feast_cfg, view, keys)
    # Each store reads the other's file alike (same tables, encoding and timestamps).
    assert got == feast.online_read(ours_cfg, view, keys) == ours.online_read(feast_cfg, view, keys)
    assert got[3] == (None, None)
    assert got[2][0] == (t0 + timedelta(seconds=9)).replace(microsecond=0)
    assert got[2][1]["clicks"].int64_val == 25
    assert ours.online_read(ours_cfg, view, []) == []
    # Requested features only (Feast's SQLite store returns them all; its callers pick the requested ones).
    subset = ours.online_read(ours_cfg, view, keys, ["recent", "clicks"])
    assert [(ts, values and set(values)) for ts, values in subset] == [
        (ts, values and {"recent", "clicks"}) for ts, values in got
    ]
    assert all(values is None or values["recent"] == full["recent"]
               for (_, values), (_, full) in zip(subset, got, strict=True))
    # Keys serialized straight from the string ids (what the stream views send) read alike, without protos.
    encoded = KeyEncoder("user_id", 3)(["u39", "u0", "u25", "u99", "u0"])
    assert ours.online_read_keys(ours_cfg, view, encoded) == got
    assert ours.online_read_keys(ours_cfg, view, encoded, ["recent", "clicks"]) == subset


def test_a_writer_checkpoints_the_log_off_its_commit_path(tmp_path, view):
    cfg = _config(tmp_path, STORE_TYPE)
    store = get_online_store_from_config(cfg.online_store)
    store.update(cfg, [], [view], [], [], partial=False)
    db = tmp_path / "online.db"
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
    empty = db.stat().st_size
    store.online_write_batch(cfg, view, [_row(i, datetime(2026, 1, 2, tzinfo=UTC)) for i in range(3000)], None)
    assert store._get_conn(cfg).execute("PRAGMA wal_autocheckpoint").fetchone() == (0,)
    assert any(t.name == "sqlite-checkpoint" and t.is_alive() for t in threading.enumerate())
    # No commit checkpoints any more: the pages reach the database file through the checkpointer thread.
    deadline = time.monotonic() + 10
    while db.stat().st_size <= empty + 100_000 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert db.stat().st_size > empty + 100_000
