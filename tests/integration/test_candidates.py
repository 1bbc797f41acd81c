"""The candidate service as its own process over a real Milvus Lite, with a registry trained by the real pipeline.

One module-scoped service (its process owns the Milvus Lite file; the test process and the `recsys index`
subprocesses join it through the published socket, as an operator's reindex would). A small in-test
FeatureService answers from the registry's feature tables and can be switched to failing.
The tests that freeze (SIGSTOP) and kill the Lite child run near the end and wait for the service to recover.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np
import pandas as pd
import pytest

from recsys.common.clients import insecure_channel
from recsys.v1 import candidates_pb2, candidates_pb2_grpc, features_pb2, features_pb2_grpc

sys.path.insert(0, str(Path(__file__).parent))  # candidates_support sits beside this file (importlib mode)
from candidates_support import (  # noqa: E402
    ServerProcess,
    base_env,
    free_port,
    milvus_lite_child,
    recsys,
    train_registry,
)

pytestmark = pytest.mark.integration

ANN = candidates_pb2.CANDIDATE_SOURCE_ANN
POPULAR_SOURCES = {candidates_pb2.CANDIDATE_SOURCE_POPULAR, candidates_pb2.CANDIDATE_SOURCE_GENRE_POPULAR}


class FakeFeatures(features_pb2_grpc.FeatureServiceServicer):
    """Answers from one registry version's feature tables; `mode = "down"` makes every call fail."""

    def __init__(self, version_dir: Path) -> None:
        self.users = pd.read_parquet(version_dir / "features" / "user_features.parquet").set_index("user_id")
        self.users = self.users.drop(columns=["event_timestamp"])
        history = pd.read_parquet(version_dir / "features" / "user_history.parquet")
        self.history = {str(u): list(h) for u, h in zip(history["user_id"], history["recent_item_ids"], strict=True)}
        self.mode = "ok"
        self.calls = 0

    def GetUserFeatures(self, request, context):
        self.calls += 1
        if self.mode == "down":
            context.abort(grpc.StatusCode.UNAVAILABLE, "down for the test")
        found = request.user_id in self.users.index
        names = list(self.users.columns)
        values = self.users.loc[request.user_id].to_numpy(np.float32) if found else np.zeros(len(names), np.float32)
        matrix = features_pb2.FeatureMatrix(names=names, entity_ids=[request.user_id], found=[found], values=values)
        items = self.history.get(request.user_id, [])[::-1][: request.recent_limit]
        return features_pb2.GetUserFeaturesResponse(features=matrix, recent_item_ids=items, recent_found=bool(items))

    def GetRecentItems(self, request, context):
        if self.mode == "down":
            context.abort(grpc.StatusCode.UNAVAILABLE, "down for the test")
        items = self.history.get(request.user_id, [])[::-1][: request.limit or 20]
        return features_pb2.GetRecentItemsResponse(item_ids=items, found=bool(items))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("candidates")
    registry = train_registry(work / "models")
    fake = FakeFeatures(registry.path("v0001"))
    features_server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    features_pb2_grpc.add_FeatureServiceServicer_to_server(fake, features_server)
    features_port = features_server.add_insecure_port("127.0.0.1:0")
    features_server.start()
    env = base_env(
        work / "var",
        registry.root,
        RECSYS_FEATURES_ADDR=f"127.0.0.1:{features_port}",
        RECSYS_CANDIDATES_FEATURES_TIMEOUT_MS="200",
        RECSYS_CANDIDATES_REFRESH_S="0.2",
        RECSYS_MILVUS_TIMEOUT_MS="300",  # a busy 2-core CI machine must not turn answers degraded
        RECSYS_CANDIDATES_BREAKER_COOLDOWN_S="0.5",
        RECSYS_CANDIDATES_MAX_K="200",
    )
    (work / "var").mkdir()
    built = recsys("index", "--quiet", env=env)
    assert built.returncode == 0, built.stderr
    first = json.loads(built.stdout.strip().splitlines()[-1])
    server = ServerProcess(env)
    channel = None
    try:
        server.wait_ready()
        channel = insecure_channel(server.address)
        yield {
            "env": env,
            "registry": registry,
            "server": server,
            "stub": candidates_pb2_grpc.CandidateServiceStub(channel),
            "fake": fake,
            "first": first["collection"],
        }
    finally:
        if channel is not None:
            channel.close()
        server.stop()
        features_server.stop(0)


