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
    from recsys.ranking.server import deployment_options, user_config

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
        "import sys; import recsys.model.rankers.lightgbm; "
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


@pytest.mark.parametrize(
    "text, expected", [("", None), ("50154-50157", (50154, 50157)), (" 50154 ", (50154, 50154))]
)
def test_direct_port_ranges_parse(text, expected):
    from recsys.ranking.settings import parse_port_range

    assert parse_port_range(text) == expected


@pytest.mark.parametrize("text", ["abc", "50157-50154", "80-90", "1-2-3"])
def test_bad_direct_port_ranges_name_the_variable(text):
    from recsys.ranking.settings import parse_port_range

    with pytest.raises(ConfigError, match="RECSYS_RANKING_DIRECT_PORTS"):
        parse_port_range(text)


def test_direct_ingress_env_opens_the_named_ports_with_a_short_drain():
    from recsys.ranking.runtime import apply_fast_path_env, direct_ingress_env

    env = direct_ingress_env((50154, 50157), 2.0)
    assert env == {
        "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",
        "RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT": "50154",
        "RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT": "50157",
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2.0",
    }
    apply_fast_path_env(env)  # the fast path's "off" does not override it
    assert env["RAY_SERVE_ENABLE_DIRECT_INGRESS"] == "1"


def test_the_local_stack_gives_each_ranking_instance_its_replica_ports_and_the_gateway_all_of_them(tmp_path):
    from recsys.stack.local import DIRECT_PORTS_PER_INSTANCE, StackConfig, _instance_env

    cfg = StackConfig.default(tmp_path, "127.0.0.1:9092", fixed_ports=True, ranking_instances=2)
    env = cfg.env()
    assert env["RECSYS_RANKING_DIRECT_PORTS"] == "50154-50157"
    assert _instance_env(cfg, "ranking", "ranking-2")["RECSYS_RANKING_DIRECT_PORTS"] == "50164-50167"
    assert env["RECSYS_RANKING_DIRECT_ADDR"].split(",") == [
        f"127.0.0.1:{p}" for p in [*range(50154, 50158), *range(50164, 50168)]
    ]
    free = StackConfig.default(tmp_path, "127.0.0.1:9092", fixed_ports=False, ranking_instances=1)
    first, last = (int(p) for p in free.env()["RECSYS_RANKING_DIRECT_PORTS"].split("-"))
    assert last - first + 1 == DIRECT_PORTS_PER_INSTANCE and first not in free.ports.values()
