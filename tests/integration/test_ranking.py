"""The ranking service on a real local Ray + Serve, called through Serve's native gRPC proxy.

One module-scoped service (Ray start is the expensive part): two registry versions trained by the real
training pipeline on a small synthetic dataset, a feature service answering from that version's feature
tables (on the shared gRPC bootstrap), and the ranker deployed by `RankingRuntime`. Ray and Serve are shut
down at the end even when a test fails, and no Ray process of this module may outlive it.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

import grpc
import numpy as np
import pandas as pd
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from recsys.common.ports import free_port
from recsys.common.server import GrpcServer, ServerOptions
from recsys.model.bundle import save_bundle
from recsys.model.inputs import ranking_inputs
from recsys.model.rankers.dcn import DCNConfig, DCNRanker
from recsys.model.rankers.lightgbm import LGBMConfig, LGBMRankerModel
from recsys.model.registry import Registry
from recsys.model.spec import FeatureSpec
from recsys.training.data import generate
from recsys.training.mf import ALSConfig
from recsys.training.pipeline import TrainConfig, train_all
from recsys.training.two_tower import TwoTowerConfig
from recsys.v1 import features_pb2, features_pb2_grpc, ranking_pb2, ranking_pb2_grpc

pytestmark = pytest.mark.integration

APP = "ranking-test"
N_CANDIDATES = 300
MAX_CANDIDATES = 400
MODEL_CLASSES = {"dcn": (DCNRanker, "dcn"), "lightgbm": (LGBMRankerModel, "lgbm")}




# -- a registry with two versions, trained by the real pipeline (small sizes) --------------------------------
def _train_registry(root: Path) -> Registry:
    ds = generate(5000, seed=0)
    registry = Registry(root)
    for seed, publish in ((0, True), (1, False)):
        cfg = TrainConfig(
            threads=1,
            two_tower=TwoTowerConfig(epochs=1, dim=16, hidden=32),
            als=ALSConfig(factors=8, iterations=2),
            dcn=DCNConfig(epochs=1, deep=(64, 32)),
            lgbm=LGBMConfig(n_estimators=20, threads=1),
        ).with_seed(seed)
        bundle, _ = train_all(ds, cfg, progress=False)
        registry.create(lambda path, b=bundle: save_bundle(b, path), {"config": cfg.to_dict()}, publish=publish)
    return registry


class Tables:
    """The feature tables of one registry version, as FeatureMatrix builders."""

    def __init__(self, version_dir: Path) -> None:
        self.spec = FeatureSpec.from_dict(json.loads((version_dir / "feature_spec.json").read_text()))
        users = pd.read_parquet(version_dir / "features" / "user_features.parquet")
        items = pd.read_parquet(version_dir / "features" / "item_features.parquet")
        self.users = users.set_index(users["user_id"].astype(str))[self.spec.user_features].astype(np.float32)
        self.items = items.set_index(items["item_id"].astype(str))[self.spec.item_features].astype(np.float32)

    def user_matrix(self, user_id: str, names: list[str] | None = None) -> features_pb2.FeatureMatrix:
        names = names or self.spec.user_features
        found = user_id in self.users.index
        row = self.users.loc[user_id, names].to_numpy() if found else np.zeros(len(names), np.float32)
        return features_pb2.FeatureMatrix(names=names, entity_ids=[user_id], found=[found], values=row.tolist())

    def item_matrix(self, item_ids: list[str], names: list[str] | None = None) -> features_pb2.FeatureMatrix:
        names = names or self.spec.item_features
        frame = self.items.reindex(item_ids)
        found = frame.notna().all(axis=1).tolist()
        values = frame[names].fillna(0.0).to_numpy(np.float32)
        return features_pb2.FeatureMatrix(names=names, entity_ids=item_ids, found=found, values=values.ravel().tolist())


class TableFeatures(features_pb2_grpc.FeatureServiceServicer):
    """FeatureService answering from the version's feature tables (stands in for the Feast-backed service)."""

    def __init__(self, tables: Tables) -> None:
        self.tables = tables
        self.calls: Counter = Counter()

    def GetUserFeatures(self, request, context):
        self.calls["user"] += 1
        names = list(request.feature_names) or None
        return features_pb2.GetUserFeaturesResponse(features=self.tables.user_matrix(request.user_id, names))

    def GetItemFeatures(self, request, context):
        self.calls["item"] += 1
        names = list(request.feature_names) or None
        return features_pb2.GetItemFeaturesResponse(features=self.tables.item_matrix(list(request.item_ids), names))