@pytest.fixture(scope="module")
def catalog(stack):
    from recsys.candidates.catalog import load_catalog

    cat = load_catalog(stack["registry"].path("v0001"), with_embeddings=False)
    return {
        "ids": set(cat.item_ids),
        "genres": {str(i): set(cat.item_genres(r)) for r, i in enumerate(cat.item_ids)},
        "catalog": cat,
    }


def _retrieve(stack, timeout: float = 10.0, **fields) -> candidates_pb2.RetrieveResponse:
    return stack["stub"].Retrieve(candidates_pb2.RetrieveRequest(**fields), timeout=timeout)


def _ids(response) -> list[str]:
    return [c.item_id for c in response.candidates]


def test_known_user_gets_k_distinct_ann_candidates_without_seen_items(stack, catalog):
    user = next(iter(stack["fake"].history))
    response = _retrieve(stack, user_id=user, k=50)
    assert not response.degraded, response.degraded_reason
    ids = _ids(response)
    assert len(ids) == 50 and len(set(ids)) == 50
    assert {c.source for c in response.candidates} == {ANN}
    assert not set(ids) & set(stack["fake"].history[user])  # seen (recent) items are excluded
    assert response.index_version == stack["first"]
    scores = [c.score for c in response.candidates]
    assert scores == sorted(scores, reverse=True)


def test_features_passed_in_the_request_are_used_instead_of_the_feature_service(stack):
    fake = stack["fake"]
    user = next(iter(fake.history))
    before = fake.calls
    recent = fake.history[user][::-1][:10]
    response = _retrieve(stack, user_id=user, k=20, recent_item_ids=recent)
    assert fake.calls == before  # nothing fetched
    assert not set(_ids(response)) & set(recent)
    assert not response.degraded


def test_filters_are_never_violated(stack, catalog):
    cat = catalog["catalog"]
    rng = np.random.default_rng(1)
    unavailable = [str(i) for i in rng.choice(cat.item_ids, size=60, replace=False)]
    marked = recsys("index", "--unavailable", *unavailable, env=stack["env"])
    assert marked.returncode == 0, marked.stderr
    users = list(stack["fake"].history)[:6] + ["never-seen-user"]
    genres = cat.genres
    for n, user in enumerate(users):
        include = list(rng.choice(genres, size=2, replace=False))
        exclude = [g for g in rng.choice(genres, size=3, replace=False) if g not in include]
        excluded_ids = [str(i) for i in rng.choice(cat.item_ids, size=100, replace=False)]
        flt = candidates_pb2.ItemFilter(
            include_genres=include if n % 2 == 0 else [],
            exclude_genres=exclude,
            available_only=True,
            exclude_item_ids=excluded_ids,
        )
        response = _retrieve(stack, user_id=user, k=150, filter=flt)
        assert not response.degraded, response.degraded_reason
        ids = _ids(response)
        assert ids and len(set(ids)) == len(ids)
        for c in response.candidates:
            assert c.item_id not in excluded_ids
            assert c.item_id not in unavailable, candidates_pb2.CandidateSource.Name(c.source)
        for item in ids:
            assert not catalog["genres"][item] & set(exclude), (item, catalog["genres"][item], exclude)
            if flt.include_genres:
                assert catalog["genres"][item] & set(include), (item, catalog["genres"][item], include)


def test_cold_start_user_gets_k_items_from_the_tower_and_segment_popularity(stack):
    response = _retrieve(stack, user_id="brand-new-user", k=40)
    assert not response.degraded, response.degraded_reason
    ids = _ids(response)
    assert len(ids) == 40 and len(set(ids)) == 40
    sources = {c.source for c in response.candidates}
    assert ANN in sources and sources & POPULAR_SOURCES
    anonymous = _retrieve(stack, k=10)  # no user id at all
    assert len(anonymous.candidates) == 10


