"""The canary: its registry state and rule (`recsys.model.rollout`), the gateway's overlay on the experiment, the
decision against a monitoring service (`recsys.lifecycle.canary`) and the lifecycle loop's scheduling."""

from __future__ import annotations

import json
import math
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from recsys.cli import main
from recsys.gateway.experiments import Experiment
from recsys.gateway.rollout import LIFECYCLE, CanaryExperiment, RolloutFollower
from recsys.lifecycle import canary as lifecycle_canary
from recsys.lifecycle.loop import REQUEST, LifecycleLoop, request_retrain
from recsys.lifecycle.settings import LifecycleSettings
from recsys.model import rollout
from recsys.model.registry import Registry, RegistryError
from recsys.v1 import monitoring_pb2, monitoring_pb2_grpc

POLICY = rollout.CanaryPolicy(min_impressions=1000, tolerance=0.02, max_age_s=3600)


def _registry(tmp_path: Path, versions: int = 2) -> Registry:
    reg = Registry(tmp_path / "models")
    for n in range(versions):
        def write(folder: Path, n=n) -> list[str]:
            (folder / "marker").write_text(str(n))
            return ["marker"]
        reg.create(write, {"metrics": {}}, publish=n == 0)
    return reg


def test_start_promote_and_roll_back_are_registry_events(tmp_path: Path):
    reg = _registry(tmp_path, versions=3)
    with pytest.raises(ValueError):
        rollout.start(reg, "v0002", 1.0)
    started = rollout.start(reg, "v0002", 0.25, reason="gate passed")
    assert rollout.current(reg) == started and started.champion == "v0001" and started.variant == "canary-v0002"
    with pytest.raises(RegistryError, match="already running"):
        rollout.start(reg, "v0003", 0.25)
    assert rollout.finish(reg, rollout.Verdict(rollout.PROMOTE, "lift ok")) == "v0002"
    assert reg.latest() == "v0002" and rollout.current(reg) is None
    rollout.start(reg, "v0003", 0.5)
    assert rollout.finish(reg, rollout.Verdict(rollout.ROLL_BACK, "worse")) == "v0002"
    kinds = [e["kind"] for e in reg.history()]
    assert kinds == ["latest", "canary_started", "latest", "canary_promoted", "canary_started", "canary_rolled_back"]
    assert reg.history("canary_rolled_back")[0]["reason"] == "worse"
    with pytest.raises(RegistryError, match="no canary"):
        rollout.finish(reg, rollout.Verdict(rollout.PROMOTE, "x"))


@pytest.mark.parametrize(
    "impressions, low, high, age, action",
    [
        (5000, 0.01, 0.2, 10, rollout.PROMOTE),       # enough impressions, interval clears -tolerance
        (5000, -0.015, 0.1, 10, rollout.PROMOTE),     # within tolerance below zero
        (500, 0.05, 0.3, 10, rollout.WAIT),           # good so far, too few impressions
        (5000, -0.05, 0.1, 10, rollout.WAIT),         # undecided
        (300, -0.4, -0.1, 10, rollout.ROLL_BACK),     # clearly worse: at once, whatever the count
        (5000, -0.05, 0.1, 4000, rollout.ROLL_BACK),  # undecided past the time limit
    ],
)
def test_decide(impressions: int, low: float, high: float, age: float, action: str):
    canary = rollout.Rollout("v1", "v2", 0.2, started_at=1000.0)
    assert rollout.decide(canary, impressions, low, high, POLICY, now=1000.0 + age).action == action


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_canary_overlay_takes_its_share_of_users_and_gives_them_back(tmp_path: Path):
    reg = _registry(tmp_path)
    clock = _Clock()
    experiment = CanaryExperiment(Experiment.from_json(""), RolloutFollower(str(reg.root), 2.0, clock))
    users = [f"u{i}" for i in range(4000)]
    before = {u: experiment.assign(u) for u in users}
    assert not any(v.name.startswith("canary") for v in before.values())
    rollout.start(reg, "v0002", 0.25)
    assert experiment.assign("u1") == before["u1"]  # not re-read before refresh_s
    clock.t = 3.0
    during = {u: experiment.assign(u) for u in users}
    canary = [u for u, v in during.items() if v.name == "canary-v0002"]
    assert abs(len(canary) / len(users) - 0.25) < 0.03
    variant = during[canary[0]]
    assert variant.model_version == "v0002" and variant.ranker == experiment.control.ranker
    assert all(during[u] == before[u] for u in users if u not in canary)  # the others keep their variant
    again = {u: experiment.assign(u) for u in users}
    assert {u for u, v in again.items() if v.name.startswith("canary")} == set(canary)  # a user keeps their group
    assert LIFECYCLE.labels("canary_started")._value.get() == 1
    rollout.finish(reg, rollout.Verdict(rollout.ROLL_BACK, "worse"))
    clock.t = 6.0
    assert {u: experiment.assign(u) for u in users} == before