def _ray_processes(marker: str) -> list[int]:
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    return [int(line.split(None, 1)[0]) for line in out.splitlines() if marker in line and "ps -eo" not in line]


def _wait_gone(marker: str, timeout_s: float = 20.0) -> list[int]:
    """Wait for Ray processes whose command line holds `marker` to exit; kill (by PID) and return leftovers."""
    deadline = time.time() + timeout_s
    while _ray_processes(marker) and time.time() < deadline:
        time.sleep(0.5)
    leftovers = _ray_processes(marker)
    for pid in leftovers:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return leftovers


@pytest.fixture(scope="module")
def work():
    path = Path(tempfile.mkdtemp(prefix="rk-", dir="/tmp"))  # short: Ray's unix socket paths live below it
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def registry(work):
    return _train_registry(work / "models")


@pytest.fixture(scope="module")
def service(work, registry):
    """Feature service + the ranking runtime on a local Ray; everything stopped at the end."""
    saved_env = dict(os.environ)
    marker = str(work / "ray")
    features_server = runtime = None
    try:
        tables = Tables(registry.path("v0001"))
        servicer = TableFeatures(tables)
        features_server = GrpcServer(
            "features-test",
            [lambda s: features_pb2_grpc.add_FeatureServiceServicer_to_server(servicer, s)],
            ["recsys.v1.FeatureService"],
            ServerOptions(port=0),
        ).start(metrics=False)
        port, metrics_port = free_port(), free_port()
        os.environ.update(
            {
                "RECSYS_MODELS_DIR": str(registry.root),
                "RECSYS_RANKING_APP": APP,
                "RECSYS_RANKING_PORT": str(port),
                "RECSYS_METRICS_PORT": str(metrics_port),
                "RECSYS_RAY_TEMP_DIR": marker,
                "RECSYS_RANKING_WATCH_S": "0",
                "RECSYS_RANKING_MAX_CANDIDATES": str(MAX_CANDIDATES),
                "RECSYS_FEATURES_ADDR": features_server.address,
                "RECSYS_RANKING_BATCHING": "true",  # the scores-equal tests go through @serve.batch
                "RECSYS_RANKING_BATCH_WAIT_MS": "1",
                "RECSYS_RANKING_LGBM_COMPILE_DIR": str(work / "compiled"),
            }
        )
        from recsys import cli
        from recsys.ranking.runtime import RankingRuntime
        from recsys.ranking.settings import RankingSettings

        assert cli.main(["ranking", "compile"]) == 0  # the replica scores LightGBM with the compiled forest
        assert len(list((work / "compiled").glob("*.o"))) == 1

        runtime = RankingRuntime(RankingSettings.from_env(), ray_address="").start()
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        yield {
            "runtime": runtime,
            "registry": registry,
            "tables": tables,
            "features": servicer,
            "stub": ranking_pb2_grpc.RankingServiceStub(channel),
            "channel": channel,
            "metrics_port": metrics_port,
        }
        channel.close()
    finally:
        try:
            if runtime is not None:
                runtime.stop()
            if features_server is not None:
                features_server.stop(0)
        finally:
            os.environ.clear()
            os.environ.update(saved_env)
            leftovers = _wait_gone(marker)
            assert not leftovers, f"Ray processes outlived the service: {leftovers}"


MD = (("application", APP),)


def _request(tables: Tables, n: int = N_CANDIDATES, seed: int = 0, **fields) -> ranking_pb2.RankRequest:
    rng = np.random.default_rng(seed)
    user_id = str(tables.users.index[seed % len(tables.users)])
    item_ids = [str(i) for i in rng.choice(tables.items.index.to_numpy(), n, replace=False)]
    request = ranking_pb2.RankRequest(
        user_id=user_id,
        item_ids=item_ids,
        user_features=tables.user_matrix(user_id),
        item_features=tables.item_matrix(item_ids),
        retrieval_scores=rng.uniform(-1, 1, n).astype(np.float32).tolist(),
    )
    for key, value in fields.items():
        setattr(request, key, value)
    return request


def _direct_scores(registry: Registry, name: str, version: str, request: ranking_pb2.RankRequest) -> np.ndarray:
    """The model loaded straight from the registry with the training code, on the same inputs."""
    cls, folder = MODEL_CLASSES[name]
    path = registry.path(version)
    model = cls.load(path / folder)
    tables = Tables(path)
    user = tables.users.loc[request.user_id].to_numpy()
    items = tables.items.loc[list(request.item_ids)].to_numpy()
    x = ranking_inputs(user, items, tables.spec, np.asarray(request.retrieval_scores, dtype=np.float32))
    return np.asarray(model.score(x), dtype=np.float32)


