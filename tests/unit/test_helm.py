"""The Helm charts, offline: lint, render, Kubernetes 1.31 schemas, wiring, security, network policies, env.

Every chart (the umbrella and each service subchart) is linted with `helm lint --strict` and rendered with
its default values and with helm/recsys/values-production.yaml; every rendered manifest is validated against
the Kubernetes 1.31 strict schemas (custom resources against the vendored upstream CRDs). No cluster and no network are
needed: the upstream milvus chart is vendored (helm/recsys/charts/VENDORED.md). Its objects (milvus, etcd,
minio, rendered with global.milvus.mode=chart) are schema-validated like ours and their selectors checked, but
our own rules (hardening, references, network policies) apply to our objects only (`is_ours`).
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import importlib.util
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))  # helm_support sits beside this file (importlib import mode)
from helm_support import (  # noqa: E402
    HELM_DIR,
    REPO,
    SUBCHARTS,
    UMBRELLA,
    Helm,
    HelmError,
    Manifest,
    Peer,
    admits,
    by_kind,
    is_ours,
    matches,
    named,
    offline_charts,
    offline_helm,
    ours,
    pod_templates,
    remote_dependencies,
    validation_errors,
    vendored_archive,
)

from recsys import cli  # noqa: E402
from recsys.common import config  # noqa: E402

PRODUCTION = HELM_DIR / UMBRELLA / "values-production.yaml"
VARIANTS = ("default", "production")

# Which declared scopes each workload reads. A variable of one of these scopes must be set in the workload's
# environment (ConfigMap, env, Secret) or listed in the chart's documented `envLeftAtDefault`.
WORKLOAD_SCOPES = {
    "features": {"common", "features"},
    "candidates": {"common", "candidates"},
    "ranking": {"common", "ranking"},
    "gateway": {"common", "gateway"},
    "monitoring": {"common", "monitoring"},
    "jobs": {"common", "training", "lifecycle"},  # lifecycle: the canary CronJob (`recsys canary decide`)
    "eventlog": {"common", "eventlog"},
}
# Scopes no deployed workload reads, with the reason.
NOT_DEPLOYED_SCOPES = {
    "test": "variables the tests declare for themselves",
    "local": "the local supervisor's layout (`recsys serve`, `recsys demo`); on Kubernetes the chart's replicas decide",
}

# Who may call whom (the design's data flow): gRPC callers of each internal service.
CALLERS = {
    "features": {"gateway", "candidates", "ranking"},
    "candidates": {"gateway"},
    "ranking": {"gateway"},
    "monitoring": {"gateway", "jobs"},  # jobs: the canary CronJob reads the canary's CTR lift
}

# Variants beyond default/production: (id, --set values, extra values files).
EXTRA_VARIANTS = {
    "ranking-deployment": ["ranking.mode=deployment"],
    "all-external": [
        "global.kafka.mode=external",
        "global.kafka.bootstrap=kafka-0.kafka:9092\\,kafka-1.kafka:9092",
        "global.redis.mode=external",
        "global.redis.address=redis.data:6379",
        "global.milvus.mode=external",
        "global.milvus.uri=http://milvus.vector:19530",
        "global.credentials.milvus.existingSecret=milvus-token",
        "global.credentials.redis.existingSecret=redis-auth",
        "global.credentials.kafka.existingSecret=kafka-auth",
    ],
    "milvus-chart": ["global.milvus.mode=chart", "milvus.enabled=true"],
    "kafka-sasl-acls": ["global.kafka.securityProtocol=SASL_PLAINTEXT", "kafka.authorization=true"],
    "observed": ["global.serviceMonitor.enabled=true", "monitoring.persistence.enabled=false"],
    "ranking-external": ["ranking.enabled=false", "global.addresses.ranking=ranker.ml:50054"],
}


@pytest.fixture(scope="module")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    root = tmp_path_factory.mktemp("helm")
    return offline_helm(root)


def subchart_production_values(tmp: Path, name: str) -> Path:
    """The production file seen from one subchart: its own section plus `global`."""
    production = yaml.safe_load(PRODUCTION.read_text())
    values = copy.deepcopy(production.get(name, {}))
    values.pop("enabled", None)
    values["global"] = production.get("global", {})
    path = tmp / f"{name}-production.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def values_files(helm: Helm, chart: str, variant: str) -> list[Path]:
    if variant == "default":
        return []
    if chart == UMBRELLA:
        return [PRODUCTION]
    return [subchart_production_values(helm.home, chart)]


_renders: dict[tuple[str, str], list[Manifest]] = {}


def render(helm: Helm, chart: str = UMBRELLA, variant: str = "default") -> list[Manifest]:
    """Rendered manifests, cached per chart and variant (default, production, or an EXTRA_VARIANTS id)."""
    key = (chart, variant)
    if key not in _renders:
        if variant in EXTRA_VARIANTS:
            _renders[key] = helm.template(chart, sets=EXTRA_VARIANTS[variant])
        else:
            _renders[key] = helm.template(chart, values=values_files(helm, chart, variant))
    return _renders[key]


ALL_CHARTS = (UMBRELLA, *SUBCHARTS)


# --- lint, render, schemas ---------------------------------------------------------------------------------


def test_values_schemas_are_generated():
    sys.path.insert(0, str(HELM_DIR / "tools"))
    try:
        import schemas
    finally:
        sys.path.pop(0)
    assert schemas.main(["--check"]) == 0, "run: python helm/tools/schemas.py"


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("chart", ALL_CHARTS)
def test_lint_strict(helm, chart, variant):
    out = helm.lint(chart, values=values_files(helm, chart, variant))
    assert "0 chart(s) failed" in out
    assert "[WARNING]" not in out and "[ERROR]" not in out, out


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("chart", ALL_CHARTS)
def test_rendered_manifests_match_kubernetes_1_31_schemas(helm, chart, variant):
    manifests = render(helm, chart, variant)
    assert manifests, "nothing rendered"
    errors = [error for m in manifests for error in validation_errors(m)]
    assert errors == []


@pytest.mark.parametrize("variant", list(EXTRA_VARIANTS))
def test_variants_render_lint_and_validate(helm, variant):
    helm.lint(UMBRELLA, sets=EXTRA_VARIANTS[variant])
    manifests = render(helm, UMBRELLA, variant)
    assert [error for m in manifests for error in validation_errors(m)] == []


def test_kubernetes_validate_cli_accepts_the_default_render(helm):
    """The documented command, `helm template ... | kubernetes-validate --strict -k 1.31.0 -`."""
    text = helm.run("template", "rs", str(helm.chart(UMBRELLA)), "--kube-version", "1.31.0").stdout
    cli_path = Path(sys.executable).with_name("kubernetes-validate")
    proc = subprocess.run(
        [str(cli_path), "--strict", "-k", "1.31.0", "--quiet", "-"], input=text, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ERROR" not in proc.stdout


def test_every_kind_rendered_has_a_schema(helm):
    """Custom resources are validated too: RayService, Strimzi Kafka/KafkaNodePool/KafkaTopic/KafkaUser,
    ServiceMonitor, Certificate (the upstream CRDs vendored in deploy/k8s-local/crds, made strict)."""
    kinds = {m["kind"] for variant in [*VARIANTS, *EXTRA_VARIANTS] for m in render(helm, UMBRELLA, variant)}
    assert {"RayService", "Kafka", "KafkaNodePool", "KafkaTopic", "KafkaUser", "ServiceMonitor"} <= kinds


def test_crd_schemas_reject_a_broken_resource(helm):
    ray_service = copy.deepcopy(named(render(helm), "RayService")["rs-ranking"])
    ray_service["spec"]["rayClusterConfig"]["workerGroupSpecs"][0].pop("groupName")
    ray_service["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]["portz"] = []
    errors = validation_errors(ray_service)
    assert any("groupName" in e for e in errors) and any("portz" in e for e in errors), errors
    kafka = copy.deepcopy(by_kind(render(helm), "Kafka")[0])
    kafka["spec"]["kafka"]["listeners"][0]["name"] = "Plain-Listener"
    assert validation_errors(kafka)


def test_remote_dependencies_are_off_by_default_and_in_production():
    """The upstream milvus chart (vendored) deploys only on request: global.milvus.mode=chart, milvus.enabled."""
    remote = remote_dependencies()
    assert [d["name"] for d in remote] == ["milvus"]
    for path in (HELM_DIR / UMBRELLA / "values.yaml", PRODUCTION):
        values = yaml.safe_load(path.read_text())
        for dep in remote:
            section, flag = dep["condition"].split(".")
            assert values.get(section, {}).get(flag, False) is False, f"{path.name}: {dep['condition']}"


# --- the vendored upstream chart ----------------------------------------------------------------------------


def test_lint_strict_works_on_the_repository_folder_offline(tmp_path):
    """`helm lint --strict helm/recsys` on the repository's own folder (no copy), with fresh Helm homes: no
    repository configured, no network (proxies refused), so everything comes from the tree."""
    helm = Helm(home=tmp_path / "home", charts=HELM_DIR)
    assert not list((tmp_path / "home").rglob("repositories.yaml"))
    for sets in ([], EXTRA_VARIANTS["milvus-chart"]):
        args = ["lint", "--strict", str(HELM_DIR / UMBRELLA), *(a for item in sets for a in ("--set", item))]
        out = helm.run(*args).stdout
        assert "1 chart(s) linted, 0 chart(s) failed" in out, out
        assert "[WARNING]" not in out and "[ERROR]" not in out, out
    listing = helm.run("dependency", "list", str(HELM_DIR / UMBRELLA)).stdout
    for dep in remote_dependencies():
        row = next(line.split() for line in listing.splitlines() if line.split()[:1] == [dep["name"]])
        assert row == [dep["name"], dep["version"], dep["repository"], "ok"], listing


def test_vendored_chart_is_locked_in_sync_and_documented(tmp_path):
    """charts/<name>-<version>.tgz is pinned by a Chart.lock that helm accepts as in sync with Chart.yaml, and
    charts/VENDORED.md names its version and checksum (the provenance of an unmodified upstream archive)."""
    lock = yaml.safe_load((HELM_DIR / UMBRELLA / "Chart.lock").read_text())
    locked = {d["name"]: d for d in lock["dependencies"]}
    vendored = (HELM_DIR / UMBRELLA / "charts" / "VENDORED.md").read_text()
    for dep in remote_dependencies():
        assert locked[dep["name"]] == {k: dep[k] for k in ("name", "repository", "version")}
        archive = vendored_archive(dep)
        assert f"`{archive.name}`" in vendored
        assert hashlib.sha256(archive.read_bytes()).hexdigest() in vendored, "update charts/VENDORED.md"
    assert "charts/VENDORED.md" in (HELM_DIR / UMBRELLA / ".helmignore").read_text().split()
    # `helm dependency build` checks the lock's digest first, then would download the remote charts: offline,
    # with no repository configured, it stops there. A tampered digest shows the check is really made.
    copy_dir = offline_charts(tmp_path)
    helm = Helm(home=tmp_path / "home", charts=copy_dir)
    with pytest.raises(HelmError) as offline:
        helm.run("dependency", "build", str(copy_dir / UMBRELLA))
    assert "out of sync" not in str(offline.value) and "no repository definition" in str(offline.value)
    lock_file = copy_dir / UMBRELLA / "Chart.lock"
    lock_file.write_text(lock_file.read_text().replace("digest: sha256:", "digest: sha256:0"))
    with pytest.raises(HelmError, match="out of sync"):
        helm.run("dependency", "build", str(copy_dir / UMBRELLA))


def test_only_the_milvus_chart_renders_upstream_objects(helm):
    for variant in [*VARIANTS, *(v for v in EXTRA_VARIANTS if v != "milvus-chart")]:
        assert all(is_ours(m) for m in render(helm, UMBRELLA, variant)), variant
    upstream = [m for m in render(helm, UMBRELLA, "milvus-chart") if not is_ours(m)]
    assert upstream
    names = {m["metadata"]["name"] for m in upstream}
    assert all(name.startswith(("rs-milvus", "rs-etcd", "rs-minio")) for name in names), names


def test_milvus_chart_renders_the_upstream_workloads(helm):
    """values.yaml `milvus:`: standalone Milvus (cluster.enabled=false, RocksMQ), one etcd, standalone MinIO,
    no Pulsar; the candidates' RECSYS_MILVUS_URI names the chart's Service."""
    manifests = render(helm, UMBRELLA, "milvus-chart")
    workloads = {
        f"{m['kind']}/{m['metadata']['name']}": m for m in manifests if m["kind"] in ("Deployment", "StatefulSet")
    }
    milvus = workloads["Deployment/rs-milvus-standalone"]
    assert milvus["metadata"]["labels"]["app.kubernetes.io/name"] == "milvus"
    assert milvus["metadata"]["labels"]["helm.sh/chart"] == "milvus-4.2.45"
    assert [c["image"] for c in milvus["spec"]["template"]["spec"]["containers"]] == ["milvusdb/milvus:v2.5.9"]
    etcd = workloads["StatefulSet/rs-etcd"]
    assert etcd["metadata"]["labels"]["app.kubernetes.io/name"] == "etcd" and etcd["spec"]["replicas"] == 1
    assert workloads["Deployment/rs-minio"]["metadata"]["labels"]["app"] == "minio"
    upstream = {name for name, m in workloads.items() if not is_ours(m)}
    assert upstream == {"Deployment/rs-milvus-standalone", "StatefulSet/rs-etcd", "Deployment/rs-minio"}
    upstream_names = [m["metadata"]["name"] for m in manifests if not is_ours(m)]
    assert not [name for name in upstream_names if "pulsar" in name or "kafka" in name], upstream_names
    config = named(manifests, "ConfigMap")["rs-milvus"]["data"]["default.yaml"]
    assert "messageQueue: rocksmq" in config and "rs-etcd-0.rs-etcd-headless" in config
    service = named(manifests, "Service")["rs-milvus"]
    assert 19530 in {p["port"] for p in service["spec"]["ports"]}
    assert matches({"matchLabels": service["spec"]["selector"]}, milvus["spec"]["template"]["metadata"]["labels"])
    assert environment(manifests, "candidates")["RECSYS_MILVUS_URI"] == "http://rs-milvus:19530"
    # The index job runs against the server (no embedded per-pod index).
    assert "rs-jobs-index" in named(manifests, "Job")


# --- invalid values ----------------------------------------------------------------------------------------

INVALID = {
    "negative replicas": (["gateway.replicas=-1"], "gateway:\n- replicas: Must be greater than or equal to 0"),
    "unknown ranker": (
        ["gateway.configJson.RECSYS_EXPERIMENTS.variants[0].ranker=xgboost"],
        'ranker must be one of the following: "dcn", "lightgbm"',
    ),
    "unknown ranking mode": (["ranking.mode=serverless"], 'mode must be one of the following: "rayservice"'),
    "negative ray workers": (["ranking.ray.workers.maxReplicas=0"], "ray.workers.maxReplicas: Must be greater"),
    "non-string env value": (["features.config.RECSYS_GRPC_WORKERS=8"], "RECSYS_GRPC_WORKERS: Invalid type"),
    "bad env name": (["global.config.not-an-env=1"], "global.config"),
    "unknown milvus mode": (["global.milvus.mode=lite"], 'global.milvus.mode must be one of the following'),
    "external kafka without bootstrap": (["global.kafka.mode=external"], "global.kafka.bootstrap is required"),
    "milvus chart without mode": (["milvus.enabled=true"], "set global.milvus.mode=chart"),
    "disabled service without address": (["candidates.enabled=false"], "set global.addresses.candidates"),
    "bad cron schedule": (["cronJobs.retrain.schedule=weekly"], "cronJobs.retrain.schedule"),
    "unknown caller": (["features.networkPolicy.allowedCallers[0]=everyone"], "allowedCallers.0"),
    "relative event log path": (["eventlog.uri=eventlog"], "eventlog.uri"),
    "event log off the shared volume": (["eventlog.uri=/var/lib/recsys/eventlog"], "on the shared artifacts volume"),
    "local event log without the volume": (
        ["global.artifacts.enabled=false"], "global.artifacts.enabled=false: set an object-store URI"),
    "canary without monitoring": (
        ["monitoring.enabled=false"], "cronJobs.canary asks the monitoring service: set global.addresses.monitoring"),
}


@pytest.mark.parametrize("case", list(INVALID))
def test_invalid_values_are_rejected_with_a_clear_message(helm, case):
    sets, message = INVALID[case]
    with pytest.raises(HelmError) as failure:
        helm.template(UMBRELLA, sets=sets)
    assert message in str(failure.value), str(failure.value)


# --- wiring ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", [*VARIANTS, "ranking-deployment", "milvus-chart"])
def test_selectors_match_pod_labels(helm, variant):
    """Every selector, the upstream chart's included, selects a rendered pod template."""
    manifests = render(helm, UMBRELLA, variant)
    templates = list(pod_templates(manifests))
    for m in manifests:
        spec, name = m.get("spec", {}), f"{m['kind']}/{m['metadata']['name']}"
        if m["kind"] in ("Deployment", "StatefulSet"):
            assert matches(spec["selector"], spec["template"]["metadata"]["labels"]), name
        elif m["kind"] == "Service" and spec.get("selector"):
            assert any(matches({"matchLabels": spec["selector"]}, t.labels) for t in templates), name
        elif m["kind"] in ("PodDisruptionBudget", "NetworkPolicy"):
            key = "selector" if m["kind"] == "PodDisruptionBudget" else "podSelector"
            assert any(matches(spec[key], t.labels) for t in templates), f"{name} selects no pod"
        elif m["kind"] == "HorizontalPodAutoscaler":
            target = spec["scaleTargetRef"]
            assert target["name"] in named(manifests, target["kind"]), name
        elif m["kind"] == "ServiceMonitor":
            services = by_kind(manifests, "Service")
            ray_serve = [rs["spec"]["serveService"] for rs in by_kind(manifests, "RayService")]
            assert any(matches(spec["selector"], s["metadata"]["labels"]) for s in [*services, *ray_serve]), name