def test_feature_service_down_means_cold_start_not_an_error(stack):
    stack["fake"].mode = "down"
    try:
        user = next(iter(stack["fake"].history))
        for _ in range(5):  # the breaker opens after a few failures; answers stay complete
            response = _retrieve(stack, user_id=user, k=30)
            assert len(response.candidates) == 30
            assert response.degraded and "feature service" in response.degraded_reason
    finally:
        stack["fake"].mode = "ok"
    deadline = time.monotonic() + 10  # back up: the breaker's next probe closes it
    while time.monotonic() < deadline and _retrieve(stack, user_id=user, k=30).degraded:
        time.sleep(0.1)
    assert not _retrieve(stack, user_id=user, k=30).degraded


@pytest.mark.parametrize(
    ("fields", "field_name"),
    [
        ({"k": 0}, "k"),
        ({"k": -3}, "k"),
        ({"k": 201}, "k"),
        ({"k": 5, "filter": candidates_pb2.ItemFilter(include_genres=["Polka"])}, "filter.include_genres[0]"),
        ({"k": 5, "filter": candidates_pb2.ItemFilter(exclude_genres=["Drama", "??"])}, "filter.exclude_genres[1]"),
        ({"k": 5, "filter": candidates_pb2.ItemFilter(exclude_item_ids=["i1", ""])}, "filter.exclude_item_ids[1]"),
        ({"k": 5, "recent_item_ids": ["x" * 300]}, "recent_item_ids[0]"),
        (
            {"k": 5, "user_features": features_pb2.FeatureMatrix(names=["a", "b"], entity_ids=["u"], values=[1.0])},
            "user_features.values",
        ),
        (
            {"k": 5, "user_features": features_pb2.FeatureMatrix(names=["a"], entity_ids=["u"], values=[float("inf")])},
            "user_features.values",
        ),
    ],
)
def test_bad_input_is_invalid_argument_naming_the_field(stack, fields, field_name):
    with pytest.raises(grpc.RpcError) as err:
        _retrieve(stack, user_id="u1", **fields)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith(field_name + ":"), err.value.details()


