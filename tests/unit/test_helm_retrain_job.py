"""Drift starts a retrain, in the chart, offline: with `monitoring.retrainOnDrift` (on by default) and the
retrain CronJob rendered, the monitoring pods hold their ServiceAccount token, a Role lets that account do
exactly what recsys.monitoring.kube_job does (get the retrain CronJob; create, get and list Jobs) and the
trigger's environment names the CronJob. Off, or without the CronJob: the trigger is off and no Role exists.
Renders with helm and validates against the Kubernetes 1.31 schemas (helm_support); the same RBAC on a real API
server: tests/k8s/test_retrain_job.py."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))  # helm_support sits beside this file (importlib import mode)
from helm_support import (  # noqa: E402
    HELM_DIR,
    UMBRELLA,
    Helm,
    HelmError,
    Manifest,
    by_kind,
    named,
    offline_helm,
    ours,
    validation_errors,
)

MONITORING_VALUES = yaml.safe_load((HELM_DIR / UMBRELLA / "charts" / "monitoring" / "values.yaml").read_text())
PRODUCTION = HELM_DIR / UMBRELLA / "values-production.yaml"
NAMESPACE = "recsys"  # helm_support renders into it
CRONJOB = "rs-jobs-retrain"
ROLE = "rs-monitoring-retrain"
TRIGGER_VARIABLES = ("RECSYS_MONITORING_RETRAIN_TRIGGER", "RECSYS_MONITORING_RETRAIN_CRONJOB",
                     "RECSYS_MONITORING_RETRAIN_MIN_INTERVAL_S", "RECSYS_MONITORING_NAMESPACE")
# The rules, exactly: nothing but what the trigger does.
RULES = [
    {"apiGroups": ["batch"], "resources": ["cronjobs"], "resourceNames": [CRONJOB], "verbs": ["get"]},
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create"]},
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get", "list"]},
]
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "production": {"values": [PRODUCTION]},
    "off": {"sets": ["monitoring.retrainOnDrift.enabled=false"]},
    "no-cronjob": {"sets": ["cronJobs.retrain.enabled=false"]},
    "interval": {"sets": ["monitoring.retrainOnDrift.minIntervalSeconds=600"]},
    "named-account": {"sets": ["monitoring.serviceAccount.create=false", "monitoring.serviceAccount.name=mon-sa"]},
    "release": {"release": "prod"},
}


@pytest.fixture(scope="module")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    root = tmp_path_factory.mktemp("helm-retrain-job")
    return offline_helm(root)


_renders: dict[str, list[Manifest]] = {}


@pytest.fixture(scope="module")
def render(helm):
    def _render(variant: str) -> list[Manifest]:
        if variant not in _renders:
            _renders[variant] = helm.template(UMBRELLA, **VARIANTS[variant])
        return _renders[variant]

    return _render


def monitoring_pod(manifests: list[Manifest], release: str = "rs") -> dict[str, Any]:
    return named(manifests, "Deployment")[f"{release}-monitoring"]["spec"]["template"]["spec"]


def environment(manifests: list[Manifest], release: str = "rs") -> dict[str, Any]:
    """What the monitoring container sees: its envFrom ConfigMaps in order (a later one wins), then env entries
    (a value, or the valueFrom reference)."""
    (container,) = monitoring_pod(manifests, release)["containers"]
    config_maps = named(manifests, "ConfigMap")
    env: dict[str, Any] = {}
    for source in container["envFrom"]:
        env.update(config_maps[source["configMapRef"]["name"]]["data"])
    for entry in container.get("env", []):
        env[entry["name"]] = entry.get("value", entry.get("valueFrom"))
    return env


def rbac(manifests: list[Manifest]) -> list[Manifest]:
    return [m for m in manifests if m["kind"] in ("Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding")]


# --- rendered and valid ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_renders_validate_against_the_schemas(render, variant):
    manifests = render(variant)
    assert [error for m in manifests for error in validation_errors(m)] == []


@pytest.mark.parametrize("variant", ["default", "production"])
def test_on_by_default_with_exactly_the_triggers_rules(render, variant):
    assert MONITORING_VALUES["retrainOnDrift"] == {"enabled": True, "minIntervalSeconds": 1800}
    manifests = render(variant)
    # One Role and its binding, nothing cluster-wide.
    assert [(m["kind"], m["metadata"]["name"]) for m in rbac(ours(manifests))] == [("Role", ROLE),
                                                                                 ("RoleBinding", ROLE)]
    role = named(manifests, "Role")[ROLE]
    assert role["rules"] == RULES
    text = yaml.safe_dump(role["rules"])
    assert "*" not in text and "nonResourceURLs" not in text and "pods" not in text
    # The CronJob it may read is the rendered retrain CronJob: `recsys retrain` first.
    cron = named(manifests, "CronJob")[CRONJOB]
    first = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    first = [*(first.get("initContainers") or []), *first["containers"]][0]
    assert first["args"][0] == "retrain"


@pytest.mark.parametrize("variant", ["default", "production"])
def test_the_binding_names_the_monitoring_account_and_the_deployment_uses_it_with_its_token(render, variant):
    manifests = render(variant)
    binding = named(manifests, "RoleBinding")[ROLE]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": ROLE}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "rs-monitoring", "namespace": NAMESPACE}]
    pod = monitoring_pod(manifests)
    assert pod["serviceAccountName"] == "rs-monitoring"
    assert pod["automountServiceAccountToken"] is True
    account = named(manifests, "ServiceAccount")["rs-monitoring"]
    assert account["metadata"]["labels"]["app.kubernetes.io/component"] == "monitoring"
    # No other pod of ours holds a token, and no other account is bound.
    for deployment in by_kind(ours(manifests), "Deployment"):
        if deployment["metadata"]["name"] != "rs-monitoring":
            assert deployment["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


@pytest.mark.parametrize("variant", ["default", "production"])
def test_the_trigger_environment_names_the_cron_job_and_the_pods_namespace(render, variant):
    manifests = render(variant)
    env = environment(manifests)
    assert env["RECSYS_MONITORING_RETRAIN_TRIGGER"] == "kubernetes"
    assert env["RECSYS_MONITORING_RETRAIN_CRONJOB"] == CRONJOB
    assert env["RECSYS_MONITORING_RETRAIN_MIN_INTERVAL_S"] == "1800"
    assert env["RECSYS_MONITORING_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    (container,) = monitoring_pod(manifests)["containers"]
    # The trigger's ConfigMap first: the service's own (monitoring.config) overrides it.
    assert container["envFrom"] == [{"configMapRef": {"name": ROLE}}, {"configMapRef": {"name": "rs-monitoring-env"}}]


def test_the_interval_follows_the_value_and_restarts_the_pods(render):
    assert environment(render("interval"))["RECSYS_MONITORING_RETRAIN_MIN_INTERVAL_S"] == "600"
    annotations = [named(render(v), "Deployment")["rs-monitoring"]["spec"]["template"]["metadata"]["annotations"]
                   for v in ("default", "interval")]
    assert annotations[0]["checksum/retrain"] != annotations[1]["checksum/retrain"]


def test_names_follow_the_release(render):
    manifests = render("release")
    role = named(manifests, "Role")["prod-monitoring-retrain"]
    assert role["rules"][0]["resourceNames"] == ["prod-jobs-retrain"]
    assert "prod-jobs-retrain" in named(manifests, "CronJob")
    subjects = named(manifests, "RoleBinding")["prod-monitoring-retrain"]["subjects"]
    assert subjects == [{"kind": "ServiceAccount", "name": "prod-monitoring", "namespace": NAMESPACE}]
    assert environment(manifests, "prod")["RECSYS_MONITORING_RETRAIN_CRONJOB"] == "prod-jobs-retrain"


def test_an_account_the_chart_does_not_create_is_bound_by_its_name(render):
    manifests = render("named-account")
    assert named(manifests, "RoleBinding")[ROLE]["subjects"][0]["name"] == "mon-sa"
    assert monitoring_pod(manifests)["serviceAccountName"] == "mon-sa"
    assert "rs-monitoring" not in named(manifests, "ServiceAccount")


def test_the_namespaces_default_account_is_never_bound(helm):
    with pytest.raises(HelmError, match="monitoring.retrainOnDrift binds a Role .* default one"):
        helm.template(UMBRELLA, sets=["monitoring.serviceAccount.create=false"])
    # Without the trigger the default account is fine.
    manifests = helm.template(UMBRELLA, sets=["monitoring.serviceAccount.create=false",
                                              "monitoring.retrainOnDrift.enabled=false"])
    assert monitoring_pod(manifests)["serviceAccountName"] == "default"
    assert rbac(ours(manifests)) == []


# --- off ------------------------------------------------------------------------------------------------------


def test_off_when_the_value_is_off(render):
    manifests = render("off")
    assert rbac(ours(manifests)) == []
    env = environment(manifests)
    assert env["RECSYS_MONITORING_RETRAIN_TRIGGER"] == "off"
    assert env["RECSYS_MONITORING_RETRAIN_CRONJOB"] == ""
    assert "RECSYS_MONITORING_NAMESPACE" not in env
    assert monitoring_pod(manifests)["automountServiceAccountToken"] is False
    assert CRONJOB in named(manifests, "CronJob")  # the schedule still retrains


def test_off_when_the_retrain_cron_job_is_off(render):
    manifests = render("no-cronjob")
    assert CRONJOB not in named(manifests, "CronJob")
    assert rbac(ours(manifests)) == []
    env = environment(manifests)
    assert env["RECSYS_MONITORING_RETRAIN_TRIGGER"] == "off"
    assert env["RECSYS_MONITORING_RETRAIN_CRONJOB"] == ""
    # The subchart cannot see cronJobs: its pods still mount a token, which no RoleBinding grants anything
    # (monitoring.retrainOnDrift.enabled=false drops it too; helm/README.md says so).
    assert monitoring_pod(manifests)["automountServiceAccountToken"] is True


def test_nothing_without_the_monitoring_service(helm):
    manifests = helm.template(UMBRELLA, sets=["monitoring.enabled=false", "cronJobs.canary.enabled=false"])
    assert rbac(ours(manifests)) == []
    assert ROLE not in named(manifests, "ConfigMap")


def test_the_services_own_config_overrides_the_trigger(helm):
    manifests = helm.template(UMBRELLA, sets=["monitoring.config.RECSYS_MONITORING_RETRAIN_TRIGGER=off"])
    assert environment(manifests)["RECSYS_MONITORING_RETRAIN_TRIGGER"] == "off"
    assert named(manifests, "ConfigMap")[ROLE]["data"]["RECSYS_MONITORING_RETRAIN_TRIGGER"] == "kubernetes"


def test_every_trigger_variable_is_set_for_the_monitoring_service(render):
    env = environment(render("default"))
    assert [name for name in TRIGGER_VARIABLES if name not in env] == []
