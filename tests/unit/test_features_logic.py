"""Feature service pieces that need no store: counters, vector decoding, store configuration, definitions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.repo_config import load_repo_config

from recsys.features import counters, definitions, offline
from recsys.features.materialize import MaterializeError, batch_views
from recsys.features.settings import FeatureSettings
from recsys.features.store import StoreConfigError, online_store_config, redis_connection_string
from recsys.features.vectors import VectorReader

T0 = 1_699_999_980  # a minute boundary


def test_counters_windows_and_compaction():
    flat = counters.add([], [T0, T0 + 10, T0 + 70], now_s=T0 + 100)
    assert counters.to_dict(flat) == {T0: 2, T0 + 60: 1}
    assert counters.window_counts(flat, T0 + 100) == [3, 3]
    # Two hours later the minute buckets are merged into their hour bucket and leave the 1 h window.
    later = counters.add(flat, [T0 + 7200], now_s=T0 + 7200)
    hour = T0 - T0 % counters.HOUR
    assert counters.to_dict(later) == {hour: 3, T0 + 7200: 1}
    assert counters.window_counts(later, T0 + 7200) == [1, 4]
    # After a day everything but the newest click is gone; clicks older than a day are ignored.
    day = counters.add(later, [T0 - 2 * counters.DAY], now_s=T0 + counters.DAY + 7200)
    assert counters.window_counts(day, T0 + counters.DAY + 7200) == [0, 1]
    assert counters.add([], [T0 + 999], now_s=T0) == [T0, 1]  # future times count as now


def test_item_offsets_skip_replays_and_survive_a_recreated_topic():
    from recsys.features.streaming import first_delivery

    offsets: list[int] = []
    assert [first_delivery(offsets, 2, o, window=100) for o in (10, 11, 11, 5)] == [True, True, False, False]
    assert offsets == [-1, -1, 11]
    assert first_delivery(offsets, 0, 0, window=100) and first_delivery(offsets, -1, -1, window=100)
    offsets = [5000]
    assert first_delivery(offsets, 0, 3, window=100) and offsets == [3]  # far below: a new topic


def _reader(width: int) -> VectorReader:
    reader = VectorReader.__new__(VectorReader)
    reader.view_name, reader.width, reader._nbytes = "v", width, 4 * width
    reader._header = ValueProto(bytes_val=b"\0" * reader._nbytes).SerializeToString()[: -reader._nbytes]
    reader._row_len = len(reader._header) + reader._nbytes
    return reader


@pytest.mark.parametrize("width", [3, 40])  # a one- and a two-byte length varint
def test_vector_decoding_fast_path_and_fallback(width):
    reader = _reader(width)
    rows = np.arange(3 * width, dtype=np.float32).reshape(3, width)
    blobs = [ValueProto(bytes_val=r.tobytes()).SerializeToString() for r in rows]
    values, found = reader.decode([blobs[0], None, blobs[2]])
    assert found.tolist() == [True, False, True]
    np.testing.assert_array_equal(values[[0, 2]], rows[[0, 2]])
    assert not values[1].any()
    # A row of the wrong width (a stale layout) is reported as not found instead of misread.
    short = ValueProto(bytes_val=rows[1, :-1].tobytes()).SerializeToString()
    values, found = reader.decode([short, blobs[1]])
    assert found.tolist() == [False, True]
    np.testing.assert_array_equal(values[1], rows[1])


def test_entity_key_fast_path_matches_feast():
    from feast.infra.key_encoding_utils import serialize_entity_key

    from recsys.features.vectors import KeyEncoder, entity_key_proto

    for suffix in (b"", b"project"):
        encoder = KeyEncoder("item_id", 3, suffix)
        assert encoder._fast is not None
        ids = ["i00001", "", "é-ü", "x" * 1000]
        assert encoder(ids) == [serialize_entity_key(entity_key_proto("item_id", i), 3) + suffix for i in ids]


def test_redis_urls_become_feast_connection_strings():
    assert redis_connection_string("redis://127.0.0.1:6390/0") == "127.0.0.1:6390,db=0"
    assert redis_connection_string("rediss://:s3cret@cache:7000/2") == "cache:7000,db=2,password=s3cret,ssl=true"
    with pytest.raises(StoreConfigError):
        redis_connection_string("http://x:1")


def _settings(tmp_path, **kw) -> FeatureSettings:
    base = dict(online_store="sqlite", redis_url="redis://127.0.0.1:6390/0", feast_dir=tmp_path / "feast",
                offline_dir=tmp_path / "offline", project="recsys", max_items=1000, recent_default=20,
                recent_keep=50, dedup_keep=256, max_push_events=100)
    base.update(kw)
    return FeatureSettings(**base)


def test_feature_store_yaml_variants_match_the_generated_config(tmp_path, monkeypatch):
    repo = Path(__file__).resolve().parents[2] / "feature_repo"
    monkeypatch.setenv("RECSYS_FEAST_DIR", str(tmp_path / "feast"))
    sqlite = load_repo_config(repo, repo / "feature_store.yaml")
    assert sqlite.online_store.type == online_store_config(_settings(tmp_path))["type"]
    assert sqlite.online_store.path == online_store_config(_settings(tmp_path))["path"]
    assert sqlite.registry.path == str(tmp_path / "feast" / "registry.db")
    redis = load_repo_config(repo, repo / "feature_store.redis.yaml")
    expected = online_store_config(_settings(tmp_path, online_store="redis"))
    assert redis.online_store.connection_string == expected["connection_string"]
    assert redis.online_store.skip_dedup is expected["skip_dedup"] is True
    with pytest.raises(StoreConfigError):
        online_store_config(_settings(tmp_path, online_store="memcached"))


def test_user_columns_are_grouped_into_views():
    groups = definitions.group_user_columns(
        ["user_log_count", "user_count_30d", "user_genre_action", "user_demo_age", "user_mean_item_year"]
    )
    assert groups == {
        "user_profile": ["user_log_count", "user_demo_age"],
        "user_activity": ["user_count_30d", "user_mean_item_year"],
        "user_genre_affinity": ["user_genre_action"],
    }


def test_pack_table_keeps_column_order_and_fills_missing_values(tmp_path):
    ts = pa.array([0, 0, 0], pa.timestamp("us", tz="UTC"))
    src = tmp_path / "items.parquet"
    pq.write_table(pa.table({"item_id": ["a", "b", "c"], "item_y": [1.0, None, 3.0], "item_x": [1, 2, 3],
                             "event_timestamp": ts}), src)
    packed = offline.pack_table(src, tmp_path / "packed.parquet", "item_id")
    assert packed.columns == ["item_y", "item_x"] and packed.defaults == [2.0, 2.0]
    blobs = pq.read_table(tmp_path / "packed.parquet")["values"].to_pylist()
    assert np.frombuffer(blobs[1], "<f4").tolist() == [2.0, 2.0]
    pq.write_table(pa.table({"item_id": ["a"], "item_name": ["x"], "event_timestamp": ts[:1]}), src)
    with pytest.raises(offline.OfflineTableError, match="item_name"):
        offline.pack_table(src, tmp_path / "packed.parquet", "item_id")


def test_materialize_rejects_unknown_views():
    assert batch_views(None, ["a", "b"]) == ["a", "b"]
    assert batch_views(["b", "b"], ["a", "b"]) == ["b"]
    with pytest.raises(MaterializeError, match="nope"):
        batch_views(["nope"], ["a", "b"])