def _rank(service, request, timeout: float = 10.0) -> ranking_pb2.RankResponse:
    return service["stub"].Rank(request, metadata=MD, timeout=timeout)


def test_process_serves_follows_latest_and_stops_cleanly_on_sigterm(work, registry):
    """`python -m recsys.ranking`: READY line, a hot swap when `latest` moves, SIGTERM -> exit 0, no Ray left.

    Runs before the module's in-process service starts, so only one Ray runs at a time.
    """
    port, marker = free_port(), str(work / "ray-proc")
    env = {
        **os.environ,
        "RECSYS_MODELS_DIR": str(registry.root),
        "RECSYS_RANKING_APP": APP,
        "RECSYS_RANKING_PORT": str(port),
        "RECSYS_METRICS_PORT": "0",
        "RECSYS_RAY_TEMP_DIR": marker,
        "RECSYS_RANKING_WATCH_S": "0.5",
        "RECSYS_RANKING_FETCH_FEATURES": "false",
    }
    stderr = open(work / "process.log", "w")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [sys.executable, "-m", "recsys.ranking"], env=env, stdout=subprocess.PIPE, stderr=stderr, text=True
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("READY ranking"), (work / "process.log").read_text()[-3000:]
        assert f"port={port}" in line and '"dcn":"v0001"' in line
        tables = Tables(registry.path("v0001"))
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = ranking_pb2_grpc.RankingServiceStub(channel)
            request = _request(tables, seed=1, model="dcn")
            assert stub.Rank(request, metadata=MD, timeout=10).model_version == "v0001"
            registry.set_latest("v0002", reason="test")
            try:
                deadline, version = time.time() + 60, ""
                while time.time() < deadline and version != "v0002":
                    version = stub.Rank(request, metadata=MD, timeout=10).model_version
                    time.sleep(0.2)
                assert version == "v0002"
            finally:
                registry.set_latest("v0001", reason="test")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=90) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        stderr.close()
        leftovers = _wait_gone(marker)
    assert not leftovers, f"Ray processes outlived the service process: {leftovers}"


@pytest.mark.parametrize("model", ["dcn", "lightgbm"])
def test_scores_equal_the_model_loaded_directly(service, model):
    request = _request(service["tables"], model=model)
    reply = _rank(service, request)
    assert (reply.model, reply.model_version) == (model, "v0001")
    assert len(reply.scores) == N_CANDIDATES
    expected = _direct_scores(service["registry"], model, "v0001", request)
    np.testing.assert_allclose(np.asarray(reply.scores, dtype=np.float32), expected, rtol=1e-5, atol=1e-6)


def test_compile_command_names_a_missing_version(service, capsys):
    from recsys import cli

    assert cli.main(["ranking", "compile", "--version", "v0099"]) == 2
    assert "--version: no LightGBM ranker v0099" in capsys.readouterr().err


def test_default_model_alias_and_explicit_version(service):
    request = _request(service["tables"], seed=3)
    assert _rank(service, request).model == "dcn"  # RECSYS_RANKING_DEFAULT_MODEL
    request.model, request.model_version = "lgbm", "v0002"
    reply = _rank(service, request)
    assert (reply.model, reply.model_version) == ("lightgbm", "v0002")
    expected = _direct_scores(service["registry"], "lightgbm", "v0002", request)
    np.testing.assert_allclose(np.asarray(reply.scores, dtype=np.float32), expected, rtol=1e-5, atol=1e-6)


def test_columns_matched_by_name_and_missing_features_fetched(service):
    tables = service["tables"]
    request = _request(tables, seed=5, model="dcn")
    expected = _direct_scores(service["registry"], "dcn", "v0001", request)
    shuffled = ranking_pb2.RankRequest()
    shuffled.CopyFrom(request)
    names = list(reversed(tables.spec.item_features))
    shuffled.item_features.CopyFrom(tables.item_matrix(list(request.item_ids), names))
    np.testing.assert_allclose(_rank(service, shuffled).scores, expected, rtol=1e-5, atol=1e-6)

    before = Counter(service["features"].calls)
    fetched = ranking_pb2.RankRequest()
    fetched.CopyFrom(request)
    fetched.ClearField("user_features")
    fetched.ClearField("item_features")
    np.testing.assert_allclose(_rank(service, fetched).scores, expected, rtol=1e-5, atol=1e-6)
    calls = service["features"].calls
    assert calls["user"] == before["user"] + 1 and calls["item"] == before["item"] + 1


