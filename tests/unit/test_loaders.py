"""Loaders: MovieLens 100k / 1m / latest, the generic CSV and Parquet format, round trips, and errors."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys.cli import main
from recsys.training.data import DataError, click_probability, generate, load_dataset, loaders, save_dataset
from recsys.training.data.loaders import detect_format

# ------------------------------------------------------------------------------------------------ fixtures


def _ml100k(root):
    root.mkdir()
    (root / "u.data").write_text("1\t10\t4\t881250949\n2\t10\t3\t881250900\n1\t20\t5\t881250950\n2\t30\t1\t881250999\n")
    flags = ["0"] * 19
    action = flags.copy()
    action[1] = "1"
    action[5] = "1"  # Action, Comedy
    unknown = flags.copy()
    unknown[0] = "1"
    rows = [
        ["10", "Les Misérables (1995)", "01-Jan-1995", "", "http://x", *action],
        ["20", "Toy Story (1995)", "01-Jan-1995", "", "http://y", *unknown],
    ]  # item 30 is absent: added with empty metadata
    (root / "u.item").write_bytes("".join("|".join(r) + "\n" for r in rows).encode("latin-1"))
    (root / "u.user").write_text("1|24|M|technician|85711\n2|53|F|other|94043\n")
    return root


def _ml1m(root):
    root.mkdir()
    (root / "ratings.dat").write_text("1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n")
    movies = "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n661::Amélie: a tale (2001)::Comedy|Romance\n"
    (root / "movies.dat").write_bytes(movies.encode("latin-1"))
    (root / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n")
    return root


def _ml_latest(root):
    root.mkdir()
    (root / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,4.5,964981247\n2,1,0.5,964982224\n"
    )
    (root / "movies.csv").write_text(
        'movieId,title,genres\n1,"American President, The (1995)",Comedy|Drama|Romance\n'
        "3,Grumpier Old Men (1995),(no genres listed)\n99,Unrated (2000),Horror\n"
    )
    (root / "tags.csv").write_text("userId,movieId,tag,timestamp\n")
    return root


def _generic(root, interactions, items=None, users=None):
    root.mkdir()
    (root / "interactions.csv").write_text(interactions)
    if items is not None:
        (root / "items.csv").write_text(items)
    if users is not None:
        (root / "users.csv").write_text(users)
    return root


GOOD = "user_id,item_id,rating,timestamp\na,x,5,100\nb,y,,90\na,y,3.5,110\n"


def _run(*argv):
    return main(["data", *[str(a) for a in argv]])


def _assert_same(a, b):
    for frame in ("interactions", "items", "users"):
        pd.testing.assert_frame_equal(getattr(a, frame), getattr(b, frame))
    assert a.name == b.name
    assert a.meta == b.meta


# ------------------------------------------------------------------------------------------------ MovieLens


def test_movielens_100k(tmp_path):
    ds = load_dataset(_ml100k(tmp_path / "ml-100k"))
    assert ds.meta["source"] == "movielens-100k" and ds.name == "ml-100k"
    inter = ds.interactions
    assert list(inter["timestamp"]) == sorted(inter["timestamp"])
    assert list(inter.dtypes) == ["string[pyarrow]", "string[pyarrow]", "float32", "int64"]
    assert inter.iloc[0].tolist() == ["2", "10", 3.0, 881250900]
    items = ds.items.set_index("item_id")
    assert items.loc["10", "title"] == "Les Misérables (1995)"
    assert items.loc["10", "genres"] == ["Action", "Comedy"]
    assert items.loc["20", "genres"] == []  # the "unknown" flag means no genre
    assert items.loc["30", "title"] == "" and items.loc["30", "genres"] == []
    assert ds.meta["items_added"] == 1
    users = ds.users.set_index("user_id")
    assert users.loc["2", "age"] == 53 and users.loc["2", "occupation"] == "other"
    assert users.loc["1", "zip_code"] == "85711"


def test_movielens_1m(tmp_path):
    ds = load_dataset(_ml1m(tmp_path / "ml-1m"))
    assert ds.meta["source"] == "movielens-1m"
    assert len(ds.interactions) == 3 and ds.interactions["user_id"].iloc[0] == "2"
    items = ds.items.set_index("item_id")
    assert items.loc["661", "title"] == "Amélie: a tale (2001)"
    assert items.loc["661", "genres"] == ["Comedy", "Romance"]
    users = ds.users.set_index("user_id")
    assert users.loc["1", "occupation"] == "K-12 student" and users.loc["2", "occupation"] == "self-employed"
    assert users.loc["1", "gender"] == "F" and users.loc["2", "age"] == 56


def test_movielens_latest_and_zip(tmp_path):
    root = _ml_latest(tmp_path / "ml-latest-small")
    ds = load_dataset(root)
    assert ds.meta["source"] == "movielens-latest"
    assert ds.interactions["rating"].tolist() == [4.5, 0.5, 4.0]
    items = ds.items.set_index("item_id")
    assert items.loc["1", "title"] == "American President, The (1995)"
    assert items.loc["1", "genres"] == ["Comedy", "Drama", "Romance"]
    assert items.loc["3", "genres"] == []
    assert len(ds.items) == 3  # the unrated catalogue item is kept
    assert ds.users["user_id"].tolist() == ["1", "2"]
    archive = tmp_path / "ml-latest-small.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in root.iterdir():
            zf.write(f, f"ml-latest-small/{f.name}")
    zipped = load_dataset(archive)
    pd.testing.assert_frame_equal(zipped.interactions, ds.interactions)
    assert zipped.name == "ml-latest-small"


def test_detect_format(tmp_path):
    assert detect_format(_ml100k(tmp_path / "a")) == "ml-100k"
    assert detect_format(_ml1m(tmp_path / "b")) == "ml-1m"
    assert detect_format(_ml_latest(tmp_path / "c")) == "ml-latest"
    assert detect_format(_generic(tmp_path / "d", GOOD)) == "generic"
    (tmp_path / "e").mkdir()
    assert detect_format(tmp_path / "e") is None
    with pytest.raises(DataError, match="not a dataset folder"):
        load_dataset(tmp_path / "e")


# ------------------------------------------------------------------------------------------------ generic


def test_generic_csv(tmp_path):
    root = _generic(
        tmp_path / "shop",
        GOOD,
        items="item_id,title,genres,price\nx,Ex,A|B,1.5\ny,Why,,2\nz,Zed,C,3\n",
        users="user_id,country,age\na,DE,31\nb,FR,45\n",
    )
    ds = load_dataset(root)
    assert ds.name == "shop" and ds.meta["source"] == "generic"
    assert ds.interactions["user_id"].tolist() == ["b", "a", "a"]
    assert np.isnan(ds.interactions["rating"].iloc[0])
    assert ds.items["genres"].tolist() == [["A", "B"], [], ["C"]]
    assert ds.items["price"].tolist() == [1.5, 2.0, 3.0]
    assert ds.users["age"].tolist() == [31, 45] and ds.users["country"].dtype == "string[pyarrow]"


def test_generic_csv_without_rating_or_catalogues(tmp_path):
    ds = load_dataset(_generic(tmp_path / "implicit", "timestamp,item_id,user_id\n5,i1,u1\n3,i2,u2\n"))
    assert ds.interactions["rating"].isna().all()
    assert ds.items["item_id"].tolist() == ["i1", "i2"] and ds.items["genres"].tolist() == [[], []]
    assert ds.users["user_id"].tolist() == ["u1", "u2"]


def test_generic_parquet_with_int_ids_and_timestamp_type(tmp_path):
    root = tmp_path / "pq"
    root.mkdir()
    table = pa.table(
        {
            "user_id": pa.array([1, 2, 1]),
            "item_id": pa.array([7, 7, 8]),
            "timestamp": pa.array([3_000_000_000, 1_000_000_000, 2_000_000_000], pa.timestamp("ms")),
        }
    )
    pq.write_table(table, root / "interactions.parquet")
    pq.write_table(pa.table({"item_id": ["7", "8"], "genres": [["A"], None]}), root / "items.parquet")
    ds = load_dataset(root)
    assert ds.interactions["user_id"].tolist() == ["2", "1", "1"]
    assert ds.interactions["timestamp"].tolist() == [1_000_000, 2_000_000, 3_000_000]
    assert ds.items["genres"].tolist() == [["A"], []]
    assert ds.items["title"].tolist() == ["", ""]


@pytest.mark.parametrize("make", [_ml100k, _ml1m, _ml_latest])
def test_import_round_trip_is_identical(tmp_path, make, capsys):
    source = make(tmp_path / "src")
    out = tmp_path / "out"
    assert _run("import", "--source", source, "--out", out) == 0
    assert "imported src" in capsys.readouterr().out
    manifest = json.loads((out / "dataset.json").read_text())
    assert manifest["counts"]["interactions"] == len(load_dataset(source).interactions)
    assert sorted(p.name for p in out.iterdir()) == [
        "dataset.json", "interactions.parquet", "items.parquet", "users.parquet",
    ]  # fmt: skip
    _assert_same(load_dataset(out), load_dataset(source))


def test_generated_round_trip_keeps_ground_truth(tmp_path, capsys):
    out = tmp_path / "synth"
    assert _run("generate", "--out", out, "--interactions", 3000, "--users", 60, "--items", 1000, "--seed", 5) == 0
    assert "generated synthetic-5: 3,000 interactions" in capsys.readouterr().out
    ds = load_dataset(out)
    assert (out / "truth.npz").exists()
    again = tmp_path / "again"
    assert _run("import", "--source", out, "--out", again) == 0
    _assert_same(load_dataset(again), ds)
    p = click_probability(ds.meta, ds.interactions["user_id"][:5], ds.interactions["item_id"][:5])
    assert p.shape == (5,)
    _assert_same(ds, generate(3000, n_users=60, n_items=1000, seed=5))


def test_save_refuses_existing_and_force_replaces(tmp_path, capsys):
    src = _generic(tmp_path / "src", GOOD)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    assert _run("import", "--source", src, "--out", out) == 2
    assert "already exists" in capsys.readouterr().err
    assert _run("import", "--source", src, "--out", out, "--force") == 0
    assert not (out / "keep.txt").exists() and (out / "dataset.json").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_save_dataset_rejects_unserialisable_meta(tmp_path):
    ds = load_dataset(_generic(tmp_path / "src", GOOD))
    ds.meta["bad"] = object()
    with pytest.raises(DataError, match="JSON"):
        save_dataset(ds, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_stats_text_and_json(tmp_path, capsys):
    src = _ml_latest(tmp_path / "ml")
    assert _run("stats", src, "--json") == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["interactions"] == 3 and stats["users"] == 2 and stats["items"] == 3
    assert stats["density"] == pytest.approx(3 / 6)
    assert stats["per_user"]["max"] == 2 and stats["per_item"]["max"] == 2
    assert stats["genres"]["items_per_genre"]["Comedy"] == 1 and stats["genres"]["items_without_genres"] == 1
    assert stats["ratings"]["distribution"] == {"0.5": 1, "4": 1, "4.5": 1}
    assert stats["time"]["first_ts"] == 964981247
    assert _run("stats", src) == 0
    text = capsys.readouterr().out
    assert "interactions       3" in text and "density" in text


# ------------------------------------------------------------------------------------------------ errors

H = "user_id,item_id,rating,timestamp\n"
BAD = [
    (H + "a,x,5,100\n\nb,y,4,abc\n", None, "interactions.csv line 4, column timestamp: 'abc' is not an integer"),
    (H + "a,x,5,100\nb,y,4\n", None, "interactions.csv line 3: expected 4 columns, got 3"),
    (H + "a,x,five,100\n", None, "interactions.csv line 2, column rating: 'five' is not a number"),
    (H + "a,x,nan,100\n", None, "interactions.csv line 2, column rating: 'nan' is not a number"),
    (H + ",x,5,100\n", None, "interactions.csv line 2, column user_id: missing value"),
    (H + "a,x,5,\n", None, "interactions.csv line 2, column timestamp: missing value"),
    ("user,item_id,timestamp\na,x,100\n", None, "interactions.csv: missing column(s) user_id"),
    (H, None, "interactions.csv: no interactions"),
    ("", None, "interactions.csv: empty file"),
    (GOOD, "item_id,title\nx,Ex\ny,Why\nx,Again\n", "items.csv line 4, column item_id: duplicate item_id 'x'"),
    (GOOD, "item_id,title\nx,Ex,extra\n", "items.csv line 2: expected 2 columns, got 3"),
    (GOOD, "title\nEx\n", "items.csv: missing column(s) item_id"),
]  # fmt: skip


@pytest.mark.parametrize(("interactions", "items", "message"), BAD)
def test_malformed_input_exits_2_naming_file_line_column(tmp_path, capsys, interactions, items, message):
    src = _generic(tmp_path / "src", interactions, items=items)
    out = tmp_path / "out" / "ds"
    assert _run("import", "--source", src, "--out", out) == 2
    err = capsys.readouterr().err
    assert message in err, err
    if "duplicate" in message:
        assert "(first at line 2)" in err
    assert err.startswith("recsys data: error: ")
    assert not out.exists()
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_malformed_movielens_and_bad_encoding(tmp_path):
    root = _ml1m(tmp_path / "ml-1m")
    (root / "users.dat").write_text("1::F::1::10::48067\n2::M::old::16::70072\n")
    with pytest.raises(DataError, match=r"users.dat line 2, column age: 'old' is not an integer"):
        load_dataset(root)
    src = _generic(tmp_path / "enc", GOOD)
    (src / "interactions.csv").write_bytes(b"user_id,item_id,rating,timestamp\na,x,5,1\nb,\xff,5,2\n")
    with pytest.raises(DataError, match=r"interactions.csv line 3: not valid utf-8 text"):
        load_dataset(src)


def test_failure_while_writing_leaves_nothing(tmp_path, monkeypatch):
    ds = load_dataset(_generic(tmp_path / "src", GOOD))

    def boom(frame, path):
        path.write_text("partial")
        raise OSError("disk full")

    monkeypatch.setattr(loaders, "_write_parquet", boom)
    with pytest.raises(OSError):
        save_dataset(ds, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]
