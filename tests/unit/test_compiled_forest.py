"""The compiled LightGBM forest gives LightGBM's scores, is cached per model, and never serves unverified."""

from __future__ import annotations

from pathlib import Path

import lightgbm as lgb
import numpy as np
import pytest

from recsys.ranking.compiled_forest import ForestScorer, cache_key


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 12)).astype(np.float32)
    x[rng.random(x.shape) < 0.03] = np.nan
    y = (np.nan_to_num(x[:, 0]) + 0.5 * np.nan_to_num(x[:, 3]) > 0).astype(int) + (x[:, 5] > 1).astype(int)
    params = {"objective": "lambdarank", "num_leaves": 15, "verbosity": -1, "num_threads": 1, "seed": 0}
    booster = lgb.train(params, lgb.Dataset(x, label=y, group=[100] * 20), num_boost_round=40)
    path = tmp_path_factory.mktemp("lgbm") / "model.txt"
    booster.save_model(str(path))
    return path


def _booster_scorer(model_file: Path):
    booster = lgb.Booster(model_file=str(model_file))
    return lambda x: booster.predict(np.asarray(x, dtype=np.float32), num_threads=1)


def test_compiled_scores_equal_lightgbm_and_the_object_file_is_reused(model_file: Path, tmp_path: Path):
    fallback = _booster_scorer(model_file)
    scorer = ForestScorer(fallback, model_file, tmp_path, n_features=12).start(background=False)
    assert scorer.compiled and scorer.error is None
    x = np.random.default_rng(1).normal(size=(300, 12)).astype(np.float32)
    x[::7, 2] = np.nan
    np.testing.assert_allclose(scorer(x), fallback(x), rtol=0, atol=1e-9)
    cached = list(tmp_path.glob("*.o"))
    assert [p.name for p in cached] == [f"{cache_key(model_file.read_bytes())}.o"]  # no partial file left
    again = ForestScorer(fallback, model_file, tmp_path, n_features=12).start(background=False)
    assert again.compiled and list(tmp_path.glob("*.o")) == cached


def test_a_forest_that_disagrees_with_lightgbm_never_serves(model_file: Path, tmp_path: Path):
    fallback = _booster_scorer(model_file)
    shifted = ForestScorer(lambda x: fallback(x) + 1e-3, model_file, tmp_path, n_features=12).start(background=False)
    assert not shifted.compiled and "differ" in shifted.error
    x = np.zeros((3, 12), dtype=np.float32)
    np.testing.assert_array_equal(shifted(x), fallback(x) + 1e-3)


def test_without_a_cache_dir_lightgbm_serves(model_file: Path):
    scorer = ForestScorer(_booster_scorer(model_file), model_file, None, n_features=12).start()
    assert scorer.ready.is_set() and not scorer.compiled


def test_the_cache_key_follows_the_model_text(model_file: Path):
    text = model_file.read_bytes()
    assert cache_key(text) == cache_key(text) != cache_key(text + b"\n")
