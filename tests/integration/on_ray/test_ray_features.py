"""The streamed feature tables (`ray_features`, Ray Data on a local 2-CPU Ray, small blocks so that several
partials are folded) equal the in-memory ones (`build_user_features` / `build_item_features` on `load_dataset`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from recsys.training.data.loaders import load_dataset, save_dataset
from recsys.training.data.schema import DataError
from recsys.training.data.synthetic import generate
from recsys.training.features import build_feature_spec, build_item_features, build_user_features
from recsys.training.ray_cluster import ray_for
from recsys.training.ray_features import StreamConfig, stream_features


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """A saved synthetic dataset, and a CSV copy without ratings whose users and items files lack a few ids."""
    root = tmp_path_factory.mktemp("ray-features")
    ds = generate(n_interactions=4000, n_users=150, n_items=400, seed=3)
    inter = ds.interactions.copy()
    inter.loc[inter.index[::7], "rating"] = np.nan  # some interactions without a rating
    ds.interactions = inter
    saved = save_dataset(ds, root / "parquet")
    raw = root / "csv"
    raw.mkdir()
    ds.interactions.drop(columns="rating").to_csv(raw / "interactions.csv", index=False)
    for name, column in (("users", "user_id"), ("items", "item_id")):  # drop 5 catalogue rows of interacted ids
        table = pq.read_table(saved / f"{name}.parquet")
        drop = ds.interactions[column].unique()[:5]
        pq.write_table(table.filter(~table[column].to_pandas().isin(drop).to_numpy()), raw / f"{name}.parquet")
    return {"parquet": saved, "csv": raw}


def _assert_same(got: pd.DataFrame, want: pd.DataFrame, key: str) -> None:
    assert list(got.columns) == list(want.columns)
    assert got[key].is_unique and set(got[key]) == set(want[key])
    got = got.set_index(key).loc[want[key]]
    want = want.set_index(key)
    for col in want.columns:
        if col == "event_timestamp" or want[col].dtype == bool:
            assert (got[col].to_numpy() == want[col].to_numpy()).all(), col
        else:
            np.testing.assert_allclose(got[col].to_numpy(np.float64), want[col].to_numpy(np.float64),
                                       rtol=1e-6, atol=1e-6, err_msg=col)


@pytest.mark.timeout(120)
@pytest.mark.filterwarnings("ignore:The maximum number of concurrent tasks:UserWarning")  # one small file
def test_streamed_features_equal_the_in_memory_ones(folders):
    config = StreamConfig(block_rows=500, max_in_flight=2)
    with ray_for(None, 2):
        streamed = {name: stream_features(path, config=config) for name, path in folders.items()}
        ds = load_dataset(folders["parquet"])
        given = stream_features(folders["parquet"], spec=build_feature_spec(ds), config=config)
    for name, path in folders.items():
        ds = load_dataset(path)
        spec = build_feature_spec(ds)
        got = streamed[name]
        assert got.spec == spec, name
        assert got.interactions == len(ds.interactions)
        # users' and items' partials outnumber them: each was split over several batches and folded
        assert got.partial_rows["users"] > len(ds.users) and got.partial_rows["items"] > len(ds.items)
        _assert_same(got.users, build_user_features(ds, spec), "user_id")
        _assert_same(got.items, build_item_features(ds, spec), "item_id")
        assert list(got.users["user_id"]) == list(ds.users["user_id"])  # same row order as well
        assert list(got.items["item_id"]) == list(ds.items["item_id"])
    ds = load_dataset(folders["parquet"])
    _assert_same(given.users, build_user_features(ds), "user_id")


def test_bad_folders_and_config_are_refused_before_reading(tmp_path):
    (tmp_path / "interactions.csv").write_text("user_id,item_id\nu1,i1\n")
    with pytest.raises(DataError, match="missing column.*timestamp"):
        stream_features(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="not a generic dataset folder"):
        stream_features(tmp_path / "empty")
    with pytest.raises(ValueError):
        StreamConfig(block_rows=0)
