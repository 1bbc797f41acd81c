"""Several instances of a service: gRPC list targets, round-robin channels, the local stack's ranking instances."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recsys.common.clients import _options, balanced, grpc_target, retry_service_config
from recsys.stack.local import StackConfig, service_specs


def test_one_address_is_kept_as_it_is():
    assert grpc_target("127.0.0.1:50054") == "127.0.0.1:50054"
    assert grpc_target("rs-ranking:50054") == "rs-ranking:50054"
    assert grpc_target("dns:///rs-ranking.ml:50054") == "dns:///rs-ranking.ml:50054"


def test_a_list_of_ip_addresses_becomes_a_grpc_list_target():
    assert grpc_target("127.0.0.1:50054, 127.0.0.1:50064") == "ipv4:127.0.0.1:50054,127.0.0.1:50064"
    assert grpc_target("[::1]:1,[::1]:2") == "ipv6:[::1]:1,[::1]:2"


@pytest.mark.parametrize("address", ["ranker-a:1,ranker-b:2", "127.0.0.1:1,[::1]:2"])
def test_a_list_with_host_names_or_mixed_families_is_refused(address):
    with pytest.raises(ValueError, match="list of instances"):
        grpc_target(address)


def test_several_instances_are_balanced_round_robin():
    assert balanced("127.0.0.1:1,127.0.0.1:2") and balanced("dns:///ranker:1")
    assert not balanced("127.0.0.1:1")
    assert ("grpc.lb_policy_name", "round_robin") in _options("127.0.0.1:1,127.0.0.1:2", None)
    assert all(name != "grpc.lb_policy_name" for name, _ in _options("127.0.0.1:1", None))


def test_retry_config_retries_unavailable_once_more():
    config = json.loads(retry_service_config())
    policy = config["methodConfig"][0]["retryPolicy"]
    assert policy["maxAttempts"] == 2 and policy["retryableStatusCodes"] == ["UNAVAILABLE"]


def test_stack_with_two_ranking_instances(tmp_path: Path):
    cfg = StackConfig.default(tmp_path, "127.0.0.1:9092", ranking_instances=2)
    assert cfg.instances("ranking") == ["ranking", "ranking-2"]
    assert cfg.env()["RECSYS_RANKING_ADDR"] == "127.0.0.1:50054,127.0.0.1:50064"
    assert "RECSYS_RANKING-2_PORT" not in cfg.env()
    specs = {spec.name: spec for spec in service_specs(cfg)}
    first, second = specs["ranking"], specs["ranking-2"]
    assert second.argv == first.argv
    assert first.env["RECSYS_RANKING_PORT"] == "50054" and second.env["RECSYS_RANKING_PORT"] == "50064"
    assert "RECSYS_RAY_TEMP_DIR" not in first.env
    assert second.env["RECSYS_RAY_TEMP_DIR"] == str(tmp_path / "ray-2")  # never the first instance's Ray


def test_stack_default_is_one_instance_per_service(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("RECSYS_RANKING_INSTANCES", raising=False)
    cfg = StackConfig.default(tmp_path, "127.0.0.1:9092", fixed_ports=False)
    assert cfg.instances("ranking") == ["ranking"]
    assert "," not in cfg.env()["RECSYS_RANKING_ADDR"]
    assert [s.name for s in service_specs(cfg)].count("ranking") == 1


def test_local_stack_caps_the_gateways_full_path_unless_configured(tmp_path: Path, monkeypatch):
    from recsys.stack.local import local_full_path_limit

    monkeypatch.delenv("RECSYS_GATEWAY_MAX_FULL_PATH", raising=False)
    cfg = StackConfig.default(tmp_path, "127.0.0.1:9092", fixed_ports=False)
    assert cfg.env()["RECSYS_GATEWAY_MAX_FULL_PATH"] == str(local_full_path_limit()) and local_full_path_limit(2) == 8
    monkeypatch.setenv("RECSYS_GATEWAY_MAX_FULL_PATH", "7")  # the operator's value reaches the gateway as it is
    assert "RECSYS_GATEWAY_MAX_FULL_PATH" not in cfg.env()