def test_unknown_filter_field_is_invalid_argument(stack):
    raw = candidates_pb2.RetrieveRequest(user_id="u1", k=5).SerializeToString()
    raw += bytes([0x1A, 0x02, 0x48, 0x01])  # filter { field 9: 1 } (a field this server does not know)
    call = stack["server"].address
    with insecure_channel(call) as ch:
        method = ch.unary_unary("/recsys.v1.CandidateService/Retrieve")
        with pytest.raises(grpc.RpcError) as err:
            method(raw, timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("filter:"), err.value.details()


def test_similar_items(stack, catalog):
    item = str(catalog["catalog"].item_ids[5])
    response = stack["stub"].SimilarItems(candidates_pb2.SimilarItemsRequest(item_id=item, k=10), timeout=10)
    ids = _ids(response)
    assert len(ids) == 10 and item not in ids
    assert {c.source for c in response.candidates} == {ANN}
    with pytest.raises(grpc.RpcError) as err:
        stack["stub"].SimilarItems(candidates_pb2.SimilarItemsRequest(item_id="no-such-item", k=3), timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as err:
        stack["stub"].SimilarItems(candidates_pb2.SimilarItemsRequest(item_id=item, k=0), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and err.value.details().startswith("k:")


def test_top_k_search_equals_milvus_client_search(stack, catalog):
    from recsys.candidates import schema
    from recsys.candidates.milvus import connect
    from recsys.candidates.settings import MilvusTarget
    from recsys.candidates.top_k import search_top_k, search_top_k_many
    from recsys.candidates.versions import VersionStore

    milvus = connect(MilvusTarget(stack["env"]["RECSYS_MILVUS_URI"]))  # joins the service's Lite via its socket
    try:
        collection = VersionStore(milvus.client, "items").active().collection
        seeds = [str(i) for i in catalog["catalog"].item_ids[3:6]]
        vectors = [np.asarray(row[schema.VECTOR_FIELD], dtype=np.float32) for row in sorted(
            milvus.client.get(collection, ids=seeds, output_fields=[schema.VECTOR_FIELD]),
            key=lambda row: seeds.index(row["item_id"]))]
        params = schema.search_params({}, 20)
        batched = search_top_k_many(milvus.client, collection, vectors, limit=20, search_params=params)
        assert batched == [search_top_k(milvus.client, collection, v, limit=20, search_params=params) for v in vectors]
        seed = seeds[0]
        vector = np.asarray(milvus.client.get(collection, ids=[seed], output_fields=[schema.VECTOR_FIELD])[0][
            schema.VECTOR_FIELD], dtype=np.float32)
        params = schema.search_params({}, 50)
        for expr in ("", f"{schema.AVAILABLE_FIELD} == true"):
            lean = search_top_k(milvus.client, collection, vector, limit=50, filter=expr, search_params=params)
            hits = milvus.client.search(collection, [vector.tolist()], limit=50, filter=expr, search_params=params)[0]
            assert [item for item, _ in lean] == [hit["id"] for hit in hits]
            assert np.allclose([score for _, score in lean], [hit["distance"] for hit in hits], atol=1e-6)
            assert seed in {item for item, score in lean if score >= lean[0][1] - 1e-5}  # ties: equal embeddings
        with pytest.raises(Exception, match="(?i)collection"):
            search_top_k(milvus.client, "no_such_collection", vector, limit=5, search_params=params)
    finally:
        milvus.close()


def test_upserted_item_is_retrievable(stack, catalog, tmp_path):
    from recsys.candidates.milvus import connect
    from recsys.candidates.settings import MilvusTarget
    from recsys.candidates.versions import VersionStore

    milvus = connect(MilvusTarget(stack["env"]["RECSYS_MILVUS_URI"]))  # joins the service's Lite via its socket
    try:
        info = VersionStore(milvus.client, "items").active()
        probe = str(info.genres[0])
        seed = str(catalog["catalog"].item_ids[1])
        rows = milvus.client.get(info.collection, ids=[seed], output_fields=["embedding"])
        vector = np.asarray(rows[0]["embedding"], dtype=np.float32)
    finally:
        milvus.close()
    frame = pd.DataFrame(
        {"item_id": ["new-item-1"], "embedding": [vector.tolist()], "genres": [[probe]], "popularity": [1.0]}
    )
    frame.to_parquet(tmp_path / "new.parquet")
    done = recsys("index", "--upsert", str(tmp_path / "new.parquet"), env=stack["env"])
    assert done.returncode == 0, done.stderr
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        response = stack["stub"].SimilarItems(candidates_pb2.SimilarItemsRequest(item_id=seed, k=3), timeout=10)
        if "new-item-1" in _ids(response):
            break
        time.sleep(0.2)
    assert _ids(response)[0] == "new-item-1"


def test_reindex_swaps_under_a_stream_of_requests_and_rolls_back(stack):
    stop = threading.Event()
    failures: list[str] = []
    versions: list[str] = []
    users = list(stack["fake"].history)[:5] + ["cold-user"]

    def stream() -> None:
        n = 0
        while not stop.is_set():
            try:
                response = _retrieve(stack, user_id=users[n % len(users)], k=50, timeout=5)
                if len(response.candidates) != 50 or response.degraded:
                    failures.append(f"short or degraded: {len(response.candidates)} {response.degraded_reason}")
                versions.append(response.index_version)
            except grpc.RpcError as exc:
                failures.append(f"{exc.code()}: {exc.details()}")
            n += 1

    threads = [threading.Thread(target=stream) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        built = recsys("index", "--quiet", "--version", "v0002", env=stack["env"])
        assert built.returncode == 0, built.stderr
        new = json.loads(built.stdout.strip().splitlines()[-1])
        assert new["previous"] == [stack["first"]]
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and (not versions or versions[-1] != new["collection"]):
            time.sleep(0.1)
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)
    assert not failures, failures[:5]
    assert versions[-1] == new["collection"]
    assert stack["first"] in versions  # the stream really spanned the swap
    assert _retrieve(stack, user_id=users[0], k=5).index_version == new["collection"]

    rolled = recsys("index", "--rollback", env=stack["env"])
    assert rolled.returncode == 0, rolled.stderr
    assert json.loads(rolled.stdout)["active"] == stack["first"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _retrieve(stack, k=5).index_version != stack["first"]:
        time.sleep(0.1)
    assert _retrieve(stack, k=5).index_version == stack["first"]


def test_slow_milvus_gives_degraded_answers_within_the_deadline(stack):
    """SIGSTOP freezes the Milvus Lite child: searches exceed the deadline and popularity answers."""
    child = milvus_lite_child(stack["server"].proc.pid)
    assert child is not None
    known = next(iter(stack["fake"].history))
    os.kill(child, signal.SIGSTOP)
    try:
        for _ in range(8):
            started = time.monotonic()
            response = _retrieve(stack, user_id=known, k=20)
            assert time.monotonic() - started < 2.0  # the 300 ms search deadline, not a hang
            assert len(response.candidates) == 20 and response.degraded
            assert "milvus" in response.degraded_reason
    finally:
        os.kill(child, signal.SIGCONT)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and _retrieve(stack, user_id=known, k=20).degraded:
        time.sleep(0.2)
    assert not _retrieve(stack, user_id=known, k=20).degraded
    assert milvus_lite_child(stack["server"].proc.pid) == child  # a slow Milvus is waited for, not restarted


def test_milvus_stopped_gives_degraded_answers_then_recovers(stack, catalog):
    """SIGKILL the Milvus Lite child of the service; answers continue from popularity, then ANN again."""
    child = milvus_lite_child(stack["server"].proc.pid)
    assert child is not None, "the service should own a Milvus Lite child process"
    os.kill(child, signal.SIGKILL)
    flt = candidates_pb2.ItemFilter(exclude_genres=[catalog["catalog"].genres[0]], available_only=True)
    degraded = 0
    for i in range(30):
        response = _retrieve(stack, user_id=f"u{i}", k=20, filter=flt)
        ids = _ids(response)
        assert len(ids) == 20 and len(set(ids)) == 20
        for item in ids:
            assert catalog["catalog"].genres[0] not in catalog["genres"][item]
        if response.degraded:
            degraded += 1
            assert "milvus" in response.degraded_reason
            assert {c.source for c in response.candidates} <= POPULAR_SOURCES
    assert degraded > 0
    similar = stack["stub"].SimilarItems(
        candidates_pb2.SimilarItemsRequest(item_id=str(catalog["catalog"].item_ids[3]), k=5), timeout=10
    )
    assert len(similar.candidates) == 5
    deadline = time.monotonic() + 30  # the service restarts its Milvus Lite child and answers from ANN again
    known = next(iter(stack["fake"].history))
    while time.monotonic() < deadline:
        response = _retrieve(stack, user_id=known, k=20)
        if not response.degraded:
            break
        time.sleep(0.3)
    assert not response.degraded, response.degraded_reason
    assert {c.source for c in response.candidates} == {ANN}


def test_service_starts_and_answers_degraded_when_milvus_is_unreachable(stack):
    env = dict(stack["env"], RECSYS_MILVUS_URI=f"http://127.0.0.1:{free_port()}")  # nothing listens there
    server = ServerProcess(env)
    try:
        server.wait_ready()
        with insecure_channel(server.address) as ch:
            stub = candidates_pb2_grpc.CandidateServiceStub(ch)
            user = next(iter(stack["fake"].history))
            response = stub.Retrieve(candidates_pb2.RetrieveRequest(user_id=user, k=25), timeout=10)
        assert len(response.candidates) == 25 and response.degraded
        assert response.index_version.startswith("fallback:")
        assert {c.source for c in response.candidates} <= POPULAR_SOURCES
    finally:
        server.stop()
