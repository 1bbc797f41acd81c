"""Offline training on a small synthetic set: quality vs popularity, CLI train / batch-recommend /
evaluate, registry round trip and rollback, serving halves equal training halves, bad input -> exit 2."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from recsys.cli import main
from recsys.model.bundle import load_bundle, save_bundle
from recsys.model.inputs import ranking_inputs, ranking_inputs_batch
from recsys.model.rankers.dcn import DCNConfig
from recsys.model.rankers.lightgbm import LGBMConfig
from recsys.model.registry import Registry, RegistryError
from recsys.training.data.loaders import load_dataset, save_dataset
from recsys.training.data.schema import DataError
from recsys.training.data.synthetic import generate
from recsys.training.evaluate import evaluate
from recsys.training.features import build_feature_spec, build_item_features, build_user_features, build_user_history
from recsys.training.pipeline import TrainConfig, train_all, validate_dataset
from recsys.training.split import holdout_mask, split_dataset
from recsys.training.two_tower import TwoTowerConfig

FAST = TrainConfig(
    n_hard=50,
    two_tower=TwoTowerConfig(epochs=6, batch_size=256, hidden=64, dim=32),
    dcn=DCNConfig(epochs=6, deep=(64, 32)),
    lgbm=LGBMConfig(n_estimators=60),
)


@pytest.fixture(scope="module")
def dataset():
    return generate(n_interactions=4000, n_users=150, n_items=300, seed=3)


@pytest.fixture(scope="module")
def data_dir(dataset, tmp_path_factory):
    return save_dataset(dataset, tmp_path_factory.mktemp("data") / "synthetic")


@pytest.fixture(scope="module")
def trained(data_dir):
    return train_all(load_dataset(data_dir), FAST, progress=False)


@pytest.fixture(scope="module")
def registry_root(data_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    config = root.parent / "fast.json"
    config.write_text(json.dumps(FAST.to_dict()))
    assert main(["train", "--data", str(data_dir), "--out", str(root), "--config", str(config), "--quiet"]) == 0
    return root


def test_two_stage_beats_popularity(dataset, tmp_path):
    results = evaluate(dataset, "temporal", FAST, progress=False)
    pop = results["retrieval"]["popularity"]["recall@20"]
    assert results["retrieval"]["two_tower"]["recall@20"] > pop
    for name in ("dcn", "lgbm"):
        assert results["two_stage"][name]["recall@20"] > pop, name
        assert results["ranking"][name]["auc"] > 0.6, name
    assert {"puresvd", "ease", "als"} <= set(results["retrieval"])
    assert set(results["retrieval"]["two_tower"]) >= {f"{m}@{k}" for m in ("recall", "ndcg", "hit_rate", "coverage")
                                                      for k in (10, 20, 50, 100, 300)} | {"mrr"}
    from recsys.training.report import write_report

    json_path, html_path = write_report(results, tmp_path)
    assert json.loads(json_path.read_text())["ranking"]["dcn"]["auc"] > 0.6
    assert html_path.read_text().count("<svg") >= 4


def test_splits_hold_out_the_last_interactions(dataset):
    inter = dataset.interactions
    temporal = split_dataset(dataset, "temporal")
    counts = inter.groupby("user_id").size()
    held = temporal.test.groupby("user_id").size().reindex(counts.index, fill_value=0)
    assert (held == np.floor(counts * 0.2)).all()
    last_train = temporal.train.interactions.groupby("user_id")["timestamp"].max()
    first_test = temporal.test.groupby("user_id")["timestamp"].min()
    assert (first_test >= last_train.reindex(first_test.index)).all()
    loo = holdout_mask(inter, "loo")
    assert loo.sum() == (counts >= 2).sum()


def test_feature_tables_and_ranking_inputs(dataset, trained):
    spec = build_feature_spec(dataset)
    users, items = build_user_features(dataset, spec), build_item_features(dataset, spec)
    assert list(users.columns) == ["user_id", *spec.user_features, "event_timestamp"]
    assert list(items.columns) == ["item_id", *spec.item_features, "event_timestamp"]
    assert users["user_id"].is_unique and len(users) == dataset.users["user_id"].nunique()
    assert len(items) == dataset.n_items and str(items["event_timestamp"].dt.tz) == "UTC"
    assert any(f.startswith("user_demo_gender_") for f in spec.user_features)
    genre_cols = [f"user_genre_{g}" for g in spec.genre_names]
    assert np.allclose(users[genre_cols].to_numpy().max(axis=1) <= 1.0, True)
    hist = build_user_history(dataset, spec)
    assert hist["recent_item_ids"].map(len).max() <= spec.history_len
    u = users[spec.user_features].to_numpy(np.float32)[0]
    it = items[spec.item_features].to_numpy(np.float32)[:7]
    scores = np.linspace(0, 1, 7)
    one = ranking_inputs(u, it, spec, scores)
    assert one.shape == (7, len(spec.ranking_features)) and one.dtype == np.float32
    np.testing.assert_array_equal(one, ranking_inputs_batch(np.repeat(u[None], 7, 0), it, spec, scores))
    affinity = it[:, [spec.item_features.index(f"item_genre_{g}") for g in spec.genre_names]] @ u[
        [spec.user_features.index(c) for c in genre_cols]]
    np.testing.assert_allclose(one[:, spec.ranking_features.index("x_genre_affinity")], affinity, rtol=1e-6)


def test_user_encoder_matches_torch_tower_and_handles_cold_start(trained):
    bundle, _ = trained
    tt = bundle.two_tower
    enc = tt.encoder()
    user_ids = tt.users.to_list()[:5]
    feats = np.random.default_rng(0).normal(size=(5, enc.n_features)).astype(np.float32) + tt.user_mean
    hist_ids = [tt.items.to_list()[i : i + 3] for i in range(5)]
    got = enc.embed_batch(user_ids, feats, hist_ids)
    with torch.no_grad():
        hist = torch.zeros((5, tt.config.history_len), dtype=torch.long)
        for r, h in enumerate(hist_ids):
            hist[r, -len(h):] = torch.from_numpy(tt.items.lookup(h) + 1)
        uidx = torch.from_numpy(tt.users.lookup(user_ids) + 1)
        z = torch.from_numpy((feats - tt.user_mean) / tt.user_std)
        want = tt.net.user_vec(uidx, z, hist).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)
    cold = enc.embed(None, None, [])
    unknown = enc.embed("nobody", None, ["no-such-item"])
    assert cold.shape == (enc.dim,) and np.isclose(np.linalg.norm(cold), 1.0)
    np.testing.assert_allclose(cold, unknown, atol=1e-6)
    emb = bundle.item_embeddings
    assert emb.dtype == np.float32 and np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def test_same_seed_same_models(trained, registry_root):
    """The CLI run and the in-process run (same data, config and seed) produce identical models."""
    bundle, _ = trained
    again = load_bundle(Registry(registry_root).path())
    np.testing.assert_array_equal(bundle.item_embeddings, again.item_embeddings)
    x = np.random.default_rng(1).normal(size=(20, len(bundle.spec.ranking_features))).astype(np.float32)
    for name in ("dcn", "lgbm"):
        np.testing.assert_array_equal(bundle.rankers[name].score(x), again.rankers[name].score(x))


def test_registry_round_trip_and_rollback(trained, tmp_path):
    bundle, _ = trained
    reg = Registry(tmp_path / "models")
    with pytest.raises(RegistryError):
        reg.path()
    v1 = reg.create(lambda p: save_bundle(bundle, p), {"config": {"candidates": 300}, "metrics": {"x": 1}})
    v2 = reg.create(lambda p: save_bundle(bundle, p), {"config": {"candidates": 300}})
    assert (v1, v2) == ("v0001", "v0002") and reg.versions() == [v1, v2] and reg.latest() == v2
    manifest = reg.manifest(v1)
    assert manifest["metrics"] == {"x": 1} and "feature_spec.json" in manifest["files"]
    loaded = load_bundle(reg.path(v1))
    np.testing.assert_array_equal(loaded.item_embeddings, bundle.item_embeddings)
    assert loaded.spec == bundle.spec and loaded.items.to_list() == bundle.items.to_list()
    x = np.random.default_rng(2).normal(size=(10, len(bundle.spec.ranking_features))).astype(np.float32)
    for name in ("dcn", "lgbm"):
        np.testing.assert_allclose(loaded.rankers[name].score(x), bundle.rankers[name].score(x), rtol=1e-6)
    pd.testing.assert_frame_equal(loaded.item_features, bundle.item_features)
    assert reg.rollback() == v1 and reg.latest() == v1
    with pytest.raises(RegistryError, match="oldest"):
        reg.rollback()
    reg.set_latest(v2)
    assert reg.rollback(to=v1) == v1
    with pytest.raises(RegistryError, match="unknown"):
        reg.set_latest("v0009")
    history = [json.loads(line) for line in (reg.root / "history.jsonl").read_text().splitlines()]
    assert [h["reason"] for h in history] == ["publish", "publish", "rollback", "set", "rollback"]


def test_cli_train_writes_a_published_version(registry_root):
    reg = Registry(registry_root)
    assert reg.latest() == "v0001"
    manifest = reg.manifest()
    assert len(manifest["dataset"]["fingerprint"]) == 64
    assert {"git_sha", "source_sha256"} <= set(manifest["code_version"])
    assert manifest["config"]["seed"] == 0 and manifest["timings"]["train_s"] > 0
    for f in ("two_tower/item_embeddings.npy", "two_tower/user_tower.npz", "dcn/model.pt", "lgbm/model.txt",
              "features/user_features.parquet", "popularity/popularity.parquet", "als/item_factors.npy"):
        assert f in manifest["files"], f


def test_cli_batch_recommend_excludes_seen_and_covers_every_user(registry_root, data_dir, tmp_path):
    out = tmp_path / "recs.csv"
    rc = main(["batch-recommend", "--model", str(registry_root), "--data", str(data_dir), "--k", "7",
               "--out", str(out), "--quiet"])
    assert rc == 0
    assert out.read_text().splitlines()[0] == "user_id,item_id,rank,score"
    recs = pd.read_csv(out, dtype={"user_id": str, "item_id": str})
    ds = load_dataset(data_dir)
    assert set(recs["user_id"]) == set(ds.users["user_id"].astype(str))
    assert (recs.groupby("user_id").size() == 7).all()
    assert all(r == list(range(1, 8)) for r in recs.groupby("user_id")["rank"].apply(list))
    seen = set(zip(ds.interactions["user_id"].astype(str), ds.interactions["item_id"].astype(str), strict=True))
    assert not any((u, i) in seen for u, i in zip(recs["user_id"], recs["item_id"], strict=True))
    assert not recs.duplicated(["user_id", "item_id"]).any()
    scores = recs.groupby("user_id")["score"].apply(lambda s: bool(np.all(np.diff(s.to_numpy()) <= 1e-9)))
    assert scores.all()


def test_bad_input_exits_2(tmp_path, capsys, registry_root):
    bad = tmp_path / "missing_col"
    bad.mkdir()
    (bad / "interactions.csv").write_text("user_id,item_id\nu1,i1\n")
    assert main(["train", "--data", str(bad), "--out", str(tmp_path / "m")]) == 2
    assert "timestamp" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "interactions.csv").write_text("user_id,item_id,timestamp\n")
    assert main(["evaluate", "--data", str(empty)]) == 2
    assert "no interactions" in capsys.readouterr().err
    assert main(["batch-recommend", "--model", str(tmp_path / "nothing"), "--data", str(empty), "--k", "5",
                 "--out", str(tmp_path / "r.csv")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["batch-recommend", "--model", str(registry_root), "--data", str(empty), "--k", "0",
                 "--out", str(tmp_path / "r.csv")]) == 2
    assert "--k" in capsys.readouterr().err


def test_validate_names_unknown_items(dataset):
    broken = replace(dataset, items=dataset.items.iloc[1:].reset_index(drop=True))
    with pytest.raises(DataError, match="absent from items"):
        validate_dataset(broken)
