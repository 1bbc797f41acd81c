"""The streaming synthetic generator: a folder `load_dataset` accepts, counts as in its manifest, rows sorted across
chunks and time buckets, `generate`'s catalogues and latent model, and the same statistics as `generate`."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from recsys.training.data import generate, validate
from recsys.training.data.loaders import MANIFEST, DataError, load_dataset
from recsys.training.data.synthetic import SyntheticConfig
from recsys.training.data.synthetic_stream import generate_to_folder

N, USERS, ITEMS = 12_000, 600, 400


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    # small chunks and buckets: 7 chunks of users, 12 time buckets, row groups of 1,000 rows
    out = tmp_path_factory.mktemp("stream") / "ds"
    return generate_to_folder(out, N, USERS, ITEMS, seed=3, chunk_users=90, bucket_rows=1_000, row_group_rows=1_000)


def test_load_dataset_accepts_it_and_counts_match_the_manifest(folder):
    ds = load_dataset(folder)  # checks the manifest's counts against the files, and validates (sorted by time)
    validate(ds)
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["counts"] == {"interactions": N, "items": ITEMS, "users": USERS}
    assert len(ds.interactions) == N and len(ds.items) == ITEMS and len(ds.users) == USERS
    assert manifest["files"] == ["interactions.parquet", "items.parquet", "truth.npz", "users.parquet"]
    assert sorted(p.name for p in folder.iterdir()) == sorted([*manifest["files"], MANIFEST])  # no scratch left
    assert pq.ParquetFile(folder / "interactions.parquet").metadata.num_row_groups >= 12
    inter = ds.interactions
    order = np.lexsort((inter["item_id"].to_numpy(str), inter["user_id"].to_numpy(str), inter["timestamp"]))
    assert (order == np.arange(N)).all()  # (timestamp, user, item) order across every chunk and bucket
    assert not inter.duplicated(["user_id", "item_id"]).any()
    assert set(np.unique(inter["rating"])) == {1.0, 2.0, 3.0, 4.0, 5.0}
    cfg = SyntheticConfig()
    assert inter["timestamp"].between(cfg.start, cfg.end - 1).all()


def test_same_catalogues_and_model_as_generate_and_alike_statistics(folder):
    ds, ref = load_dataset(folder), generate(N, USERS, ITEMS, seed=3)
    assert ds.items.equals(ref.items) and ds.users.equals(ref.users)
    assert ds.meta["truth"] == ref.meta["truth"]
    a, b = ds.interactions, ref.interactions
    assert a["user_id"].nunique() == USERS  # the activity floor, as in generate
    assert abs(a["rating"].mean() - b["rating"].mean()) < 0.05
    top = [x["item_id"].value_counts().to_numpy()[:20].sum() / N for x in (a, b)]  # Zipf head
    assert abs(top[0] - top[1]) < 0.02
    truth = ref.meta["truth"]

    def affinity(frame):
        u = truth.user_index.get_indexer(frame["user_id"].astype(object))
        i = truth.item_index.get_indexer(frame["item_id"].astype(object))
        return float(np.einsum("nd,nd->n", truth.user_factors[u], truth.item_factors[i]).mean())

    assert abs(affinity(a) - affinity(b)) < 0.05 * abs(affinity(b))


def test_deterministic_and_refuses_to_overwrite(folder, tmp_path):
    again = generate_to_folder(tmp_path / "again", N, USERS, ITEMS, seed=3, chunk_users=90, bucket_rows=1_000,
                               row_group_rows=1_000)
    assert pq.read_table(again / "interactions.parquet").equals(pq.read_table(folder / "interactions.parquet"))
    with pytest.raises(DataError):
        generate_to_folder(again, N, USERS, ITEMS, seed=3)
    with pytest.raises(ValueError):
        generate_to_folder(tmp_path / "too_many", 10_000, 10, 10)
