"""Training data from the event log (`recsys dataset build`): positives, exposure-aware negatives, served
positions, inverse-propensity weights that undo a known position bias, the join with the base dataset,
determinism, the CLI, and rankers trained on the weighted exposure-aware examples."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys.cli import main
from recsys.eventlog import layout
from recsys.model.ids import IdIndex
from recsys.model.rankers.dcn import DCNConfig
from recsys.model.rankers.lightgbm import LGBMConfig
from recsys.training import pipeline
from recsys.training.data.from_log import build_from_log
from recsys.training.data.loaders import load_dataset, save_dataset
from recsys.training.data.propensity import PositionBias, fit_position_bias
from recsys.training.data.schema import DataError, validate
from recsys.training.data.synthetic import click_probability, generate
from recsys.training.data.timespec import parse_instant
from recsys.training.examples import build_examples
from recsys.training.exposures import LoggedFeedback, label_window_feedback
from recsys.training.features import build_feature_spec
from recsys.training.pipeline import TrainConfig, train_all
from recsys.training.two_tower import TwoTowerConfig

T0 = 1_700_000_000_000  # 2023-11-14T22:13:20Z, epoch ms
HOUR = 3_600_000

# ------------------------------------------------------------------------------------------------ log writing


def write_log(root: Path, table: str, rows: list[dict], topic: str = "t", partition: int = 0, first: int = 0,
              parts: int | None = None) -> None:
    """One write of `rows` (offsets first.. in order) split by event hour as the writer does; `parts` larger
    than the hours it spans leaves the write incomplete."""
    schema = layout.SCHEMAS[table]
    defaults = {f.name: None for f in schema}
    by_hour: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for offset, row in enumerate(rows, start=first):
        full = {**defaults, "topic": topic, "partition": partition, "offset": offset, **row}
        by_hour[layout.hour_of(full["timestamp_ms"])].append(full)
    n = parts or len(by_hour)
    last = first + len(rows) - 1
    for part, ((date, hour), chunk) in enumerate(sorted(by_hour.items()), start=1):
        folder = Path(layout.partition_dir(str(root), table, date, hour))
        folder.mkdir(parents=True, exist_ok=True)
        name = layout.FileName(topic, partition, first, last, part, n)
        pq.write_table(pa.Table.from_pylist(chunk, schema=schema), folder / str(name))


def shown(request: str, user: str, items: list[str], t: int, variant: str = "A", version: str = "v0001"):
    return [{"event_id": request, "request_id": request, "user_id": user, "variant": variant, "model": "dcn",
             "model_version": version, "timestamp_ms": t, "degraded": False, "item_id": item, "position": k,
             "score": 1.0 - k / 10, "source": "two_tower"} for k, item in enumerate(items)]


def event(event_id: str, kind: str, user: str, item: str, t: int, request: str = "", position: int = 0,
          value: float | None = None) -> dict:
    return {"event_id": event_id, "type": kind, "user_id": user, "item_id": item, "request_id": request,
            "position": position, "model": "dcn", "variant": "A", "timestamp_ms": t, "value": value}


@pytest.fixture
def base_dir(tmp_path):
    root = tmp_path / "base"
    root.mkdir()
    (root / "interactions.csv").write_text(
        "user_id,item_id,rating,timestamp\nu1,i1,4,1600000000\nu2,i2,5,1600000100\nu1,i3,3,1600000200\n"
    )
    (root / "items.csv").write_text("item_id,title,genres\ni1,One (1990),Drama\ni2,Two,Comedy|Drama\ni3,Three,\n")
    return root


@pytest.fixture
def log_dir(tmp_path):
    """r1: u1 sees i1, i2, i9 and clicks then buys i2; r2: u3 (new) sees i1, i3, no click; u2 rates i3 and
    clicks i1 from a request whose impression is not logged; a duplicate click, a view, an incomplete write."""
    root = tmp_path / "log"
    write_log(root, layout.IMPRESSIONS, shown("r1", "u1", ["i1", "i2", "i9"], T0) +
              shown("r2", "u3", ["i1", "i3"], T0 + HOUR, variant="B", version="v0002"))
    write_log(root, layout.IMPRESSIONS, shown("r1", "u1", ["i1", "i2", "i9"], T0), first=5)  # re-delivered
    events = [
        event("e1", "click", "u1", "i2", T0 + 5_000, "r1", 1),
        event("e2", "purchase", "u1", "i2", T0 + 60_000, "r1", 1),
        event("e3", "rating", "u2", "i3", T0 + 2 * HOUR, value=4.0),
        event("e4", "click", "u2", "i1", T0 + 2 * HOUR + 1_000, "r0", 3),
        event("e5", "view", "u2", "i2", T0 + 2 * HOUR + 2_000),
        event("", "click", "", "i2", T0 + 2 * HOUR + 3_000, "r1", 1),  # no user: malformed
    ]
    write_log(root, layout.EVENTS, events)
    write_log(root, layout.EVENTS, [events[0]], first=10)  # the same click, delivered twice
    write_log(root, layout.EVENTS, [event("e9", "click", "u1", "i1", T0 + 10, "r1", 0)], first=20, parts=2)
    return root


# ------------------------------------------------------------------------------------------------ build


def test_positives_exposures_positions_and_the_join(base_dir, log_dir):
    base = load_dataset(base_dir)
    ds = build_from_log(str(log_dir), base)
    validate(ds)
    inter = ds.interactions
    assert len(inter) == len(base.interactions) + 4  # click, purchase, rating, orphan click (not the view)
    logged = inter.iloc[len(base.interactions):]
    assert list(zip(logged["user_id"], logged["item_id"], strict=True)) == [
        ("u1", "i2"), ("u1", "i2"), ("u2", "i3"), ("u2", "i1")]
    assert logged["timestamp"].tolist() == [(T0 + 5_000) // 1000, (T0 + 60_000) // 1000, (T0 + 2 * HOUR) // 1000,
                                            (T0 + 2 * HOUR + 1_000) // 1000]
    assert np.isnan(logged["rating"].to_numpy()[[0, 1, 3]]).all() and logged["rating"].iloc[2] == 4.0
    pd.testing.assert_frame_equal(inter.iloc[: len(base.interactions)], base.interactions)

    exp = ds.exposures
    rows = {(r.request_id, r.item_id): r for r in exp.itertuples()}
    assert set(rows) == {("r1", "i1"), ("r1", "i2"), ("r1", "i9"), ("r2", "i1"), ("r2", "i3"), ("r0", "i1")}
    assert {k for k, r in rows.items() if r.label == 1} == {("r1", "i2"), ("r0", "i1")}
    assert [rows[k].position for k in [("r1", "i1"), ("r1", "i2"), ("r1", "i9"), ("r0", "i1")]] == [0, 1, 2, 3]
    assert (rows[("r2", "i3")].variant, rows[("r2", "i3")].model_version) == ("B", "v0002")
    assert rows[("r0", "i1")].model_version == "" and rows[("r0", "i1")].user_id == "u2"
    bias = PositionBias(ds.meta["log"]["position_bias"]["eta"])
    np.testing.assert_allclose(exp["propensity"], bias.propensity(exp["position"].to_numpy()), rtol=1e-6)
    np.testing.assert_allclose(exp["weight"], np.where(exp["label"] == 1, 1 / exp["propensity"], 1.0), rtol=1e-6)

    assert ds.items["item_id"].tolist() == ["i1", "i2", "i3", "i9"]
    assert ds.items.iloc[3]["title"] == "" and ds.items.iloc[3]["genres"] == []
    assert ds.users["user_id"].tolist() == ["u1", "u2", "u3"]
    log = ds.meta["log"]
    assert log["positives_by_type"] == {"click": 2, "purchase": 1, "rating": 1}
    assert log["events"] == {"read": 6, "duplicates": 1, "malformed": 1}
    assert log["impressions"]["duplicates"] == 3 and (log["items_added"], log["users_added"]) == (1, 1)


def test_since_and_until_select_the_window(base_dir, log_dir):
    base = load_dataset(base_dir)
    ds = build_from_log(str(log_dir), base, since_ms=T0 + HOUR, until_ms=T0 + 2 * HOUR + 500)
    assert ds.meta["log"]["positives_added"] == 1  # the rating
    assert set(ds.exposures["request_id"]) == {"r2"} and ds.exposures["label"].sum() == 0
    empty = build_from_log(str(log_dir), base, since_ms=T0 + 10 * HOUR)
    assert len(empty.exposures) == 0 and len(empty.interactions) == len(base.interactions)
    validate(empty)


def test_same_snapshot_same_bytes(base_dir, log_dir, tmp_path):
    base = load_dataset(base_dir)
    first = save_dataset(build_from_log(str(log_dir), base), tmp_path / "a")
    second = save_dataset(build_from_log(str(log_dir), load_dataset(base_dir)), tmp_path / "b")
    names = sorted(p.name for p in first.iterdir())
    assert "exposures.parquet" in names and names == sorted(p.name for p in second.iterdir())
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_building_on_a_built_base_adds_only_new_windows(base_dir, log_dir, tmp_path):
    base = load_dataset(base_dir)
    whole = build_from_log(str(log_dir), base)
    first = load_dataset(save_dataset(build_from_log(str(log_dir), base, until_ms=T0 + HOUR), tmp_path / "day1"))
    chained = build_from_log(str(log_dir), first, since_ms=T0 + HOUR)
    pd.testing.assert_frame_equal(chained.interactions, whole.interactions)
    pd.testing.assert_frame_equal(chained.exposures, whole.exposures)
    assert chained.meta["log_windows"] == [[None, T0 + HOUR], [T0 + HOUR, None]]
    with pytest.raises(DataError, match="already holds the log window"):
        build_from_log(str(log_dir), first, since_ms=T0 + HOUR - 1)


def test_exposures_round_trip_and_validation(base_dir, log_dir, tmp_path):
    ds = build_from_log(str(log_dir), load_dataset(base_dir))
    again = load_dataset(save_dataset(ds, tmp_path / "built"))
    pd.testing.assert_frame_equal(again.exposures, ds.exposures)
    pd.testing.assert_frame_equal(again.interactions, ds.interactions)
    assert json.loads((tmp_path / "built" / "dataset.json").read_text())["counts"]["exposures"] == len(ds.exposures)
    assert load_dataset(base_dir).exposures is None
    broken = ds.exposures.copy()
    broken.loc[0, "weight"] = 0.0
    with pytest.raises(DataError, match="weight"):
        validate(replace(ds, exposures=broken))
    with pytest.raises(DataError, match="absent from items"):
        validate(replace(ds, exposures=ds.exposures.assign(item_id=pd.array(["zz"] * len(ds.exposures),
                                                                              dtype="string[pyarrow]"))))
    with pytest.raises(DataError, match="lack column"):
        validate(replace(ds, exposures=ds.exposures.drop(columns="label")))


# ------------------------------------------------------------------------------------------------ position bias

ETA = 0.5


def _confounded_cells(rng: np.random.Generator, n_items: int = 300, positions: int = 10):
    """Expected impressions and clicks per (item, position) under P(click) = r_i (1 + k)^-ETA, where the
    ranker shows relevant items near the top (so the raw position-CTR curve mixes relevance into the bias)."""
    r = rng.uniform(0.02, 0.6, n_items)
    item, pos = np.meshgrid(np.arange(n_items), np.arange(positions), indexing="ij")
    item, pos = item.ravel(), pos.ravel()
    n = 100.0 * np.exp(-np.abs(pos - (1 - r[item]) * (positions - 1)) / 2)
    return r, item, pos, n, n * r[item] * (1.0 + pos) ** -ETA


def test_ipw_weights_undo_a_known_position_bias_in_expectation():
    r, item, pos, n, clicks = _confounded_cells(np.random.default_rng(0))
    bias = fit_position_bias(item, pos, clicks, shown=n)
    assert bias.eta == pytest.approx(ETA, abs=1e-4)
    weighted = np.bincount(item, weights=clicks * bias.weight(pos)) / np.bincount(item, weights=n)
    np.testing.assert_allclose(weighted, r, rtol=1e-3)  # IPW click rate = relevance, at every position mix
    raw = np.bincount(item, weights=clicks) / np.bincount(item, weights=n)
    assert np.abs(raw / r - 1).max() > 0.3  # without the weights, rarely-top items look much worse
    ctr = np.bincount(pos, weights=clicks) / np.bincount(pos, weights=n)
    assert ctr[-1] / ctr[0] < 0.5 * (1 + pos.max()) ** -ETA  # the naive curve over-states the bias
    assert fit_position_bias(item, np.zeros_like(pos), clicks, shown=n).eta == 0.0  # no spread: no correction
    assert PositionBias(2.0).weight(np.array([0, 1, 100])).tolist() == [1.0, 4.0, 10.0]  # clipped at 1 / 0.1


def test_ipw_on_a_simulated_log_recovers_relevance(base_dir, tmp_path):
    """End to end: a log whose clicks follow r_i (1 + k)^-ETA gives eta ~ ETA and, per item, the mean of
    label * weight over its impressions ~ r_i."""
    rng = np.random.default_rng(1)
    n_items, requests, k = 40, 4000, 8
    r = rng.uniform(0.05, 0.5, n_items)
    impressions, events = [], []
    for q in range(requests):
        pool = rng.choice(n_items, 20, replace=False)
        ranked = pool[np.argsort(-(r[pool] + rng.normal(0, 0.15, len(pool))))][:k]
        t = T0 + q * 1000
        impressions += shown(f"q{q}", f"u{q % 50}", [f"x{i}" for i in ranked], t)
        hits = rng.random(k) < r[ranked] * (1.0 + np.arange(k)) ** -ETA
        events += [event(f"c{q}-{j}", "click", f"u{q % 50}", f"x{ranked[j]}", t + 500, f"q{q}", j)
                   for j in np.flatnonzero(hits)]
    write_log(tmp_path / "log", layout.IMPRESSIONS, impressions)
    write_log(tmp_path / "log", layout.EVENTS, events)
    ds = build_from_log(str(tmp_path / "log"), load_dataset(base_dir))
    assert ds.meta["log"]["position_bias"]["eta"] == pytest.approx(ETA, abs=0.06)
    exp = ds.exposures
    item = exp["item_id"].str.slice(1).astype(int).to_numpy()
    ipw = np.bincount(item, weights=exp["label"] * exp["weight"].astype(np.float64)) / np.bincount(item)
    raw = np.bincount(item, weights=exp["label"].astype(np.float64)) / np.bincount(item)
    seen = np.bincount(item) >= 200
    assert np.abs(ipw[seen] / r[seen] - 1).mean() < 0.12
    assert np.abs(raw[seen] / r[seen] - 1).mean() > 0.3


# ------------------------------------------------------------------------------------------------ CLI


def test_cli_build_and_bad_input(base_dir, log_dir, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["dataset", "build", "--log", str(log_dir), "--base", str(base_dir), "--out", str(out),
               "--since", "2023-11-14T00:00:00Z", "--until", str(T0 // 1000 + 30 * 24 * 3600), "--quiet"])
    assert rc == 0
    text, line = capsys.readouterr().out.strip().splitlines()
    assert text.startswith("built base: 4 positives added, 6 exposures (2 clicked)")
    summary = json.loads(line)
    assert summary["users"] == 3 and summary["items"] == 4 and summary["exposures"] == 6
    assert len(load_dataset(out).exposures) == 6
    assert main(["data", "build", "--log", str(log_dir), "--base", str(base_dir), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    for flag, value in (("--since", "last tuesday"), ("--until", "7x")):
        rc = main(["dataset", "build", "--log", str(log_dir), "--base", str(base_dir), "--out",
                   str(tmp_path / "o2"), flag, value])
        assert rc == 2
        assert flag in capsys.readouterr().err
    assert main(["dataset", "build", "--log", str(tmp_path / "nolog"), "--base", str(base_dir), "--out",
                 str(tmp_path / "o3")]) == 2
    assert "--log" in capsys.readouterr().err
    assert main(["dataset", "build", "--log", str(log_dir), "--base", str(base_dir), "--out", str(tmp_path / "o4"),
                 "--since", "1d", "--until", "2d"]) == 2
    assert "--since" in capsys.readouterr().err


def test_parse_instant():
    now = 1_700_000_000.0
    assert parse_instant("7d", now) == (now - 7 * 86400) * 1000
    assert parse_instant("24h", now) == parse_instant("1d", now)
    assert parse_instant("1700000000", now) == 1_700_000_000_000
    assert parse_instant("1700000000123", now) == 1_700_000_000_123  # milliseconds, as `recsys retrain` took them
    assert parse_instant("2023-11-14T22:13:20Z", now) == 1_700_000_000_000
    assert parse_instant("2023-11-14T23:13:20+01:00", now) == 1_700_000_000_000
    assert parse_instant("2023-11-14", now) == parse_instant("2023-11-14T00:00:00", now)
    for bad in ("", "yesterday", "7x", "-5"):
        with pytest.raises(ValueError):
            parse_instant(bad, now)


# ------------------------------------------------------------------------------------------------ training


def test_label_window_feedback_and_examples(base_dir):
    users, items = IdIndex(["a", "b"]), IdIndex([f"i{j}" for j in range(8)])
    labels = pd.DataFrame({"user_id": ["a", "a", "b"], "item_id": ["i1", "i2", "i3"], "timestamp": [100, 200, 50]})
    exp = pd.DataFrame({
        "user_id": ["a", "a", "a", "a", "a", "b"], "item_id": ["i4", "i5", "i1", "i6", "i7", "i3"],
        "timestamp": [90, 150, 150, 150 - 4000, 300, 50], "label": [0, 0, 1, 0, 0, 1],
        "weight": [1.0, 1.0, 3.0, 1.0, 1.0, 2.0],
    })
    fb = label_window_feedback(exp, labels, users, items)
    assert fb.exposed[0].tolist() == [4, 5]  # i6 before the window (and its grace), i7 after it
    assert (fb.clicked[0].tolist(), fb.click_weight[0].tolist()) == ([1], [3.0])
    assert fb.weights(1, np.array([3, 0])).tolist() == [2.0, 1.0]

    rng = np.random.default_rng(0)
    n_items, dim = 8, 3
    spec_args = _tiny_spec_inputs(base_dir, n_items, dim)
    feedback = LoggedFeedback([np.array([4, 5, 6, 0]), np.array([], np.int64)], fb.clicked, fb.click_weight)
    cands = np.array([[1, 2, 3, -1], [3, 4, -1, -1]])
    positives = [np.array([1, 2]), np.array([3])]
    seen = [np.array([0], np.int32), np.array([], np.int32)]
    ex = build_examples(*spec_args, cands, positives, seen, 1, 0, 5, rng, False, feedback, max_exposed=2)
    a = ex.group == 0
    shown_rows = a & (ex.y == 0) & ~ex.hard & np.isin(ex.item, [4, 5, 6])
    assert shown_rows.sum() == 2 and not np.isin(ex.item[a & (ex.y == 0)], [0, 1, 2]).any()  # not seen/liked
    assert ex.weight[a & (ex.item == 1)].tolist() == [3.0] and ex.weight[a & (ex.item == 2)].tolist() == [1.0]
    assert ex.weight[ex.y == 0].tolist() == [1.0] * int((ex.y == 0).sum())
    plain = build_examples(*spec_args, cands, positives, seen, 1, 0, 5, np.random.default_rng(0))
    assert plain.weight is None and len(plain) < len(ex)


def _tiny_spec_inputs(base_dir: Path, n_items: int, dim: int):
    """spec, user features (2 users), item features, user and item embeddings of a toy catalogue."""
    spec = build_feature_spec(load_dataset(base_dir))
    rng = np.random.default_rng(5)
    return (spec, rng.random((2, len(spec.user_features)), dtype=np.float32),
            rng.random((n_items, len(spec.item_features)), dtype=np.float32), rng.random((2, dim)),
            rng.random((n_items, dim)))


TINY = TrainConfig(
    candidates=100, n_hard=30, max_exposed=40,
    two_tower=TwoTowerConfig(epochs=2, batch_size=256, hidden=32, dim=16),
    dcn=DCNConfig(epochs=2, deep=(32, 16)),
    lgbm=LGBMConfig(n_estimators=20),
)


def _simulated_log(ds, root: Path, rng: np.random.Generator, requests_per_user: int = 6, k: int = 10) -> None:
    """Each user asks `requests_per_user` times after the data ends; 10 items from a noisy ranking of a random
    pool; clicks follow the ground truth times (1 + position)^-ETA."""
    users = ds.users["user_id"].astype(str).to_numpy()
    items = ds.items["item_id"].astype(str).to_numpy()
    t = int(ds.interactions["timestamp"].max()) * 1000 + HOUR
    impressions, events = [], []
    for q in range(requests_per_user * len(users)):
        user = users[q % len(users)]
        pool = rng.choice(items, 40, replace=False)
        p = click_probability(ds, [user] * len(pool), pool)
        ranked = pool[np.argsort(-(p + rng.normal(0, 0.1, len(pool))))][:k]
        ts = t + q * 60_000
        impressions += shown(f"q{q}", user, list(ranked), ts)
        hits = rng.random(k) < click_probability(ds, [user] * k, ranked) * (1.0 + np.arange(k)) ** -ETA
        events += [event(f"c{q}-{j}", "click", user, ranked[j], ts + 2_000, f"q{q}", int(j))
                   for j in np.flatnonzero(hits)]
    write_log(root, layout.IMPRESSIONS, impressions)
    write_log(root, layout.EVENTS, events)


def test_rankers_train_on_weighted_exposure_aware_examples(tmp_path, monkeypatch):
    base = generate(n_interactions=3000, n_users=100, n_items=200, seed=3)
    _simulated_log(base, tmp_path / "log", np.random.default_rng(2))
    ds = build_from_log(str(tmp_path / "log"), base)
    assert ds.meta["log"]["clicked_exposures"] > 100
    captured = {}
    real = pipeline.train_rankers

    def spy(examples, spec, cfg, progress, ray_fit=None):
        captured["examples"] = examples
        return real(examples, spec, cfg, progress, ray_fit)

    monkeypatch.setattr(pipeline, "train_rankers", spy)
    bundle, _ = train_all(ds, TINY, progress=False)
    ex = captured["examples"]
    assert ex.weight is not None and len(ex.weight) == len(ex)
    assert (ex.weight[ex.y == 1] > 1.0).any() and (ex.weight[ex.y == 0] == 1.0).all()
    x = ex.x[:50]
    for name in ("dcn", "lgbm"):
        scores = bundle.rankers[name].score(x)
        assert scores.shape == (50,) and np.isfinite(scores).all() and scores.std() > 0, name

    # without exposures: the same positives, no weights, fewer (only sampled) negatives
    train_all(replace(ds, exposures=None), TINY, progress=False)
    plain = captured["examples"]
    assert plain.weight is None and (plain.y == 1).sum() == (ex.y == 1).sum()
    assert ((ex.y == 0) & ~ex.hard).sum() > ((plain.y == 0) & ~plain.hard).sum()


def test_a_rebuild_keeps_the_catalogue_changes(base_dir, log_dir):
    """The log's item changes reach the rebuilt catalogue: a new item, a changed genre, a deleted item (kept as a
    row, unavailable, since interactions refer to it), and the latest change of an item wins."""
    write_log(log_dir, layout.ITEMS, [
        {"change_id": "c1", "op": "upsert", "item_id": "i3", "title": "Three", "genres": ["comedy"],
         "attributes": [("year", "2001")], "available": True, "timestamp_ms": T0},
        {"change_id": "c2", "op": "upsert", "item_id": "n1", "title": "New", "genres": ["drama"], "available": True,
         "timestamp_ms": T0 + 1},
        {"change_id": "c3", "op": "upsert", "item_id": "i2", "title": "Two", "genres": ["Drama"], "available": True,
         "timestamp_ms": T0 + 2},
        {"change_id": "c4", "op": "delete", "item_id": "i2", "available": False, "timestamp_ms": T0 + 3},
    ], topic="items")
    ds = build_from_log(str(log_dir), load_dataset(base_dir))
    items = ds.items.set_index(ds.items["item_id"].astype(str))
    assert items.loc["i3", "genres"] == ["Comedy"] and items.loc["i3", "year"] == 2001
    assert items.loc["n1", "genres"] == ["Drama"] and bool(items.loc["n1", "available"])
    assert not bool(items.loc["i2", "available"]) and bool(items.loc["i1", "available"])
    assert ds.meta["log"]["item_changes"] == {"upserted": 2, "added": 1, "removed": 1}
    from recsys.training.features import build_item_features

    features = build_item_features(ds)  # the bundle's item features carry availability to the index
    available = dict(zip(features["item_id"].astype(str), features["available"], strict=True))
    assert not available["i2"] and available["n1"] and available["i1"]
