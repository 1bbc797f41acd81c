"""The chart's observability objects, offline: the Grafana dashboards' ConfigMaps and the PrometheusRule render
by default only where the cluster serves monitoring.coreos.com/v1/PrometheusRule (`helm template --api-versions`
stands for the cluster), `true` / `false` force them; the ConfigMaps carry the Grafana sidecar's label and the
dashboard files; the PrometheusRule is valid against the Prometheus Operator's CRD (vendored, 0.93.0, in
deploy/k8s-local/crds/prometheus-operator/, which `make test-k8s` also applies) and the ConfigMaps are what the
API server takes.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))  # helm_support sits beside this file (importlib import mode)
from helm_support import (  # noqa: E402
    HELM_DIR,
    K8S_VERSION,
    UMBRELLA,
    VENDORED_CRDS,
    Helm,
    HelmError,
    _strict,
    by_kind,
    offline_helm,
)

RULE_API = "monitoring.coreos.com/v1/PrometheusRule"
CRD = VENDORED_CRDS / "prometheus-operator" / "monitoring.coreos.com_prometheusrules.yaml"
DASHBOARD_FILES = sorted((HELM_DIR / UMBRELLA / "dashboards").glob("*.json"))
DASH = "observability.grafanaDashboards.enabled"
RULE = "observability.prometheusRule.enabled"


@pytest.fixture(scope="module")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return offline_helm(tmp_path_factory.mktemp("helm"))


def render(helm: Helm, *args: str, only: bool = True) -> list[dict]:
    """helm template of the umbrella (namespace recsys); args: --api-versions / --set ...; only: just
    templates/observability.yaml (helm fails when it renders nothing: that is an empty list here)."""
    show = ["--show-only", "templates/observability.yaml"] if only else []
    cmd = ["template", "rs", str(helm.chart(UMBRELLA)), "--namespace", "recsys", "--kube-version", K8S_VERSION]
    try:
        out = helm.run(*cmd, *show, *args).stdout
    except HelmError as err:
        if only and "could not find template" in str(err):
            return []
        raise
    return [doc for doc in yaml.safe_load_all(out) if doc]


def dashboards(manifests: list[dict]) -> list[dict]:
    return [m for m in by_kind(manifests, "ConfigMap") if m["metadata"]["name"].startswith("rs-dashboard-")]


@pytest.mark.parametrize(
    ("args", "want_dashboards", "want_rule"),
    [
        ([], False, False),  # auto, no Prometheus Operator
        (["--api-versions", "monitoring.coreos.com/v1"], False, False),  # only the group (e.g. ServiceMonitor CRDs)
        (["--api-versions", RULE_API], True, True),  # auto, the Prometheus Operator's PrometheusRule served
        (["--api-versions", RULE_API, "--set", f"{DASH}=false,{RULE}=false"], False, False),
        (["--set", f"{DASH}=true,{RULE}=true"], True, True),
        (["--set", f"{DASH}=true"], True, False),
        (["--api-versions", RULE_API, "--set", f"{DASH}=false"], False, True),
    ],
    ids=["auto-plain", "auto-group-only", "auto-operator", "false", "true", "dashboards-only", "rule-only"],
)
def test_render_rule(helm, args, want_dashboards, want_rule):
    manifests = render(helm, *args)
    assert len(dashboards(manifests)) == (len(DASHBOARD_FILES) if want_dashboards else 0)
    assert len(by_kind(manifests, "PrometheusRule")) == (1 if want_rule else 0)


def test_everything_validates_with_the_operator(helm):
    manifests = render(helm, "--api-versions", RULE_API, "--set", "global.serviceMonitor.enabled=true", only=False)
    crd = yaml.safe_load(CRD.read_text())
    schema = _strict(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    schema["properties"]["metadata"] = {"type": "object"}
    (rule,) = by_kind(manifests, "PrometheusRule")
    assert list(jsonschema.Draft202012Validator(schema).iter_errors(rule)) == []
    broken = {**rule, "spec": {"groups": [{"name": "x", "rules": [{"alert": "A", "expr": "up", "for": "5 min"}]}]}}
    assert list(jsonschema.Draft202012Validator(schema).iter_errors(broken)), "the CRD schema rejects a bad `for`"
    for configmap in dashboards(manifests):  # what the API server checks of a ConfigMap (1 MiB at most)
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", configmap["metadata"]["name"])
        assert all(re.fullmatch(r"[-._a-zA-Z0-9]+", key) for key in configmap["data"])
        assert len(json.dumps(configmap["data"]).encode()) < 1 << 20
    assert rule["metadata"]["labels"]["app.kubernetes.io/part-of"] == "recsys"


def test_dashboard_configmaps_carry_the_files_and_the_sidecar_label(helm):
    manifests = render(
        helm, "--set", f"{DASH}=true", "--set", "observability.grafanaDashboards.label=my_dashboards",
        "--set", "observability.grafanaDashboards.labelValue=yes",
        "--set", "observability.grafanaDashboards.annotations.grafana_folder=recsys",
    )
    by_file = {}
    for configmap in dashboards(manifests):
        assert configmap["metadata"]["labels"]["my_dashboards"] == "yes"
        assert "grafana_dashboard" not in configmap["metadata"]["labels"]
        assert configmap["metadata"]["annotations"] == {"grafana_folder": "recsys"}
        ((key, text),) = configmap["data"].items()
        by_file[key] = json.loads(text)
    assert by_file == {f"recsys-{p.stem}.json": json.loads(p.read_text()) for p in DASHBOARD_FILES}
    default = dashboards(render(helm, "--set", f"{DASH}=true"))
    assert all(c["metadata"]["labels"]["grafana_dashboard"] == "1" for c in default)


def rules(manifests: list[dict]) -> dict[str, dict]:
    (rule,) = by_kind(manifests, "PrometheusRule")
    return {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}


def test_target_alerts_follow_the_scraped_components(helm):
    on = ["--set", f"{RULE}=true"]
    # No ServiceMonitors: the jobs are unknown, no target alerts.
    assert not {"RecsysTargetDown", "RecsysTargetMissing"} & rules(render(helm, *on)).keys()
    scraped = rules(render(helm, *on, "--set", "global.serviceMonitor.enabled=true,eventlog.enabled=false",
                           "--set", "ranking.enabled=false,global.addresses.ranking=ranker.ml:50054"))
    assert 'job=~"gateway|features|candidates|monitoring"' in scraped["RecsysTargetDown"]["expr"]
    assert scraped["RecsysTargetMissing"]["expr"].count("absent(") == 4
    mine = rules(render(helm, *on, "--set", "observability.prometheusRule.alerts.targetDown.jobs={recsys-gw}",
                        "--set", 'observability.prometheusRule.matchers=cluster="eu1"'))
    assert mine["RecsysTargetDown"]["expr"].strip() == 'up{job=~"recsys-gw", cluster="eu1"} == 0'
    assert 'namespace="recsys"' not in mine["RecsysHighP99Latency"]["expr"]


def test_rule_object_labels_and_strict_values(helm):
    manifests = render(helm, "--set", f"{RULE}=true", "--set", "observability.prometheusRule.labels.release=kps")
    (rule,) = by_kind(manifests, "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kps"
    off = ",".join(f"observability.prometheusRule.alerts.{a}.enabled=false" for a in (
        "highP99Latency", "degradedShareHigh", "errorRateHigh", "consumerLagHigh", "dataDrift", "ctrDrop"))
    assert by_kind(render(helm, "--set", f"{RULE}=true", "--set", off), "PrometheusRule") == []  # no empty group
    with pytest.raises(HelmError, match="observability.prometheusRule.enabled"):
        render(helm, "--set", f"{RULE}=maybe")
    with pytest.raises(HelmError, match="unexpected|Additional property"):
        render(helm, "--set", "observability.prometheusRule.alerts.highP99Latency.treshold=1")
