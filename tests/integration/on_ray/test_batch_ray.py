"""`recsys batch-recommend --workers 2` on Ray Data (a local Ray started for the call): the same rows as the
in-process path, as CSV and as Parquet shards; bad combinations exit 2."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from recsys.cli import main
from recsys.training.batch_ray import read_output
from recsys.training.data.loaders import save_dataset
from recsys.training.data.synthetic import generate

FAST = {"n_hard": 30, "two_tower": {"epochs": 2, "batch_size": 256, "hidden": 32, "dim": 16},
        "dcn": {"epochs": 1, "deep": [32]}, "lgbm": {"n_estimators": 20}}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("batch-ray")
    data = save_dataset(generate(n_interactions=5000, n_users=300, n_items=250, seed=9), root / "data")
    config = root / "fast.json"
    config.write_text(json.dumps(FAST))
    assert main(["train", "--data", str(data), "--out", str(root / "models"), "--config", str(config),
                 "--quiet"]) == 0
    return root, data


def _in_process(root, data) -> pd.DataFrame:
    out = root / "recs.csv"
    assert main(["batch-recommend", "--model", str(root / "models"), "--data", str(data), "--k", "15",
                 "--out", str(out), "--quiet"]) == 0
    return pd.read_csv(out, dtype={"user_id": str, "item_id": str})


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(["user_id", "rank"]).reset_index(drop=True)


@pytest.mark.timeout(300)
def test_ray_data_path_writes_the_same_rows_as_csv_and_parquet_shards(trained, capsys):
    root, data = trained
    expected = _sorted(_in_process(root, data))
    capsys.readouterr()
    for fmt in ("csv", "parquet"):
        out = root / f"shards-{fmt}"
        assert main(["batch-recommend", "--model", str(root / "models"), "--data", str(data), "--k", "15",
                     "--out", str(out), "--workers", "2", "--format", fmt, "--quiet"]) == 0
        summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert summary["workers"] == 2 and summary["users"] == expected["user_id"].nunique()
        assert summary["shards"] >= 4  # 300 users in blocks of 75: one shard per block, spread over both actors
        got = _sorted(read_output(out))
        assert summary["rows"] == len(got) == len(expected)
        assert {p.suffix for p in out.iterdir() if not p.name.startswith(".")} == {f".{fmt}"}
        pd.testing.assert_frame_equal(got[["user_id", "item_id", "rank"]], expected[["user_id", "item_id", "rank"]],
                                      check_dtype=False)
        np.testing.assert_allclose(got["score"].to_numpy(), expected["score"].to_numpy(), rtol=1e-5)


def test_bad_combinations_exit_2(trained, tmp_path, capsys):
    root, data = trained
    base = ["batch-recommend", "--model", str(root / "models"), "--data", str(data), "--quiet"]
    assert main([*base, "--out", str(tmp_path / "x.csv"), "--format", "parquet"]) == 2
    assert "needs --workers" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "x"), "--workers", "-1"]) == 2
    assert "--workers must be at least 1" in capsys.readouterr().err
