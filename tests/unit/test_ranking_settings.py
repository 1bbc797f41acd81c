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


def test_fast_path_env_fills_only_what_is_unset():
    from recsys.ranking.runtime import FAST_PATH_ENV, apply_fast_path_env

    env = {"RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "1", "PATH": "/bin"}
    added = apply_fast_path_env(env)
    assert env["RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP"] == "1"  # the operator's value wins
    assert "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP" not in added
    assert env["RAY_SERVE_PROXY_USE_GRPC"] == "1" and env["OMP_WAIT_POLICY"] == "PASSIVE"
    assert env["RAY_SERVE_ENABLE_DIRECT_INGRESS"] == "0"  # nothing binds [::] on replica ports
    assert set(added) == set(FAST_PATH_ENV) - {"RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP"}


def test_fast_path_env_leaves_the_preset_its_choices():
    from recsys.ranking.runtime import apply_fast_path_env

    env = {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}
    apply_fast_path_env(env)
    # the preset decides these ...
    assert "RAY_SERVE_ENABLE_DIRECT_INGRESS" not in env and "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP" not in env
    # ... but not the proxy's transport (computed before the preset in Ray 2.60)
    assert env["RAY_SERVE_PROXY_USE_GRPC"] == "1"


def test_lightgbm_import_skips_sklearn_but_leaves_it_importable():
    import subprocess
    import sys

    code = (
        "import sys; from recsys.ranking.rankers import import_lightgbm; import_lightgbm(); "
        "assert 'lightgbm' in sys.modules and 'sklearn' not in sys.modules; "
        "import lightgbm; assert not lightgbm.compat.SKLEARN_INSTALLED; import sklearn; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_rayservice_pods_get_the_same_fast_path_env():
    import re
    from pathlib import Path

    from recsys.ranking.runtime import FAST_PATH_ENV

    tpl = (Path(__file__).parents[2] / "helm/recsys/charts/ranking/templates/_rayservice.tpl").read_text()
    rendered = dict(re.findall(r'- name: (\w+)\n\s+value: "([^"]*)"', tpl))
    assert {k: rendered.get(k) for k in FAST_PATH_ENV} == FAST_PATH_ENV