def test_empty_candidates_and_health(service):
    reply = _rank(service, ranking_pb2.RankRequest(user_id="u", model="lightgbm"))
    assert list(reply.scores) == [] and reply.model_version == "v0001"
    health = health_pb2_grpc.HealthStub(service["channel"]).Check(
        health_pb2.HealthCheckRequest(), metadata=MD, timeout=5
    )
    assert health.status == health_pb2.HealthCheckResponse.SERVING


def _bad(tables: Tables, kind: str) -> ranking_pb2.RankRequest:
    request = _request(tables, seed=7)
    if kind == "length_mismatch":
        request.item_features.CopyFrom(tables.item_matrix(list(request.item_ids)[:-1]))
    elif kind == "nan":
        request.item_features.values[17] = math.nan
    elif kind == "inf_user":
        request.user_features.values[0] = math.inf
    elif kind == "too_many":
        request = _request(tables, n=MAX_CANDIDATES + 1, seed=7)
    elif kind == "retrieval_scores":
        del request.retrieval_scores[-1]
    elif kind == "unknown_model":
        request.model = "xgboost"
    elif kind == "missing_column":
        names = tables.spec.item_features[1:]
        request.item_features.CopyFrom(tables.item_matrix(list(request.item_ids), names))
    return request


@pytest.mark.parametrize(
    ("kind", "field"),
    [
        ("length_mismatch", "item_features"),
        ("nan", "item_features.values"),
        ("inf_user", "user_features.values"),
        ("too_many", "item_ids"),
        ("retrieval_scores", "retrieval_scores"),
        ("unknown_model", "model"),
        ("missing_column", "item_features.names"),
    ],
)
def test_bad_input_is_invalid_argument_naming_the_field(service, kind, field):
    with pytest.raises(grpc.RpcError) as err:
        _rank(service, _bad(service["tables"], kind))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    assert err.value.details().startswith(f"{field}:"), err.value.details()


def test_unknown_version_is_failed_precondition_listing_versions(service):
    with pytest.raises(grpc.RpcError) as err:
        _rank(service, _request(service["tables"], model="dcn", model_version="v0042"))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "v0042" in err.value.details() and "v0001, v0002" in err.value.details()


def test_metrics_exported(service):
    url = f"http://127.0.0.1:{service['metrics_port']}/metrics"
    deadline, text = time.time() + 30, ""
    while time.time() < deadline:
        text = urllib.request.urlopen(url, timeout=5).read().decode()
        if "recsys_ranking_requests_total" in text and "ray_serve_num_grpc_requests" in text:
            break
        time.sleep(1)
    assert "recsys_ranking_requests_total" in text
    assert 'code="INVALID_ARGUMENT"' in text
    assert "recsys_ranking_batch_requests" in text and "ray_serve_num_grpc_requests" in text


def test_version_switch_under_a_stream_of_requests_fails_nothing(service):
    """Two clients keep ranking while both rankers move v0001 -> v0002 and batching is switched off."""
    runtime, tables, stub = service["runtime"], service["tables"], service["stub"]
    requests = [_request(tables, seed=s, model=m) for s, m in ((11, "dcn"), (12, "lightgbm"))]
    seen: Counter = Counter()
    errors: list[str] = []
    stop = threading.Event()

    def client(request):
        while not stop.is_set():
            try:
                reply = stub.Rank(request, metadata=MD, timeout=10)
                assert len(reply.scores) == N_CANDIDATES
                seen[(reply.model, reply.model_version)] += 1
            except Exception as exc:  # any failure counts
                errors.append(repr(exc))

    threads = [threading.Thread(target=client, args=(r,)) for r in requests]
    for t in threads:
        t.start()
    try:
        time.sleep(1.0)
        runtime.activate({"dcn": "v0002", "lightgbm": "v0002"}, batching=False)
        switched = dict(seen)
        time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=20)
    assert errors == []
    assert switched.get(("dcn", "v0001")) and switched.get(("lightgbm", "v0001"))
    assert seen[("dcn", "v0002")] > 0 and seen[("lightgbm", "v0002")] > 0
    for request, name in zip(requests, ("dcn", "lightgbm"), strict=True):
        reply = stub.Rank(request, metadata=MD, timeout=10)
        assert reply.model_version == "v0002"
        expected = _direct_scores(service["registry"], name, "v0002", request)
        np.testing.assert_allclose(np.asarray(reply.scores, dtype=np.float32), expected, rtol=1e-5, atol=1e-6)
    listed = stub.ListModels(ranking_pb2.ListModelsRequest(), metadata=MD, timeout=10)
    info = {m.name: m for m in listed.models}
    assert info["dcn"].active_version == info["lightgbm"].active_version == "v0002"
    assert list(info["dcn"].available_versions) == ["v0001", "v0002"]
