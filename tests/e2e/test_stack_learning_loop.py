"""The loop on the whole stack: traffic from the simulator is logged by the event log writer, `recsys retrain`
builds a dataset from the log, a deliberately worse challenger (shuffled labels) is refused by the gate, a good
one passes, goes to canary and is promoted by the monitoring service's figures; a challenger that does worse
online is rolled back.

Runs after tests/e2e/test_stack.py on the same stack (the package-scoped fixture), since it moves `latest`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from recsys.eventlog import layout
from recsys.lifecycle import canary
from recsys.model import rollout
from recsys.model.registry import Registry
from recsys.stack.simulator import simulate
from recsys.training.data.loaders import load_dataset

#: Small enough to decide within one short burst of traffic (the rule is the production one).
POLICY = rollout.CanaryPolicy(min_impressions=800, tolerance=0.5, max_age_s=600)
#: The deliberately broken challenger is trained small (the good one like the champion, at the default config).
SMALL_CONFIG = {"two_tower": {"epochs": 3}, "dcn": {"epochs": 2}, "lgbm": {"n_estimators": 60}}


def _retrain(stack, tmp_path, *extra: str) -> dict:
    """`recsys retrain` on the stack's dataset and log; the most recent 3% of interactions (logged clicks) are
    the window both models are measured on, the log's earlier clicks are in the challenger's training data."""
    argv = [sys.executable, "-m", "recsys.cli", "retrain", "--base", str(stack.data_dir),
            "--log", str(stack.cfg.var_dir / "eventlog"), "--models", str(stack.cfg.models_dir),
            "--window-frac", "0.03", "--canary-share", "0.5", "--tolerance", "0.25", "--quiet", *extra]
    done = subprocess.run(argv, env={**os.environ, **stack.cfg.env()}, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _traffic(stack, seconds: float) -> None:
    dataset = load_dataset(stack.data_dir)
    users = list(dataset.interactions["user_id"].astype(str).unique())
    stats = simulate(stack.gateway, dataset.meta.get("truth"), users, seconds=seconds, concurrency=4, seed=11,
                     click_scale=2.0)
    assert stats.requests > 0 and stats.errors == 0, stats.summary()


def _logged(stack) -> int:
    return layout.read_table(str(stack.cfg.var_dir / "eventlog"), layout.EVENTS).num_rows


def _decide(stack, registry: Registry, timeout_s: float) -> canary.CanaryCheck:
    """Traffic until the canary is decided (promote or roll back), as `recsys canary decide` would."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        _traffic(stack, 15)
        time.sleep(3)  # the last clicks reach monitoring
        result = canary.check(registry, stack.cfg.address("monitoring"), POLICY)
        if result.verdict.action != rollout.WAIT:
            return result
    raise AssertionError(f"canary undecided after {timeout_s}s: {result.verdict.reason}")


def test_traffic_is_logged_and_the_gate_refuses_a_worse_challenger(stack, tmp_path):
    registry = Registry(stack.cfg.models_dir)
    champion = registry.latest()
    _traffic(stack, 20)
    deadline = time.monotonic() + 30
    while _logged(stack) == 0 and time.monotonic() < deadline:
        time.sleep(1)
    assert _logged(stack) > 0, "the event log writer wrote no click"
    config = tmp_path / "small.json"  # the broken challenger need not be trained at full size
    config.write_text(json.dumps(SMALL_CONFIG))
    refused = _retrain(stack, tmp_path, "--shuffle-labels", "--config", str(config))
    assert refused["decision"] == "refused", refused
    assert registry.latest() == champion and rollout.current(registry) is None
    gate = registry.history("gate")[-1]
    assert gate["version"] == refused["version"] and gate["decision"] == "refused" and gate["reason"]
    stack.refused = refused["version"]


def test_a_good_challenger_passes_goes_to_canary_and_is_promoted(stack, tmp_path):
    registry = Registry(stack.cfg.models_dir)
    champion = registry.latest()
    passed = _retrain(stack, tmp_path)
    assert passed["decision"] == "passed", passed
    started = rollout.current(registry)
    assert started is not None and started.challenger == passed["version"] and registry.latest() == champion
    result = _decide(stack, registry, timeout_s=180)
    assert result.verdict.action == rollout.PROMOTE, result
    assert registry.latest() == passed["version"]
    assert [e["kind"] for e in registry.history()][-2:] == ["latest", "canary_promoted"]


def test_a_challenger_worse_online_is_rolled_back(stack):
    registry = Registry(stack.cfg.models_dir)
    champion = registry.latest()
    worse = getattr(stack, "refused", None)
    if worse is None:
        pytest.skip("needs the refused challenger of the first test")
    rollout.start(registry, worse, 0.5, reason="online check of a refused challenger")
    result = _decide(stack, registry, timeout_s=180)
    assert result.verdict.action == rollout.ROLL_BACK, result
    assert registry.latest() == champion and rollout.current(registry) is None
    assert registry.history("canary_rolled_back")[-1]["version"] == worse