class _Monitoring(monitoring_pb2_grpc.MonitoringServiceServicer):
    def __init__(self) -> None:
        self.variants: list[monitoring_pb2.VariantMetrics] = []
        self.windows: list[int] = []

    def GetOnlineMetrics(self, request, context):
        self.windows.append(request.window_seconds)
        return monitoring_pb2.OnlineMetrics(window_seconds=request.window_seconds, variants=self.variants)


@pytest.fixture()
def monitoring():
    servicer = _Monitoring()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    monitoring_pb2_grpc.add_MonitoringServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, f"127.0.0.1:{port}"
    server.stop(0)


def _variant(name: str, impressions: int, ctr: float, low: float = 0.0, high: float = 0.0):
    return monitoring_pb2.VariantMetrics(variant=name, impressions=impressions, clicks=int(impressions * ctr),
                                         ctr=ctr, ctr_lift_ci_low=low, ctr_lift_ci_high=high)


def test_decision_against_the_monitoring_service_promotes_or_rolls_back(tmp_path: Path, monitoring):
    servicer, address = monitoring
    reg = _registry(tmp_path, versions=3)
    assert lifecycle_canary.check(reg, address, POLICY) is None  # no canary: nothing asked
    rollout.start(reg, "v0002", 0.2)
    result = lifecycle_canary.check(reg, address, POLICY)
    assert result.verdict.action == rollout.WAIT and result.figures.impressions == 0
    assert math.isinf(result.figures.lift_low) and servicer.windows[-1] == 60
    servicer.variants = [_variant("control", 20000, 0.10), _variant("canary-v0002", 4000, 0.11, 0.01, 0.2)]
    result = lifecycle_canary.check(reg, address, POLICY)
    assert result.verdict.action == rollout.PROMOTE and reg.latest() == "v0002"
    promoted = reg.history("canary_promoted")[0]
    assert promoted["figures"]["impressions"] == 4000 and promoted["figures"]["control_ctr"] == pytest.approx(0.1)
    rollout.start(reg, "v0003", 0.2)
    servicer.variants = [_variant("control", 20000, 0.10), _variant("canary-v0003", 800, 0.05, -0.6, -0.3)]
    assert lifecycle_canary.check(reg, address, POLICY, act=False).verdict.action == rollout.ROLL_BACK
    assert rollout.current(reg) is not None  # a dry run changes nothing
    assert lifecycle_canary.check(reg, address, POLICY).verdict.action == rollout.ROLL_BACK
    assert reg.latest() == "v0002" and rollout.current(reg) is None


def _loop(reg: Registry, address: str, runs: list[list[str]], interval_s: float = 0.0) -> LifecycleLoop:
    settings = LifecycleSettings(
        monitoring_addr=address, models_dir=reg.root, var_dir=reg.root.parent, policy=POLICY, check_s=1.0,
        retrain_interval_s=interval_s, retrain_base=reg.root.parent / "data",
    )

    def run(argv: list[str]) -> int:
        runs.append(argv)
        if argv[0] == "retrain":  # what `recsys retrain` would do when its challenger passes the gate
            rollout.start(reg, "v0002", 0.2)
        return 0

    return LifecycleLoop(settings, run, log_uri="file:///log")


def test_loop_retrains_on_request_never_during_a_canary_and_follows_a_promotion(tmp_path: Path, monitoring):
    servicer, address = monitoring
    reg = _registry(tmp_path)
    runs: list[list[str]] = []
    loop = _loop(reg, address, runs)
    loop.tick()
    assert runs == []  # nothing due, nothing requested
    assert main(["retrain", "--request", "--models", str(reg.root), "--reason", "drift"]) == 0  # on demand
    loop.tick()
    assert runs[0][:1] == ["retrain"] and "--log" in runs[0] and not (reg.root / REQUEST).exists()
    assert reg.history("retrain_started")[0]["reason"] == "drift"
    request_retrain(reg.root, "again")
    loop.tick()  # the canary runs: it is decided first, no second retrain
    assert len(runs) == 1 and (reg.root / REQUEST).exists()
    servicer.variants = [_variant("control", 20000, 0.10), _variant("canary-v0002", 4000, 0.11, 0.01, 0.2)]
    loop.tick()
    assert reg.latest() == "v0002" and runs[1:] == [["materialize"], ["index", "--quiet"]]
    assert json.loads((reg.root / REQUEST).read_text())["reason"] == "again"


def test_scheduled_retrains(tmp_path: Path, monitoring):
    _servicer, address = monitoring
    reg = _registry(tmp_path)
    runs: list[list[str]] = []
    loop = _loop(reg, address, runs, interval_s=0.01)
    loop._last_retrain -= 1.0
    loop.tick()
    assert runs and runs[0][0] == "retrain" and reg.history("retrain_started")[0]["reason"] == "schedule"
