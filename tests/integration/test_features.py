"""The feature service on real Feast stores: SQLite and the private Redis pass the same suite.

A small synthetic dataset goes through the shared feature definition into the offline tables, is
materialized with `recsys.features.materialize`, then read back in-process, over gRPC from a real
`recsys features serve` process, and updated through pushes and the Kafka consumer.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import grpc
import numpy as np
import pandas as pd
import pytest
from feast import FeatureStore

from recsys.common import kafka as rk
from recsys.common.clients import insecure_channel, wait_ready
from recsys.features import materialize, offline
from recsys.features.consumer import EventConsumer
from recsys.features.service import OnlineFeatures
from recsys.features.settings import FeatureSettings
from recsys.features.store import open_store
from recsys.features.streaming import StreamUpdater
from recsys.training.data.synthetic import generate
from recsys.training.features import write_offline_tables
from recsys.v1 import events_pb2, features_pb2, features_pb2_grpc

pytestmark = pytest.mark.integration

CLICK = events_pb2.EVENT_TYPE_CLICK


class Env:
    """One materialized feature store and the offline frames it was built from."""

    def __init__(self, settings: FeatureSettings, env: dict[str, str]) -> None:
        self.settings = settings
        self.env = env
        self.fs: FeatureStore = open_store(settings)
        self.online = OnlineFeatures(self.fs, settings)
        self.users = pd.read_parquet(settings.offline_dir / offline.USER_TABLE).set_index("user_id")
        self.items = pd.read_parquet(settings.offline_dir / offline.ITEM_TABLE).set_index("item_id")
        self.history = pd.read_parquet(settings.offline_dir / offline.HISTORY_TABLE).set_index("user_id")


@pytest.fixture(scope="module")
def dataset():
    return generate(n_interactions=3000, n_users=120, n_items=400, seed=7)


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def store_env(request, dataset, tmp_path_factory) -> Env:
    backend = request.param
    root = tmp_path_factory.mktemp(f"features-{backend}")
    env = {
        "RECSYS_ONLINE_STORE": backend,
        "RECSYS_FEAST_DIR": str(root / "feast"),
        "RECSYS_FEATURES_OFFLINE_DIR": str(root / "offline"),
        "RECSYS_FEAST_PROJECT": f"t{uuid.uuid4().hex[:10]}",
    }
    if backend == "redis":
        env["RECSYS_REDIS_URL"] = request.getfixturevalue("redis_url")
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        settings = FeatureSettings.from_env()
    write_offline_tables(dataset, settings.offline_dir)
    report = materialize.materialize(settings)
    assert set(report.modes.values()) == {"full"}
    return Env(settings, env)


def _clicks(user: str, items: list[str], prefix: str, ts_ms: int | None = None) -> list[events_pb2.Event]:
    now = ts_ms or int(time.time() * 1000)
    return [
        events_pb2.Event(event_id=f"{prefix}-{i}", type=CLICK, user_id=user, item_id=item, timestamp_ms=now)
        for i, item in enumerate(items)
    ]


def _matrix(m: features_pb2.FeatureMatrix) -> np.ndarray:
    return np.asarray(m.values, dtype=np.float32).reshape(len(m.entity_ids), len(m.names))


def _feature(online: OnlineFeatures, kind: str, ids: list[str], name: str) -> list[float]:
    if kind == "user":
        return [_matrix(online.user_features(i, [name]))[0, 0] for i in ids]
    return list(_matrix(online.item_features(ids, [name]))[:, 0])


def test_materialize_then_read_back_equals_offline_values(store_env):
    online, users, items = store_env.online, store_env.users, store_env.items
    for user_id in users.index[::7]:
        m = online.user_features(user_id, [])
        assert list(m.names) == list(users.columns.drop("event_timestamp"))
        assert list(m.found) == [True]
        np.testing.assert_array_equal(_matrix(m)[0], users.loc[user_id, list(m.names)].to_numpy(np.float32))
    sample = list(items.index[::5])
    m = online.item_features(sample, [])
    assert all(m.found) and list(m.entity_ids) == sample
    np.testing.assert_array_equal(_matrix(m), items.loc[sample, list(m.names)].to_numpy(np.float32))

    # The per-feature views hold the same values through the Feast SDK.
    user_id, item_id = users.index[3], items.index[11]
    got = store_env.fs.get_online_features(
        features=["user_profile:user_mean_rating", "user_activity:user_count_30d", "item_stats:item_mean_rating"],
        entity_rows=[{"user_id": user_id, "item_id": item_id}],
    ).to_dict()
    assert got["user_mean_rating"][0] == pytest.approx(users.loc[user_id, "user_mean_rating"])
    assert got["user_count_30d"][0] == pytest.approx(users.loc[user_id, "user_count_30d"])
    assert got["item_mean_rating"][0] == pytest.approx(items.loc[item_id, "item_mean_rating"])

    # Recent items before any event: the offline history, most recent first.
    user_id = store_env.history.index[0]
    history = list(store_env.history.loc[user_id, "recent_item_ids"])
    recent, found = online.recent_items(user_id, 5)
    assert found and recent == list(reversed(history))[:5]


def test_feature_subsets_and_unknown_entities(store_env):
    online, items = store_env.online, store_env.items
    known = items.index[0]
    m = online.item_features(["no-such-item", known, known], ["item_year", "item_mean_rating"])
    assert list(m.names) == ["item_year", "item_mean_rating"]
    assert list(m.found) == [False, True, True]
    values = _matrix(m)
    expected_default = items[["item_year", "item_mean_rating"]].to_numpy(np.float64).mean(axis=0)
    np.testing.assert_allclose(values[0], expected_default, rtol=1e-5)
    np.testing.assert_array_equal(values[1], items.loc[known, ["item_year", "item_mean_rating"]].to_numpy(np.float32))
    np.testing.assert_array_equal(values[1], values[2])

    m = online.user_features("no-such-user", ["user_log_count", "user_clicks_1h"])
    assert list(m.found) == [False] and _matrix(m)[0, 1] == 0
    assert online.recent_items("no-such-user", 0) == ([], False)


def test_push_then_read_returns_the_new_values(store_env):
    online = store_env.online
    user = f"fresh-{uuid.uuid4().hex[:8]}"
    a, b, c = store_env.items.index[:3]
    result = online.push(_clicks(user, [a, b, a, c], prefix=user))
    assert (result.applied, result.duplicates) == (4, 0)
    m = online.user_features(user, ["user_clicks_1h", "user_clicks_24h"])
    assert list(m.found) == [False]  # no batch features for a brand-new user, but fresh counters
    assert list(_matrix(m)[0]) == [4, 4]
    assert online.recent_items(user, 0) == ([c, a, b], True)
    # The Feast SDK reads the same pushed rows from the stream views.
    got = store_env.fs.get_online_features(
        features=["user_stream:clicks_24h", "user_stream:recent_items", "item_stream:clicks_1h"],
        entity_rows=[{"user_id": user, "item_id": a}],
    ).to_dict()
    assert (got["clicks_24h"], got["recent_items"], got["clicks_1h"]) == ([4], [[c, a, b]], [2])

    before = _feature(online, "item", [a], "item_clicks_1h")[0]
    again = online.push(_clicks(user, [a, b, a, c], prefix=user))  # redelivered: nothing changes
    assert (again.applied, again.duplicates) == (0, 4)
    assert _feature(online, "item", [a], "item_clicks_1h")[0] == before
    assert list(_matrix(online.user_features(user, ["user_clicks_24h"]))[0]) == [4]


def test_counters_decay_with_time(store_env):
    t0 = time.time()
    clock = [t0]
    online = OnlineFeatures(store_env.fs, store_env.settings, clock=lambda: clock[0])
    user = f"decay-{uuid.uuid4().hex[:8]}"
    online.push(_clicks(user, list(store_env.items.index[:3]), prefix=user, ts_ms=int(t0 * 1000)))
    assert list(_matrix(online.user_features(user, ["user_clicks_1h", "user_clicks_24h"]))[0]) == [3, 3]
    clock[0] = t0 + 2 * 3600
    assert list(_matrix(online.user_features(user, ["user_clicks_1h", "user_clicks_24h"]))[0]) == [0, 3]
    clock[0] = t0 + 26 * 3600
    assert list(_matrix(online.user_features(user, ["user_clicks_1h", "user_clicks_24h"]))[0]) == [0, 0]


def test_incremental_materialize_picks_up_a_rewritten_table(store_env):
    settings = store_env.settings
    report = materialize.materialize(settings, fs=store_env.fs)
    assert set(report.modes.values()) == {"incremental"}
    path = settings.offline_dir / offline.ITEM_TABLE
    original = pd.read_parquet(path)
    try:
        changed = original.copy()
        changed["item_mean_rating"] = changed["item_mean_rating"] + np.float32(1.0)
        changed.to_parquet(path, index=False)
        report = materialize.materialize(settings, fs=store_env.fs)
        assert report.modes["item_stats"] == report.modes["item_vector"] == "full"
        assert report.modes["user_vector"] == "incremental"
        item_id = original["item_id"].iloc[5]
        fresh = OnlineFeatures(open_store(settings), settings)
        got = _feature(fresh, "item", [item_id], "item_mean_rating")[0]
        assert got == pytest.approx(float(original["item_mean_rating"].iloc[5]) + 1.0, rel=1e-6)
    finally:
        original.to_parquet(path, index=False)
        materialize.materialize(settings, fs=store_env.fs)


# --- over gRPC, from a real server process -------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(store_env):
    env = {**os.environ, **store_env.env, "RECSYS_FEATURES_MAX_ITEMS": "50"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "recsys.cli", "features", "serve", "--port", "0"],
        env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )
    try:
        address, lines = None, []
        deadline = time.monotonic() + 120
        while address is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(line)
            if '"serving"' in line:
                address = json.loads(line)["address"]
        assert address, "server did not start:\n" + "".join(lines[-20:])
        wait_ready(address, 30)
        yield proc, address
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def _invalid(call, request, field: str) -> None:
    with pytest.raises(grpc.RpcError) as err:
        call(request, timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in err.value.details()


def test_grpc_surface_and_bad_inputs(server, store_env):
    _, address = server
    users, items = store_env.users, store_env.items
    with insecure_channel(address) as ch:
        stub = features_pb2_grpc.FeatureServiceStub(ch)
        user_id = users.index[1]
        resp = stub.GetUserFeatures(features_pb2.GetUserFeaturesRequest(user_id=user_id), timeout=10)
        np.testing.assert_array_equal(
            _matrix(resp.features)[0], users.loc[user_id, list(resp.features.names)].to_numpy(np.float32)
        )
        ids = [*items.index[:10], "ghost"]
        resp = stub.GetItemFeatures(features_pb2.GetItemFeaturesRequest(item_ids=ids), timeout=10)
        assert list(resp.features.entity_ids) == ids and list(resp.features.found) == [True] * 10 + [False]
        np.testing.assert_array_equal(
            _matrix(resp.features)[:10], items.loc[ids[:10], list(resp.features.names)].to_numpy(np.float32)
        )
        user = f"grpc-{uuid.uuid4().hex[:8]}"
        pushed = stub.Push(features_pb2.PushRequest(events=_clicks(user, [ids[0]], prefix=user)), timeout=10)
        assert (pushed.applied, pushed.duplicates) == (1, 0)
        recent = stub.GetRecentItems(features_pb2.GetRecentItemsRequest(user_id=user), timeout=10)
        assert list(recent.item_ids) == [ids[0]] and recent.found
        context = stub.GetUserFeatures(features_pb2.GetUserFeaturesRequest(user_id=user, recent_limit=5), timeout=10)
        assert list(context.recent_item_ids) == [ids[0]] and context.recent_found
        assert list(context.features.entity_ids) == [user] and list(context.features.found) == [False]
        alone = stub.GetUserFeatures(features_pb2.GetUserFeaturesRequest(user_id=user), timeout=10)
        assert list(alone.recent_item_ids) == [] and not alone.recent_found  # recent_limit 0: features only

        _invalid(stub.GetItemFeatures, features_pb2.GetItemFeaturesRequest(), "item_ids")
        _invalid(stub.GetItemFeatures, features_pb2.GetItemFeaturesRequest(item_ids=["x"] * 51), "item_ids")
        _invalid(stub.GetItemFeatures, features_pb2.GetItemFeaturesRequest(item_ids=["a", ""]), "item_ids[1]")
        _invalid(
            stub.GetItemFeatures,
            features_pb2.GetItemFeaturesRequest(item_ids=["a"], feature_names=["item_year", "bogus"]),
            "feature_names[1]",
        )
        _invalid(stub.GetUserFeatures, features_pb2.GetUserFeaturesRequest(), "user_id")
        _invalid(
            stub.GetUserFeatures,
            features_pb2.GetUserFeaturesRequest(user_id=user_id, feature_names=["item_year"]),
            "feature_names[0]",
        )
        _invalid(stub.GetRecentItems, features_pb2.GetRecentItemsRequest(user_id="u", limit=-1), "limit")
        for bad in (-1, 1001):
            _invalid(stub.GetUserFeatures, features_pb2.GetUserFeaturesRequest(user_id="u", recent_limit=bad),
                     "recent_limit")
        _invalid(stub.Push, features_pb2.PushRequest(), "events")
        _invalid(stub.Push, features_pb2.PushRequest(events=[events_pb2.Event(user_id="u")]), "events[0].event_id")


# --- streaming from Kafka --------------------------------------------------------------------------------------


def _topic(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _produce(bootstrap: str, topic: str, values: list) -> None:
    producer = rk.make_producer(bootstrap)
    try:
        for value in values:
            key = value.user_id if isinstance(value, events_pb2.Event) else "garbage"
            producer.send(topic, key=key, value=value)
        producer.flush(timeout=30)
    finally:
        producer.close(timeout=10)


def _consumer(store_env, bootstrap: str, topic: str, group: str, dlq: str, updater=None) -> EventConsumer:
    updater = updater or StreamUpdater(store_env.fs)
    return EventConsumer(updater, bootstrap=bootstrap, topic=topic, group_id=group, dlq_topic=dlq, max_records=40)


def _group_state(consumer: EventConsumer) -> str:
    """What a consumer that got too few records owned, for the failure message."""
    kc = consumer._kafka_consumer
    return f"assignment={sorted(kc.assignment())} subscription={kc.subscription()} processed={consumer.loop.processed}"


def _workload(store_env, tag: str, n_users: int = 6, per_user: int = 20):
    """Click events of fresh users on a few items; the expected per-user and per-item click counts."""
    rng = np.random.default_rng(0)
    item_ids = [f"{tag}-item-{j}" for j in range(5)]
    events, per_item = [], dict.fromkeys(item_ids, 0)
    now = int(time.time() * 1000)
    for u in range(n_users):
        for k in range(per_user):
            item = item_ids[int(rng.integers(len(item_ids)))]
            per_item[item] += 1
            events.append(events_pb2.Event(event_id=f"{tag}-{u}-{k}", type=CLICK, user_id=f"{tag}-user-{u}",
                                           item_id=item, timestamp_ms=now))
    return events, {f"{tag}-user-{u}": per_user for u in range(n_users)}, per_item


def _assert_counts(online: OnlineFeatures, per_user: dict[str, int], per_item: dict[str, int]) -> None:
    users = list(per_user)
    assert _feature(online, "user", users, "user_clicks_24h") == [per_user[u] for u in users]
    items = list(per_item)
    assert _feature(online, "item", items, "item_clicks_24h") == [per_item[i] for i in items]


def test_consumer_applies_events_and_dead_letters_garbage(store_env, kafka_bootstrap):
    topic, dlq, tag = _topic("events"), _topic("dlq"), f"c{uuid.uuid4().hex[:6]}"
    rk.ensure_topics({topic: 3, dlq: 1}, kafka_bootstrap)
    events, per_user, per_item = _workload(store_env, tag, n_users=4, per_user=10)
    duplicate = events_pb2.Event()
    duplicate.CopyFrom(events[3])
    _produce(kafka_bootstrap, topic, [*events[:20], b"\xff\x00not-a-protobuf", duplicate, *events[20:]])
    consumer = _consumer(store_env, kafka_bootstrap, topic, f"g-{tag}", dlq)
    try:
        consumed = consumer.run(max_records=len(events) + 2, idle_timeout_s=20)
        state = _group_state(consumer)
    finally:
        consumer.close()
    assert consumed == len(events) + 2, state
    assert consumer.loop.dead_lettered == 1
    assert (consumer.stats.applied, consumer.stats.duplicates) == (len(events), 1)
    _assert_counts(store_env.online, per_user, per_item)


class _CrashingUpdater(StreamUpdater):
    """Fails once, after the item rows were written and before the user rows (a crash in between)."""

    def __init__(self, fs) -> None:
        super().__init__(fs)
        self.crashed = False

    def _push_users(self, users, now) -> None:
        if not self.crashed:
            self.crashed = True
            raise RuntimeError("simulated crash between the item and the user writes")
        super()._push_users(users, now)


def test_consumer_restart_loses_no_event_and_applies_none_twice(store_env, kafka_bootstrap):
    topic, dlq, tag = _topic("events"), _topic("dlq"), f"r{uuid.uuid4().hex[:6]}"
    group = f"g-{tag}"
    rk.ensure_topics({topic: 3, dlq: 1}, kafka_bootstrap)
    events, per_user, per_item = _workload(store_env, tag)
    _produce(kafka_bootstrap, topic, events)

    first = _consumer(store_env, kafka_bootstrap, topic, group, dlq)  # stops part-way (clean restart)
    try:
        first.run(max_records=40, idle_timeout_s=20)
    finally:
        first.close()
    assert 0 < first.stats.applied < len(events)

    crashing = _consumer(store_env, kafka_bootstrap, topic, group, dlq, _CrashingUpdater(store_env.fs))
    try:
        with pytest.raises(RuntimeError, match="simulated crash"):
            crashing.run(idle_timeout_s=20)  # raises on its first batch (the idle clock waits out the rejoin)
            pytest.fail(f"the crashing consumer got no batch: {_group_state(crashing)}")
    finally:
        crashing.close()  # nothing of the failed batch was committed

    last = _consumer(store_env, kafka_bootstrap, topic, group, dlq)
    try:
        # ends once the rest is applied; the idle bound only matters when events are missing (a busy machine's
        # fetches can stall for seconds after the crashed member's rebalance)
        last.run(max_records=len(events) - first.stats.applied, idle_timeout_s=20)
    finally:
        last.close()
    assert first.stats.applied + last.stats.applied == len(events), _group_state(last)
    assert last.stats.duplicates == 0
    _assert_counts(store_env.online, per_user, per_item)