@pytest.mark.parametrize("variant", [*VARIANTS, "ranking-deployment", "all-external", "milvus-chart"])
def test_references_resolve(helm, variant):
    """ServiceAccounts, ConfigMaps, Secrets and PVCs our pods name are rendered, or are named external ones."""
    manifests = render(helm, UMBRELLA, variant)
    values = effective_values(variant)
    external_secrets = {c["existingSecret"] for c in values["global"]["credentials"].values() if c["existingSecret"]}
    kafka_users = set(named(manifests, "KafkaUser"))
    for t in pod_templates(ours(manifests)):
        assert t.spec["serviceAccountName"] in named(manifests, "ServiceAccount"), t.owner
        for volume in t.spec.get("volumes", []):
            if "persistentVolumeClaim" in volume:
                claim = volume["persistentVolumeClaim"]["claimName"]
                assert claim in named(manifests, "PersistentVolumeClaim"), f"{t.owner}: {claim}"
        for c in t.containers():
            for source in c.get("envFrom", []):
                assert source["configMapRef"]["name"] in named(manifests, "ConfigMap"), t.owner
            for env in c.get("env", []):
                ref = (env.get("valueFrom") or {}).get("secretKeyRef")
                if ref:
                    rendered = named(manifests, "Secret").get(ref["name"])
                    if rendered is not None:
                        assert ref["key"] in rendered["data"], f"{t.owner}: {ref}"
                    else:
                        assert ref["name"] in external_secrets | kafka_users, f"{t.owner}: {ref}"


