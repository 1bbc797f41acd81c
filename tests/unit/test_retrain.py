"""`recsys retrain` on a small synthetic set: the first challenger of an empty registry is promoted, a challenger
trained on shuffled labels is refused and stays unpublished, a good one passes and starts a canary; the registry's
history, the manifests and the reports hold what was decided and why. Plus the held-out window and bad input."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pandas as pd
import pytest

from recsys.cli import main
from recsys.model import rollout
from recsys.model.rankers.dcn import DCNConfig
from recsys.model.rankers.lightgbm import LGBMConfig
from recsys.model.registry import Registry
from recsys.training.data.loaders import load_dataset, save_dataset
from recsys.training.data.synthetic import generate
from recsys.training.gate import NO_CHAMPION, GatePolicy
from recsys.training.pipeline import DatasetError, TrainConfig
from recsys.training.retrain import CANARY, PROMOTED, UNPUBLISHED, retrain, shuffle_labels
from recsys.training.two_tower import TwoTowerConfig
from recsys.training.window import recent_window

TINY = TrainConfig(
    candidates=100,
    n_hard=30,
    n_random=10,
    two_tower=TwoTowerConfig(epochs=3, batch_size=256, hidden=32, dim=16),
    dcn=DCNConfig(epochs=2, deep=(32, 16)),
    lgbm=LGBMConfig(n_estimators=30),
)
WINDOW = 0.2
SHARE = 0.2


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """The synthetic dataset on disk, as the CLI reads it (`dataset` is the same in memory)."""
    return save_dataset(generate(n_interactions=3000, n_users=120, n_items=200, seed=3),
                        tmp_path_factory.mktemp("retrain-data") / "synthetic")


@pytest.fixture(scope="module")
def dataset(data_dir):
    return load_dataset(data_dir)


def cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["retrain", *argv])
    return code, out.getvalue()


@pytest.fixture(scope="module")
def loop(dataset, data_dir, tmp_path_factory):
    """One registry, three retrains: the first (no champion, share 0), shuffled labels (CLI), a good one."""
    work = tmp_path_factory.mktemp("retrain")
    root, config_file = work / "models", work / "tiny.json"
    config_file.write_text(json.dumps(TINY.to_dict()))
    first = retrain(dataset, root, TINY, GatePolicy(), window_frac=WINDOW, canary_share=0.0)
    code, out = cli("--data", str(data_dir), "--models", str(root), "--config", str(config_file),
                    "--window-frac", str(WINDOW), "--canary-share", str(SHARE), "--shuffle-labels", "--quiet")
    shuffled = json.loads(out.strip().splitlines()[-1])
    good = retrain(dataset, root, TINY, GatePolicy(), window_frac=WINDOW, canary_share=SHARE)
    return {"root": root, "first": first, "shuffled": shuffled, "shuffled_code": code, "good": good}


def test_the_first_retrain_of_an_empty_registry_is_promoted(loop):
    first = loop["first"]
    assert first.version == "v0001" and first.parent is None
    assert first.decision.passed and first.decision.reason == NO_CHAMPION
    assert first.action == PROMOTED and first.latest == "v0001" and first.canary is None
    kinds = [e["kind"] for e in Registry(loop["root"]).history()]
    assert kinds == ["gate", "latest", "promoted", "gate", "gate", "canary_started"]


def test_a_challenger_trained_on_shuffled_labels_is_refused(loop):
    registry, refused = Registry(loop["root"]), loop["shuffled"]
    assert loop["shuffled_code"] == 0  # a refusal is a valid outcome
    assert refused["version"] == "v0002" and refused["parent"] == "v0001"
    assert refused["decision"] == "refused" and refused["action"] == UNPUBLISHED
    assert refused["latest"] == "v0001" and refused["canary"] is None
    assert refused["metrics"]["challenger"]["recall@20"] < refused["metrics"]["champion"]["recall@20"]
    gate = [e for e in registry.history("gate") if e["version"] == "v0002"]
    assert len(gate) == 1 and gate[0]["decision"] == "refused" and gate[0]["parent"] == "v0001"
    assert "worse than the champion" in gate[0]["reason"] and "recall@20" in gate[0]["reason"]
    assert set(gate[0]["metrics"]) == {"champion", "challenger"}
    manifest = registry.manifest("v0002")
    assert manifest["gate"]["decision"] == "refused" and manifest["dataset"]["shuffled_labels"] is True
    assert "v0002" not in {e.get("to") for e in registry.history("latest")}


def test_a_good_challenger_passes_and_starts_a_canary(loop):
    registry, good = Registry(loop["root"]), loop["good"]
    assert good.version == "v0003" and good.parent == "v0001"
    assert good.decision.passed and "within tolerance" in good.decision.reason, good.decision.reason
    assert good.action == CANARY and good.latest == "v0001" == registry.latest()
    canary = rollout.current(registry)
    assert canary is not None and canary.challenger == "v0003" and canary.champion == "v0001"
    assert canary.share == SHARE
    # same data, same seed, same measurement: the champion's and the challenger's figures agree exactly
    assert good.metrics["challenger"]["recall@20"] == good.metrics["champion"]["recall@20"]


def test_the_manifest_records_parent_window_and_gate(loop):
    registry = Registry(loop["root"])
    manifest, champion = registry.manifest("v0003"), registry.manifest("v0001")
    window = manifest["data_window"]
    assert manifest["parent"] == "v0001" and manifest["gate"]["decision"] == "passed"
    assert window["train"]["until"] < window["held_out"]["since"]
    assert window["held_out"]["after_champion_data"] == champion["data_window"]["train"]["until"]
    assert manifest["dataset"]["fingerprint"] and manifest["dataset"]["train_fingerprint"]
    assert manifest["config"]["two_tower"]["epochs"] == 3 and manifest["timings"]["train_s"] > 0
    assert manifest["metrics"]["recall@20"] == loop["good"].metrics["challenger"]["recall@20"]


def test_the_reports_hold_both_metric_sets(loop):
    for version, decision in (("v0002", "refused"), ("v0003", "passed")):
        folder = loop["root"] / "reports" / version
        report = json.loads((folder / "gate.json").read_text())
        assert report["decision"]["decision"] == decision and report["champion"] == "v0001"
        for side in ("champion", "challenger"):
            assert {"recall@20", "ndcg@20", "auc", "logloss", "rankers"} <= set(report["metrics"][side])
        assert report["measured"]["users"] > 0 and report["measured"]["examples"] > 0
        page = (folder / "gate.html").read_text()
        assert decision in page and "<svg" in page and f"challenger {version}" in page and "champion v0001" in page


def test_a_running_canary_blocks_the_next_retrain(loop, data_dir):
    code, _ = cli("--data", str(data_dir), "--models", str(loop["root"]), "--quiet")
    assert code == 2
    assert Registry(loop["root"]).versions() == ["v0001", "v0002", "v0003"]


@pytest.mark.parametrize("argv", [
    ["--log", "somewhere"],
    ["--since", "2026-01-01"],
    ["--window-frac", "1.5"],
    ["--canary-share", "1"],
    ["--tolerance", "mrr=0.1"],
    ["--k", "0"],
])
def test_bad_input_exits_2(data_dir, tmp_path, argv):
    assert cli("--data", str(data_dir), "--models", str(tmp_path), "--quiet", *argv)[0] == 2
    assert Registry(tmp_path).versions() == []


def test_a_bad_canary_share_variable_exits_2(data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("RECSYS_CANARY_SHARE", "a fifth")
    assert cli("--data", str(data_dir), "--models", str(tmp_path), "--quiet")[0] == 2


def test_base_and_log_build_the_dataset_from_the_event_log(data_dir, dataset, tmp_path, monkeypatch):
    from recsys.training.data import from_log

    calls = []

    def build(log_uri, base, since_ms=None, until_ms=None, progress=False):
        calls.append((log_uri, len(base.interactions), since_ms, until_ms))
        return dataset

    monkeypatch.setattr(from_log, "build_from_log", build)
    code, _ = cli("--base", str(data_dir), "--log", "s3://logs/x", "--since", "2026-01-01T00:00:00Z",
                  "--until", "1767312000000", "--models", str(tmp_path), "--window-frac", "1.5", "--quiet")
    assert code == 2 and Registry(tmp_path).versions() == []  # the window is checked before any training
    assert calls == [("s3://logs/x", len(dataset.interactions), 1767225600000, 1767312000000)]
    assert cli("--log", "s3://logs/x", "--models", str(tmp_path), "--quiet")[0] == 2  # --log needs --base


def test_the_window_is_the_most_recent_share_of_the_interactions(dataset):
    held = recent_window(dataset, frac=0.1)
    ts = dataset.interactions["timestamp"]
    assert len(held.window) == pytest.approx(0.1 * len(ts), abs=2)
    assert held.window["timestamp"].min() == held.since > held.history.interactions["timestamp"].max()
    assert len(held.window) + len(held.history.interactions) == len(ts)
    hours = recent_window(dataset, hours=24 * 30)
    assert (hours.window["timestamp"] > ts.max() - 24 * 30 * 3600).all()
    later = recent_window(dataset, frac=0.5, after=held.since + 10)
    assert later.window["timestamp"].min() > held.since + 10 and later.after == held.since + 10


@pytest.mark.parametrize("kwargs", [{}, {"frac": 0.1, "hours": 1.0}, {"frac": 0.0}, {"hours": -1.0},
                                    {"frac": 0.1, "after": 10**12}])
def test_impossible_windows_are_refused(dataset, kwargs):
    with pytest.raises(DatasetError):
        recent_window(dataset, **kwargs)


def test_shuffled_labels_keep_everything_but_who_likes_what(dataset):
    shuffled = shuffle_labels(dataset, seed=0).interactions
    original = dataset.interactions
    pd.testing.assert_series_equal(shuffled["user_id"], original["user_id"])
    pd.testing.assert_series_equal(shuffled["timestamp"], original["timestamp"])
    assert sorted(shuffled["item_id"]) == sorted(original["item_id"])
    assert shuffled["item_id"].dtype == original["item_id"].dtype
    assert np.mean(shuffled["item_id"].to_numpy() == original["item_id"].to_numpy()) < 0.05


def test_ranking_metrics_are_measured_on_the_served_impressions_when_the_window_has_them(dataset, loop):
    from dataclasses import replace

    from recsys.model.bundle import load_bundle
    from recsys.training import window_eval

    bundle = load_bundle(Registry(loop["root"]).path("v0001"))
    held = recent_window(dataset, frac=WINDOW)
    assert window_eval.measure({"v": bundle}, held, 10, TINY)["window"]["ranking_metrics_on"] == "constructed pairs"
    rng = np.random.default_rng(0)
    window = held.window
    clicked = window[["user_id", "item_id"]].assign(label=1)
    shown = window[["user_id"]].assign(item_id=rng.choice(dataset.items["item_id"].to_numpy(), len(window)), label=0)
    exposures = pd.concat([clicked, shown], ignore_index=True).assign(timestamp=held.since)
    measured = window_eval.measure({"v": bundle}, replace(held, exposures=exposures), 10, TINY)
    assert measured["window"]["ranking_metrics_on"] == "served impressions"
    assert measured["window"]["served_clicks"] > 0 and measured["window"]["served_examples"] > 0
    served = measured["v"]["served"][measured["v"]["ranker"]]
    assert measured["v"]["auc"] == served["auc"] and measured["v"]["logloss"] == served["logloss"]
    assert served["auc"] > 0.5  # the ranker tells what users chose from what they were merely shown
