"""The champion / challenger gate as a pure function: which metric decides, tolerances, K, and no champion."""

from __future__ import annotations

import math

import pytest

from recsys.common.errors import CliError
from recsys.training.gate import NO_CHAMPION, GatePolicy, judge
from recsys.training.retrain_commands import tolerances

CHAMPION = {"recall@20": 0.20, "ndcg@20": 0.10, "auc": 0.80, "logloss": 0.40}


def challenger(**changes: float) -> dict:
    return {**CHAMPION, **{k.replace("_at_", "@"): v for k, v in changes.items()}}


def test_no_champion_passes():
    for champion in (None, {}):
        decision = judge(champion, CHAMPION, GatePolicy())
        assert decision.passed and decision.reason == NO_CHAMPION and decision.deltas == {}


def test_an_equal_or_better_challenger_passes():
    assert judge(CHAMPION, CHAMPION, GatePolicy()).passed
    better = judge(CHAMPION, challenger(recall_at_20=0.3, auc=0.9, logloss=0.2), GatePolicy())
    assert better.passed and better.decision == "passed"
    assert better.deltas["recall@20"]["relative"] == pytest.approx(0.5)
    assert "within tolerance" in better.reason


@pytest.mark.parametrize("metric, value", [("recall_at_20", 0.19), ("ndcg_at_20", 0.095), ("auc", 0.76)])
def test_higher_is_better_metrics_fail_beyond_tolerance(metric, value):
    name = metric.replace("_at_", "@")
    decision = judge(CHAMPION, challenger(**{metric: value}), GatePolicy())
    assert not decision.passed and decision.decision == "refused"
    assert decision.deltas[name]["worse"]
    assert [n for n, d in decision.deltas.items() if d["worse"]] == [name]
    assert name in decision.reason and f"{value:.4f}" in decision.reason and f"{CHAMPION[name]:.4f}" in decision.reason


def test_within_tolerance_passes():
    decision = judge(CHAMPION, challenger(recall_at_20=0.197, auc=0.79, logloss=0.405), GatePolicy())
    assert decision.passed, decision.reason
    assert decision.deltas["recall@20"]["relative"] == pytest.approx(-0.015)


def test_logloss_is_lower_is_better():
    worse = judge(CHAMPION, challenger(logloss=0.42), GatePolicy())
    assert not worse.passed and "logloss 0.4200 vs champion 0.4000" in worse.reason and "+5.0%" in worse.reason
    assert judge(CHAMPION, challenger(logloss=0.30), GatePolicy()).passed


def test_every_failing_metric_is_named():
    decision = judge(CHAMPION, challenger(recall_at_20=0.1, logloss=0.5), GatePolicy())
    assert "recall@20" in decision.reason and "logloss" in decision.reason and "auc" not in decision.reason


def test_per_metric_tolerance():
    lenient = GatePolicy().with_tolerances(recall=0.1)
    assert judge(CHAMPION, challenger(recall_at_20=0.19), lenient).passed
    assert not judge(CHAMPION, challenger(ndcg_at_20=0.095), lenient).passed
    strict = GatePolicy(tolerances={"recall": 0.0, "ndcg": 0.0, "auc": 0.0, "logloss": 0.0})
    assert not judge(CHAMPION, challenger(auc=0.7999), strict).passed
    assert judge(CHAMPION, CHAMPION, strict).passed


def test_only_the_listed_families_are_gated():
    recall_only = GatePolicy(tolerances={"recall": 0.02})
    decision = judge(CHAMPION, challenger(auc=0.5, logloss=0.9), recall_only)
    assert decision.passed and set(decision.deltas) == {"recall@20"}


def test_k_names_the_metric():
    policy = GatePolicy(k=10)
    decision = judge({"recall@10": 0.2, "recall@20": 0.5}, {"recall@10": 0.1, "recall@20": 0.5}, policy)
    assert not decision.passed and "recall@10" in decision.reason and "recall@20" not in decision.deltas


def test_unmeasurable_figures():
    missing = judge(CHAMPION, challenger(auc=math.nan), GatePolicy())
    assert not missing.passed and "auc not measured for the challenger" in missing.reason
    no_figure = judge({**CHAMPION, "auc": math.nan}, challenger(auc=0.1), GatePolicy())
    assert no_figure.passed and no_figure.deltas["auc"]["skipped"]
    assert judge({"mrr": 0.3}, CHAMPION, GatePolicy()).reason.startswith("no gated metric")


def test_a_zero_champion_figure_compares_absolutely():
    zero = {**CHAMPION, "recall@20": 0.0}
    assert judge(zero, {**zero, "recall@20": 0.0}, GatePolicy()).passed
    assert judge(zero, {**zero, "recall@20": 0.01}, GatePolicy()).passed
    assert not judge({**CHAMPION, "logloss": 0.0}, challenger(logloss=0.05), GatePolicy()).passed


@pytest.mark.parametrize("kwargs", [{"k": 0}, {"tolerances": {"recall": -0.1}}, {"tolerances": {"mrr": 0.1}},
                                    {"tolerances": {"auc": math.inf}}])
def test_bad_policies_are_refused(kwargs):
    with pytest.raises(ValueError):
        GatePolicy(**kwargs)


def test_cli_tolerances():
    assert tolerances(["0.05", "logloss=0.1"]) == {"recall": 0.05, "ndcg": 0.05, "auc": 0.05, "logloss": 0.1}
    assert tolerances(["auc=0"]) == {"auc": 0.0}
    for bad in (["x"], ["mrr=0.1"], ["recall="]):
        with pytest.raises(CliError):
            tolerances(bad)
