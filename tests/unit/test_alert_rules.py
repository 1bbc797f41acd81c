"""The chart's Prometheus alert rules, run by Prometheus' own rule engine: `promtool check rules` on the rendered
PrometheusRule's groups, and `promtool test rules` with tests/unit/alert_rules/alerts_test.yaml (series in,
alerts out), where every alert fires on series that should fire it and stays silent on series that should not.

promtool is Debian's `prometheus` package (/usr/bin/promtool; `make setup` installs it). It is required: the
tests fail, not skip, without it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))  # helm_support sits beside this file (importlib import mode)
from helm_support import K8S_VERSION, UMBRELLA, Helm, offline_helm  # noqa: E402

TESTS = Path(__file__).parent / "alert_rules" / "alerts_test.yaml"


def promtool() -> str:
    found = shutil.which("promtool") or ("/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None)
    if not found:
        pytest.fail("promtool not found: install Debian's `prometheus` package (apt-get install prometheus)")
    return found


@pytest.fixture(scope="module")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return offline_helm(tmp_path_factory.mktemp("helm"))


def rule_groups(helm: Helm, *args: str) -> list[dict]:
    """spec.groups of the PrometheusRule rendered in namespace recsys with the chart's ServiceMonitors on; args:
    more helm arguments (--set ...)."""
    out = helm.run(
        "template", "rs", str(helm.chart(UMBRELLA)), "--namespace", "recsys", "--kube-version", K8S_VERSION,
        "--api-versions", "monitoring.coreos.com/v1/PrometheusRule", "--show-only", "templates/observability.yaml",
        "--set", "global.serviceMonitor.enabled=true", *args,
    ).stdout
    (rule,) = [d for d in yaml.safe_load_all(out) if d and d["kind"] == "PrometheusRule"]
    return rule["spec"]["groups"]


@pytest.fixture(scope="module")
def groups(helm: Helm) -> list[dict]:
    """With the default values."""
    return rule_groups(helm)


def run_unit_tests(groups: list[dict], folder: Path) -> subprocess.CompletedProcess[str]:
    """promtool test rules with alerts_test.yaml against `groups`, annotations left out (the tests compare labels)."""
    bare = [{**g, "rules": [{k: v for k, v in r.items() if k != "annotations"} for r in g["rules"]]} for g in groups]
    (folder / "rules.yaml").write_text(yaml.safe_dump({"groups": bare}, sort_keys=False))
    shutil.copy(TESTS, folder / TESTS.name)
    return subprocess.run([promtool(), "test", "rules", TESTS.name], cwd=folder, capture_output=True, text=True,
                          timeout=60)


def alert_names(groups: list[dict]) -> set[str]:
    return {r["alert"] for g in groups for r in g["rules"] if "alert" in r}


def test_rules_pass_promtool_check(groups, tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    proc = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {sum(len(g['rules']) for g in groups)} rules found" in proc.stdout


def test_every_alert_has_a_firing_and_a_silent_case(groups):
    expected = {"RecsysHighP99Latency", "RecsysDegradedShareHigh", "RecsysErrorRateHigh", "RecsysConsumerLagHigh",
                "RecsysDataDrift", "RecsysCtrDrop", "RecsysTargetDown", "RecsysTargetMissing"}
    assert alert_names(groups) == expected
    cases = [case for test in yaml.safe_load(TESTS.read_text())["tests"] for case in test["alert_rule_test"]]
    fires = {c["alertname"] for c in cases if c.get("exp_alerts")}
    silent = {c["alertname"] for c in cases if not c.get("exp_alerts")}
    assert fires == expected and silent == expected


def test_alerts_fire_when_they_should_and_only_then(groups, tmp_path):
    proc = run_unit_tests(groups, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_the_unit_tests_notice_a_wrong_threshold(helm, tmp_path):
    """The same tests against rules with other thresholds fail: they test the expressions, not just run."""
    groups = rule_groups(
        helm,
        "--set-json", "observability.prometheusRule.alerts.highP99Latency.threshold=0.5",
        "--set", "observability.prometheusRule.alerts.consumerLagHigh.threshold=100000",
    )
    proc = run_unit_tests(groups, tmp_path)
    assert proc.returncode != 0
    assert "RecsysHighP99Latency" in proc.stderr + proc.stdout and "RecsysConsumerLagHigh" in proc.stderr + proc.stdout


def test_labels_and_disabled_alerts(helm):
    groups = rule_groups(
        helm,
        "--set", "observability.prometheusRule.ruleLabels.team=recsys",
        "--set", "observability.prometheusRule.alerts.ctrDrop.enabled=false",
        "--set", "observability.prometheusRule.alerts.dataDrift.severity=info",
    )
    rules = {r["alert"]: r for g in groups for r in g["rules"]}
    assert "RecsysCtrDrop" not in rules
    assert rules["RecsysDataDrift"]["labels"] == {"severity": "info", "team": "recsys"}
    assert all(r["labels"]["team"] == "recsys" for r in rules.values())