@pytest.mark.parametrize("variant", [*VARIANTS, "ranking-deployment", "milvus-chart"])
def test_pods_are_hardened(helm, variant):
    """Our pods (the upstream milvus chart's follow its own values, not our rules)."""
    manifests = ours(render(helm, UMBRELLA, variant))
    # A pod holds its ServiceAccount token only when a RoleBinding grants that account something: the monitoring
    # service's retrain trigger (monitoring.retrainOnDrift; test_helm_retrain_job.py checks the Role's rules).
    bound = {s["name"] for b in by_kind(manifests, "RoleBinding") for s in b["subjects"]
             if s["kind"] == "ServiceAccount"}
    for t in pod_templates(manifests):
        pod = t.spec.get("securityContext", {})
        assert t.spec.get("automountServiceAccountToken") is (t.spec["serviceAccountName"] in bound), t.owner
        for c in t.containers():
            ctx = c.get("securityContext", {})
            where = f"{t.owner}/{c['name']}"
            assert ctx.get("runAsNonRoot", pod.get("runAsNonRoot")) is True, where
            assert ctx.get("readOnlyRootFilesystem") is True, where
            assert ctx.get("allowPrivilegeEscalation") is False, where
            assert ctx.get("capabilities", {}).get("drop") == ["ALL"], where
            seccomp = ctx.get("seccompProfile", pod.get("seccompProfile", {}))
            assert seccomp.get("type") == "RuntimeDefault", where
            mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
            assert "/tmp" in mounts, f"{where}: a read-only root needs a writable /tmp"


