"""Ranking settings: version pins, aliases, replicas vs autoscaling, user_config."""

from __future__ import annotations

import pytest

from recsys.common.config import ConfigError
from recsys.ranking.settings import RankingSettings, canonical, parse_versions


def test_parse_versions_and_aliases():
    assert parse_versions(" dcn=v0003, lgbm=v0002 ") == {"dcn": "v0003", "lightgbm": "v0002"}
    assert parse_versions("") == {}
    assert canonical("LGBM") == "lightgbm" and canonical("dcn") == "dcn"
    for bad in ("dcn", "xgb=v1", "dcn="):
        with pytest.raises(ConfigError):
            parse_versions(bad)


def test_options_replicas_or_autoscaling(monkeypatch):
    from recsys.ranking.app import deployment_options, user_config

    monkeypatch.setenv("RECSYS_RANKING_REPLICAS", "2")
    fixed = deployment_options(RankingSettings.from_env())
    assert fixed["num_replicas"] == 2 and "autoscaling_config" not in fixed
    monkeypatch.setenv("RECSYS_RANKING_MAX_REPLICAS", "4")
    monkeypatch.setenv("RECSYS_RANKING_TARGET_ONGOING", "3")
    scaled = deployment_options(RankingSettings.from_env())
    assert "num_replicas" not in scaled
    assert scaled["autoscaling_config"] == {
        "min_replicas": 2,
        "initial_replicas": 2,
        "max_replicas": 4,
        "target_ongoing_requests": 3.0,
    }
    monkeypatch.setenv("RECSYS_RANKING_BATCHING", "off")
    monkeypatch.setenv("RECSYS_RANKING_MAX_BATCH", "16")
    cfg = user_config(RankingSettings.from_env(), {"lightgbm": "v2", "dcn": "v1"})
    assert cfg == {
        "versions": {"dcn": "v1", "lightgbm": "v2"},
        "batching": {"enabled": False, "max_batch": 16, "wait_ms": 0.0},
    }


def test_bad_default_model(monkeypatch):
    monkeypatch.setenv("RECSYS_RANKING_DEFAULT_MODEL", "xgboost")
    with pytest.raises(ConfigError):
        RankingSettings.from_env()