@pytest.mark.parametrize("variant", [*VARIANTS, "ranking-deployment", "milvus-chart"])
def test_services_have_grpc_probes_on_their_port(helm, variant):
    manifests = render(helm, UMBRELLA, variant)
    deployments = named(manifests, "Deployment")
    ports = effective_values(variant)["global"]["ports"]
    for component in SUBCHARTS:
        deployment = deployments.get(f"rs-{component}")
        if deployment is None:
            assert component == "ranking" and by_kind(manifests, "RayService")
            continue
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert {"name": "grpc", "containerPort": ports[component], "protocol": "TCP"} in container["ports"]
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert container[probe]["grpc"] == {"port": ports[component]}, f"{component} {probe}"


def test_ray_serve_probe_kind_uses_the_python_probe(helm):
    manifests = helm.template(UMBRELLA, sets=["ranking.mode=deployment", "ranking.probes.kind=ray-serve"])
    container = named(manifests, "Deployment")["rs-ranking"]["spec"]["template"]["spec"]["containers"][0]
    command = container["readinessProbe"]["exec"]["command"]
    assert command[:4] == ["python", "-m", "recsys.common.healthcheck", "--ray-serve"]
    assert command[-1] == "127.0.0.1:50054"


@pytest.mark.parametrize("variant", VARIANTS)
def test_autoscaling_and_disruption_budgets(helm, variant):
    manifests = render(helm, UMBRELLA, variant)
    hpas = {h["spec"]["scaleTargetRef"]["name"] for h in by_kind(manifests, "HorizontalPodAutoscaler")}
    assert {"rs-gateway", "rs-candidates"} <= hpas
    for name in hpas:
        assert "replicas" not in named(manifests, "Deployment")[name]["spec"], f"{name}: the HPA owns replicas"
    pdbs = named(manifests, "PodDisruptionBudget")
    assert {f"rs-{c}" for c in SUBCHARTS} <= set(pdbs)


def test_ray_service_serves_grpc_on_the_ranking_port(helm):
    manifests = render(helm)
    ray_service = named(manifests, "RayService")["rs-ranking"]["spec"]
    serve = yaml.safe_load(ray_service["serveConfigV2"])
    assert serve["grpc_options"]["port"] == 50054
    assert serve["grpc_options"]["grpc_servicer_functions"] == [
        "recsys.v1.ranking_pb2_grpc.add_RankingServiceServicer_to_server",
        "grpc_health.v1.health_pb2_grpc.add_HealthServicer_to_server",
    ]
    assert serve["applications"][0]["import_path"] == "recsys.ranking.server:app_builder"
    assert [app["name"] for app in serve["applications"]] == ["ranking"]
    # The serve Service keeps the name the gateway's RECSYS_RANKING_ADDR points at.
    assert ray_service["serveService"]["metadata"]["name"] == "rs-ranking"
    assert environment(manifests, "gateway")["RECSYS_RANKING_ADDR"] == "rs-ranking:50054"
    assert {p["port"] for p in ray_service["serveService"]["spec"]["ports"]} == {50054, 8080}


def test_jobs_run_their_steps_in_order(helm):
    manifests = render(helm)
    jobs = named(manifests, "Job")
    train = jobs["rs-jobs-train"]
    spec = train["spec"]["template"]["spec"]
    assert [c["args"][:2] for c in spec["initContainers"]] == [["data", "generate"]]
    # train writes the registry the services read (RECSYS_MODELS_DIR) from the dataset the first step wrote
    assert [c["args"][:5] for c in spec["containers"]] == [
        ["train", "--data", "/var/lib/recsys/artifacts/data/current", "--out", "/var/lib/recsys/artifacts/models"]]
    weights = {name: int(j["metadata"]["annotations"]["helm.sh/hook-weight"]) for name, j in jobs.items()}
    assert weights["rs-jobs-train"] < weights["rs-jobs-materialize"]
    # Embedded Milvus: each candidates pod indexes itself, so no index job and an init container instead.
    assert "rs-jobs-index" not in jobs
    init = named(manifests, "Deployment")["rs-candidates"]["spec"]["template"]["spec"]["initContainers"]
    assert [(c["name"], c["command"], c["args"]) for c in init] == [("embedded-index", ["recsys"], ["index"])]
    cron = named(manifests, "CronJob")
    retrain = cron["rs-jobs-retrain"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    steps = [c["args"][0] for c in [*retrain["initContainers"], *retrain["containers"]]]
    assert steps == ["retrain", "materialize", "batch-recommend"]
    assert cron["rs-jobs-batch-inference"]["spec"]["concurrencyPolicy"] == "Forbid"
    external = named(render(helm, UMBRELLA, "all-external"), "Job")
    assert "rs-jobs-index" in external


# --- network policies --------------------------------------------------------------------------------------

OUTSIDE = Peer(labels={}, in_cluster=False)
OTHER_NAMESPACE = Peer(labels={"app": "curious"}, namespace={"kubernetes.io/metadata.name": "elsewhere"})
SAME_NAMESPACE_STRANGER = Peer(labels={"app": "curious"})
PROMETHEUS = Peer(
    labels={"app.kubernetes.io/name": "prometheus"}, namespace={"kubernetes.io/metadata.name": "monitoring"}
)


def pods_by_component(manifests: list[Manifest]) -> dict[str, dict[str, str]]:
    """Our pods' labels by component."""
    return {t.component: t.labels for t in pod_templates(ours(manifests))}


@pytest.mark.parametrize("variant", [*VARIANTS, "ranking-deployment", "milvus-chart"])
def test_network_policies_admit_only_the_callers(helm, variant):
    manifests = render(helm, UMBRELLA, variant)
    policies = by_kind(manifests, "NetworkPolicy")
    pods = pods_by_component(manifests)
    ports = effective_values(variant)["global"]["ports"]
    strangers = {"outside": OUTSIDE, "other-namespace": OTHER_NAMESPACE, "stranger": SAME_NAMESPACE_STRANGER}
    # The upstream chart's pods (milvus, etcd, minio) are strangers to our services too.
    strangers |= {t.owner: Peer(labels=t.labels) for t in pod_templates(m for m in manifests if not is_ours(m))}
    clients = {**{c: Peer(labels=labels) for c, labels in pods.items()}, **strangers}
    for target, callers in CALLERS.items():
        admitted = {
            name
            for name, client in clients.items()
            if name != target and admits(policies, pods[target], ports[target], client)
        }
        assert admitted == callers, f"{target} admits {sorted(admitted)}"
    # The gateway (RecommendService and EventService) is the one public service.
    for name, client in clients.items():
        assert admits(policies, pods["gateway"], ports["gateway"], client), name
    # Infrastructure and jobs.
    if "redis" in pods:
        redis = {name for name, client in clients.items() if admits(policies, pods["redis"], 6379, client)}
        assert redis == {"features", "jobs"}
    assert not any(admits(policies, pods["jobs"], 9090, client) for client in clients.values())
    # Metrics only from the configured scrapers.
    for target in CALLERS:
        assert admits(policies, pods[target], 9090, PROMETHEUS), target
        assert not admits(policies, pods[target], 9090, SAME_NAMESPACE_STRANGER), target


@pytest.mark.parametrize("variant", [*VARIANTS, "ranking-deployment", "milvus-chart"])
def test_every_pod_is_selected_by_a_network_policy(helm, variant):
    """Our pods (the upstream milvus chart renders no NetworkPolicy for its own)."""
    manifests = render(helm, UMBRELLA, variant)
    policies = by_kind(manifests, "NetworkPolicy")
    for t in pod_templates(ours(manifests)):
        assert any(matches(p["spec"]["podSelector"], t.labels) for p in policies), f"{t.owner} is wide open"


def test_ray_pods_reach_each_other_and_the_operator_reaches_them(helm):
    manifests = render(helm)
    policies = by_kind(manifests, "NetworkPolicy")
    ray = pods_by_component(manifests)["ranking"]
    assert admits(policies, ray, 6379, Peer(labels=ray)), "GCS between Ray pods"
    operator = Peer(labels={"app.kubernetes.io/name": "kuberay-operator"}, namespace={"name": "ray-system"})
    assert admits(policies, ray, 8265, operator) and admits(policies, ray, 8000, operator)
    assert not admits(policies, ray, 50054, operator)
    assert not admits(policies, ray, 6379, Peer(labels=pods_by_component(manifests)["gateway"]))


@pytest.mark.parametrize("variant", VARIANTS)
def test_kafka_listener_admits_only_kafka_clients(helm, variant):
    manifests = render(helm, UMBRELLA, variant)
    pods = pods_by_component(manifests)
    (kafka,) = by_kind(manifests, "Kafka")
    peers = [peer for listener in kafka["spec"]["kafka"]["listeners"] for peer in listener["networkPolicyPeers"]]
    admitted = {c for c, labels in pods.items() if any(matches(p["podSelector"], labels) for p in peers)}
    assert admitted == {"features", "gateway", "monitoring", "jobs", "eventlog"}


# --- environment -------------------------------------------------------------------------------------------


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _set_path(values: dict[str, Any], assignment: str) -> None:
    path, _, raw = assignment.partition("=")
    keys = path.split(".")
    node = values
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = yaml.safe_load(raw.replace("\\,", ","))


@cache
def effective_values(variant: str) -> dict[str, Any]:
    """The umbrella's values for a variant, each subchart's defaults merged under its key."""
    values = yaml.safe_load((HELM_DIR / UMBRELLA / "values.yaml").read_text())
    for name in SUBCHARTS:
        defaults = yaml.safe_load((HELM_DIR / UMBRELLA / "charts" / name / "values.yaml").read_text())
        values[name] = _deep_merge(defaults, values.get(name, {}))
    if variant == "production":
        values = _deep_merge(values, yaml.safe_load(PRODUCTION.read_text()))
    for assignment in EXTRA_VARIANTS.get(variant, []):
        if "[" not in assignment:
            _set_path(values, assignment)
    return values


def environment(manifests: list[Manifest], component: str) -> dict[str, str]:
    """Every variable a component's containers get: env entries and the keys of envFrom ConfigMaps/Secrets."""
    config_maps, secrets = named(manifests, "ConfigMap"), named(manifests, "Secret")
    env: dict[str, str] = {}
    for t in pod_templates(ours(manifests)):
        if t.component != component:
            continue
        for c in t.containers():
            for source in c.get("envFrom", []):
                if "configMapRef" in source:
                    env.update(config_maps[source["configMapRef"]["name"]]["data"])
                if "secretRef" in source:
                    env.update(dict.fromkeys(secrets[source["secretRef"]["name"]]["data"], "<secret>"))
            for entry in c.get("env", []):
                env[entry["name"]] = entry.get("value", "<from a reference>")
    return env


def documented(values: dict[str, Any], component: str) -> set[str]:
    section = values["jobs"] if component == "jobs" else values[component]
    return set(values["global"].get("envLeftAtDefault") or []) | set(section.get("envLeftAtDefault") or [])


def declared() -> dict[str, config.EnvVar]:
    """Every declared variable: the CLI's command modules, and each deployed service's settings module (so a
    service is checked even before its command is registered)."""
    cli.build_parser()  # imports every command module, declaring its variables
    for package in [*SUBCHARTS, "training", "eventlog", "lifecycle"]:
        if importlib.util.find_spec(f"recsys.{package}") and importlib.util.find_spec(f"recsys.{package}.settings"):
            importlib.import_module(f"recsys.{package}.settings")
    return {n: v for n, v in config.REGISTRY.items() if v.scope != "test" and not n.startswith("RECSYS_TEST_ONLY")}


def test_every_declared_scope_is_deployed_or_explained():
    scopes = {scope for scopes in WORKLOAD_SCOPES.values() for scope in scopes} | set(NOT_DEPLOYED_SCOPES)
    unknown = {f"{name} ({var.scope})" for name, var in declared().items() if var.scope not in scopes}
    assert not unknown, (
        "no chart workload reads these scopes: map the scope in WORKLOAD_SCOPES (tests/unit/test_helm.py) and "
        f"set the variables in that workload's chart, or list it in NOT_DEPLOYED_SCOPES: {sorted(unknown)}"
    )


@pytest.mark.parametrize("variant", [*VARIANTS, "ranking-deployment", "milvus-chart"])
def test_every_variable_a_service_reads_is_set_or_documented(helm, variant):
    """Fails when a service reads an environment variable that its chart neither sets nor documents."""
    manifests = render(helm, UMBRELLA, variant)
    values = effective_values(variant)
    variables = declared()
    missing = {}
    for component, scopes in WORKLOAD_SCOPES.items():
        env = environment(manifests, component)
        assert env, f"no workload of {component} rendered"
        known = set(env) | documented(values, component)
        lacking = sorted(n for n, v in variables.items() if v.scope in scopes and n not in known)
        if lacking:
            missing[component] = lacking
    assert not missing, (
        "set these in the chart (config / global.config / the computed defaults in helm/recsys-lib) or list them "
        f"in envLeftAtDefault and helm/README.md: {missing}"
    )


def test_documented_variables_exist_and_are_in_the_helm_readme():
    values = effective_values("default")
    readme = (HELM_DIR / "README.md").read_text()
    variables = declared()
    for component in WORKLOAD_SCOPES:
        for name in documented(values, component):
            assert name in variables, f"{component} documents {name}, which no code declares"
            assert f"`{name}`" in readme, f"describe {name} in helm/README.md"


def test_in_pod_paths_point_at_writable_volumes(helm):
    env = environment(render(helm), "features")
    assert env["RECSYS_BIND_HOST"] == "0.0.0.0"
    assert env["RECSYS_VAR_DIR"] == "/var/lib/recsys"
    assert env["RECSYS_MODELS_DIR"].startswith("/var/lib/recsys/artifacts/")


def test_infrastructure_endpoints_follow_the_modes(helm):
    default = environment(render(helm), "jobs")
    assert default["RECSYS_KAFKA_BOOTSTRAP"] == "rs-kafka-kafka-bootstrap:9092"
    assert default["RECSYS_REDIS_URL"] == "redis://:$(REDIS_PASSWORD)@rs-redis:6379/0"
    assert default["RECSYS_MILVUS_URI"] == "/var/lib/recsys/milvus/recsys.db"
    external = environment(render(helm, UMBRELLA, "all-external"), "jobs")
    assert external["RECSYS_KAFKA_BOOTSTRAP"] == "kafka-0.kafka:9092,kafka-1.kafka:9092"
    assert external["RECSYS_REDIS_URL"] == "redis://:$(REDIS_PASSWORD)@redis.data:6379/0"
    assert external["RECSYS_MILVUS_URI"] == "http://milvus.vector:19530"
    production = render(helm, UMBRELLA, "production")
    prod_env = environment(production, "gateway")
    assert prod_env["RECSYS_KAFKA_BOOTSTRAP"] == "rs-kafka-kafka-bootstrap:9093"
    assert prod_env["RECSYS_KAFKA_SASL_USERNAME"] == "rs-kafka-recsys"
    assert "rs-kafka-recsys" in named(production, "KafkaUser")
    chart = environment(render(helm, UMBRELLA, "milvus-chart"), "candidates")
    assert chart["RECSYS_MILVUS_URI"] == "http://rs-milvus:19530"
    moved = environment(render(helm, UMBRELLA, "ranking-external"), "gateway")
    assert moved["RECSYS_RANKING_ADDR"] == "ranker.ml:50054"
    assert not [m for m in render(helm, UMBRELLA, "ranking-external") if "ranking" in m["metadata"]["name"]]


# --- the image ---------------------------------------------------------------------------------------------


def test_dockerfile_has_a_target_per_chart_workload():
    dockerfile = (REPO / "docker" / "Dockerfile").read_text()
    stages = {line.split()[-1] for line in dockerfile.splitlines() if line.upper().startswith("FROM ")}
    assert {*SUBCHARTS, "jobs"} <= stages
    assert "USER 10001" in dockerfile
    assert "python -m recsys.common.healthcheck" in dockerfile
    pyproject = (REPO / "pyproject.toml").read_text()
    torch_pin = next(line for line in pyproject.splitlines() if '"torch==' in line).strip().strip('",')
    assert f"{torch_pin}" in dockerfile, "the image installs torch exactly as pinned"
