"""The model lifecycle in the chart, offline: the event log writer (a Deployment running `python -m recsys.eventlog`
from the jobs image), the retrain CronJob that learns from that log (`recsys retrain --base --log --models`, the
log URI from the same value), and the canary CronJob that asks the monitoring service (`recsys canary decide`).
Renders with helm and validates against the Kubernetes 1.31 / CRD schemas (helm_support)."""

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
    Manifest,
    Peer,
    admits,
    by_kind,
    matches,
    named,
    offline_helm,
    pod_templates,
    validation_errors,
)

VALUES = yaml.safe_load((HELM_DIR / UMBRELLA / "values.yaml").read_text())
PRODUCTION = HELM_DIR / UMBRELLA / "values-production.yaml"
DEFAULT_URI = "/var/lib/recsys/artifacts/eventlog"
S3_URI = "s3://recsys-bucket/eventlog"
S3_SETS = [
    f"eventlog.uri={S3_URI}",
    "eventlog.storageEnv[0].name=AWS_ACCESS_KEY_ID",
    "eventlog.storageEnv[0].valueFrom.secretKeyRef.name=eventlog-s3",
    "eventlog.storageEnv[0].valueFrom.secretKeyRef.key=id",
]


@pytest.fixture(scope="module")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    root = tmp_path_factory.mktemp("helm-lifecycle")
    return offline_helm(root)


_renders: dict[str, list[Manifest]] = {}


@pytest.fixture(scope="module")
def render(helm):
    def _render(variant: str) -> list[Manifest]:
        if variant not in _renders:
            if variant == "default":
                _renders[variant] = helm.template(UMBRELLA)
            elif variant == "production":
                _renders[variant] = helm.template(UMBRELLA, values=[PRODUCTION])
            elif variant == "s3":
                _renders[variant] = helm.template(UMBRELLA, sets=S3_SETS)
            else:
                raise KeyError(variant)
        return _renders[variant]

    return _render


def env_of(manifests: list[Manifest], component: str) -> dict[str, str]:
    return named(manifests, "ConfigMap")[f"rs-{component}-env"]["data"]


def pod_spec(workload: Manifest) -> dict[str, Any]:
    spec = workload["spec"]
    if workload["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return spec["template"]["spec"]


def steps(cron_job: Manifest) -> list[dict[str, Any]]:
    spec = pod_spec(cron_job)
    return [*(spec.get("initContainers") or []), *spec["containers"]]


def option(args: list[str], name: str) -> str:
    assert name in args, f"{name} missing from {args}"
    return args[args.index(name) + 1]


# --- everything validates --------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["default", "production", "s3"])
def test_lifecycle_renders_validate_against_the_schemas(helm, render, variant):
    manifests = render(variant)
    assert [error for m in manifests for error in validation_errors(m)] == []
    assert {"rs-eventlog"} <= set(named(manifests, "Deployment"))
    assert {"rs-jobs-retrain", "rs-jobs-canary"} <= set(named(manifests, "CronJob"))


def test_s3_variant_lints(helm):
    out = helm.lint(UMBRELLA, sets=S3_SETS)
    assert "0 chart(s) failed" in out and "[WARNING]" not in out, out


# --- the event log writer --------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["default", "production"])
def test_eventlog_writer_runs_from_the_jobs_image_with_the_log_uri(render, variant):
    manifests = render(variant)
    deployment = named(manifests, "Deployment")["rs-eventlog"]
    assert deployment["spec"]["replicas"] == VALUES["eventlog"]["replicas"] == 1
    spec = pod_spec(deployment)
    (container,) = spec["containers"]
    assert container["command"] == ["python", "-m", "recsys.eventlog"]
    assert "args" not in container
    jobs_image = steps(named(manifests, "CronJob")["rs-jobs-retrain"])[0]["image"]
    assert container["image"] == jobs_image and "/recsys-jobs:" in jobs_image
    assert container["envFrom"] == [{"configMapRef": {"name": "rs-eventlog-env"}}]
    env = env_of(manifests, "eventlog")
    assert env["RECSYS_EVENTLOG_URI"] == VALUES["eventlog"]["uri"] == DEFAULT_URI
    # The same Kafka as every other client of the release.
    for name in ("RECSYS_KAFKA_BOOTSTRAP", "RECSYS_KAFKA_SECURITY_PROTOCOL", "RECSYS_KAFKA_EVENTS_TOPIC",
                 "RECSYS_KAFKA_IMPRESSIONS_TOPIC", "RECSYS_KAFKA_SSL_CAFILE"):
        assert env[name] == env_of(manifests, "monitoring")[name], name
    # A local log: the shared artifacts volume, writable, holds it.
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["artifacts"]["mountPath"] == "/var/lib/recsys/artifacts" and mounts["artifacts"]["readOnly"] is False
    assert DEFAULT_URI.startswith(mounts["artifacts"]["mountPath"] + "/")
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["artifacts"]["persistentVolumeClaim"]["claimName"] == "rs-artifacts"
    # Its own ServiceAccount; only a metrics port, no gRPC probe (its progress is the consumer group's lag).
    assert spec["serviceAccountName"] == "rs-eventlog" and "rs-eventlog" in named(manifests, "ServiceAccount")
    assert container["ports"] == [{"name": "metrics", "containerPort": 9090, "protocol": "TCP"}]
    assert env["RECSYS_METRICS_PORT"] == "9090"
    assert not {"livenessProbe", "readinessProbe", "startupProbe"} & set(container)
    # Static group membership under the pod's name.
    instance = next(e for e in container["env"] if e["name"] == "RECSYS_EVENTLOG_INSTANCE_ID")
    assert instance["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert container["resources"] == VALUES["eventlog"]["resources"]


def test_eventlog_writer_with_sasl_gets_the_kafka_credentials_and_ca(render):
    manifests = render("production")  # SASL_SSL with Strimzi
    spec = pod_spec(named(manifests, "Deployment")["rs-eventlog"])
    env = {e["name"]: e for e in spec["containers"][0]["env"]}
    assert env["RECSYS_KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "rs-kafka-recsys",
                                                                              "key": "password"}
    assert env_of(manifests, "eventlog")["RECSYS_KAFKA_SASL_USERNAME"] == "rs-kafka-recsys"
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["kafka-ca"]["secret"]["secretName"] == "rs-kafka-cluster-ca-cert"
    assert env_of(manifests, "eventlog")["RECSYS_KAFKA_SSL_CAFILE"] == "/etc/recsys/kafka-ca/ca.crt"


def test_eventlog_in_an_object_store_needs_no_volume_and_shares_its_credentials_with_the_jobs(render):
    manifests = render("s3")
    assert env_of(manifests, "eventlog")["RECSYS_EVENTLOG_URI"] == S3_URI
    spec = pod_spec(named(manifests, "Deployment")["rs-eventlog"])
    container = spec["containers"][0]
    assert "artifacts" not in {v["name"] for v in spec["volumes"]}
    assert "artifacts" not in {m["name"] for m in container["volumeMounts"]}
    credential = {"name": "AWS_ACCESS_KEY_ID", "valueFrom": {"secretKeyRef": {"name": "eventlog-s3", "key": "id"}}}
    assert credential in container["env"]
    retrain = steps(named(manifests, "CronJob")["rs-jobs-retrain"])[0]
    assert option(retrain["args"], "--log") == S3_URI
    assert credential in retrain["env"]


def test_eventlog_is_left_out_when_disabled(helm):
    manifests = helm.template(UMBRELLA, sets=["eventlog.enabled=false"])
    names = {(m["kind"], m["metadata"]["name"]) for m in manifests}
    assert not [n for n in names if n[1].startswith("rs-eventlog")], names
    # The retrain CronJob still reads the log at eventlog.uri (written by a writer elsewhere).
    retrain = steps(named(manifests, "CronJob")["rs-jobs-retrain"])[0]
    assert option(retrain["args"], "--log") == DEFAULT_URI


PROMETHEUS = Peer(labels={"app.kubernetes.io/name": "prometheus"},
                  namespace={"kubernetes.io/metadata.name": "monitoring"})


def test_eventlog_pods_admit_only_scrapers_and_reach_the_kafka_listener(render):
    manifests = render("default")
    policies = by_kind(manifests, "NetworkPolicy")
    (writer,) = [t for t in pod_templates(manifests) if t.component == "eventlog"]
    assert any(matches(p["spec"]["podSelector"], writer.labels) for p in policies)
    gateway = next(t for t in pod_templates(manifests) if t.component == "gateway")
    assert not admits(policies, writer.labels, 9090, Peer(labels=gateway.labels))
    assert not admits(policies, writer.labels, 50051, Peer(labels=gateway.labels))
    assert admits(policies, writer.labels, 9090, PROMETHEUS)
    (kafka,) = by_kind(manifests, "Kafka")
    peers = [peer for listener in kafka["spec"]["kafka"]["listeners"] for peer in listener["networkPolicyPeers"]]
    assert any(matches(peer["podSelector"], writer.labels) for peer in peers)


# --- the retrain CronJob ---------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["default", "production"])
def test_retrain_learns_from_the_event_log_then_follows_latest(render, variant):
    manifests = render(variant)
    retrain = named(manifests, "CronJob")["rs-jobs-retrain"]
    containers = steps(retrain)
    first = containers[0]
    assert first["command"] == ["recsys"] and first["args"][0] == "retrain"
    args = first["args"]
    jobs_env = env_of(manifests, "jobs")
    assert option(args, "--log") == env_of(manifests, "eventlog")["RECSYS_EVENTLOG_URI"] == DEFAULT_URI
    assert option(args, "--models") == jobs_env["RECSYS_MODELS_DIR"] == "/var/lib/recsys/artifacts/models"
    # The base dataset is the one the train job wrote (its catalogue and users; the log extends them).
    train = named(render("default"), "Job")["rs-jobs-train"]
    assert option(args, "--base") == option(pod_spec(train)["containers"][0]["args"], "--data")
    assert "--quiet" in args and "--data" not in args
    # Then the online store and the index follow the registry's latest, and the batch lists are recomputed.
    materialize = next(c for c in containers if c["args"][0] == "materialize")
    assert materialize["args"] == ["materialize"]  # the latest version's feature tables, no --data
    names = [c["args"][0] for c in containers]
    embedded = variant == "default"  # production uses an external Milvus: the index step stays
    assert names == ["retrain", "materialize", *([] if embedded else ["index"]), "batch-recommend"]
    # The writer and the retrain step see the same log: the same volume and path.
    mounts = {m["name"]: m["mountPath"] for m in first["volumeMounts"]}
    assert DEFAULT_URI.startswith(mounts["artifacts"] + "/")


def test_retrain_log_follows_the_value(helm):
    uri = "/var/lib/recsys/artifacts/logs/v2"
    manifests = helm.template(UMBRELLA, sets=[f"eventlog.uri={uri}"])
    retrain = steps(named(manifests, "CronJob")["rs-jobs-retrain"])[0]
    assert option(retrain["args"], "--log") == uri == env_of(manifests, "eventlog")["RECSYS_EVENTLOG_URI"]


# --- the canary CronJob ----------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["default", "production"])
def test_canary_cron_job_decides_against_the_monitoring_service(render, variant):
    manifests = render(variant)
    canary = named(manifests, "CronJob")["rs-jobs-canary"]
    assert canary["spec"]["schedule"] == "*/5 * * * *"
    assert canary["spec"]["concurrencyPolicy"] == "Forbid"
    job = canary["spec"]["jobTemplate"]["spec"]
    assert job["backoffLimit"] == 0  # a failed decision waits for the next run (Forbid: never two at once)
    (container,) = steps(canary)
    assert [*container["command"], *container["args"]] == ["recsys", "canary", "decide", "--follow"]
    # RECSYS_MONITORING_ADDR resolves to the monitoring Service's gRPC port.
    host, port = env_of(manifests, "jobs")["RECSYS_MONITORING_ADDR"].rsplit(":", 1)
    service = named(manifests, "Service")[host]
    grpc = next(p for p in service["spec"]["ports"] if p["name"] == "grpc")
    assert grpc["port"] == int(port)
    monitoring = named(manifests, "Deployment")[host]
    assert matches({"matchLabels": service["spec"]["selector"]}, monitoring["spec"]["template"]["metadata"]["labels"])
    # ... and the monitoring NetworkPolicy admits the jobs' pods there.
    policies = by_kind(manifests, "NetworkPolicy")
    jobs_pod = next(t for t in pod_templates(manifests) if t.owner == "CronJob/rs-jobs-canary")
    assert admits(policies, monitoring["spec"]["template"]["metadata"]["labels"], int(port),
                  Peer(labels=jobs_pod.labels))
    # The registry it acts on is the one the gateway reads.
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert env_of(manifests, "jobs")["RECSYS_MODELS_DIR"].startswith(mounts["artifacts"] + "/")


def test_canary_cron_job_follows_an_external_monitoring_address(helm):
    manifests = helm.template(UMBRELLA, sets=["monitoring.enabled=false", "global.addresses.monitoring=mon.obs:50055"])
    assert "rs-jobs-canary" in named(manifests, "CronJob")
    assert env_of(manifests, "jobs")["RECSYS_MONITORING_ADDR"] == "mon.obs:50055"
    assert "rs-monitoring" not in named(manifests, "Deployment")


def test_canary_cron_job_can_be_disabled(helm):
    manifests = helm.template(UMBRELLA, sets=["cronJobs.canary.enabled=false", "monitoring.enabled=false"])
    assert "rs-jobs-canary" not in named(manifests, "CronJob")


def test_jobs_call_monitoring_with_a_client_certificate_under_tls(helm):
    manifests = helm.template(UMBRELLA, sets=[
        "global.tls.enabled=true", "global.tls.certManager.enabled=true", "global.tls.certManager.issuerRef.name=ca"])
    assert [error for m in manifests for error in validation_errors(m)] == []
    certificate = named(manifests, "Certificate")["rs-jobs"]["spec"]
    assert certificate["secretName"] == "rs-jobs-tls"
    assert "server auth" not in certificate["usages"] and "client auth" in certificate["usages"]
    env = env_of(manifests, "jobs")
    assert env["RECSYS_TLS_CERT"] == "/etc/recsys/tls/tls.crt" and env["RECSYS_TLS_CA"] == "/etc/recsys/tls/ca.crt"
    spec = pod_spec(named(manifests, "CronJob")["rs-jobs-canary"])
    assert {v["name"]: v for v in spec["volumes"]}["tls"]["secret"]["secretName"] == "rs-jobs-tls"
    assert "/etc/recsys/tls" in {m["mountPath"] for m in spec["containers"][0]["volumeMounts"]}
    # The event log writer calls no gRPC service: no certificate.
    writer = pod_spec(named(manifests, "Deployment")["rs-eventlog"])
    assert "tls" not in {v["name"] for v in writer["volumes"]}
    assert env_of(manifests, "eventlog")["RECSYS_TLS_CERT"] == ""


# --- the gateway reads the canary state from the same registry --------------------------------------------


@pytest.mark.parametrize("variant", ["default", "production"])
def test_gateway_reads_the_registry_the_jobs_write(render, variant):
    """rollout.json and history.jsonl live in RECSYS_MODELS_DIR: the gateway mounts the same claim there."""
    manifests = render(variant)
    gateway_env, jobs_env = env_of(manifests, "gateway"), env_of(manifests, "jobs")
    assert gateway_env["RECSYS_MODELS_DIR"] == jobs_env["RECSYS_MODELS_DIR"]
    gateway = pod_spec(named(manifests, "Deployment")["rs-gateway"])
    retrain = pod_spec(named(manifests, "CronJob")["rs-jobs-retrain"])
    claim = {v["name"]: v for v in gateway["volumes"]}["artifacts"]["persistentVolumeClaim"]["claimName"]
    assert claim == {v["name"]: v for v in retrain["volumes"]}["artifacts"]["persistentVolumeClaim"]["claimName"]
    mount = {m["name"]: m for m in gateway["containers"][0]["volumeMounts"]}["artifacts"]
    assert gateway_env["RECSYS_MODELS_DIR"].startswith(mount["mountPath"] + "/") and mount["readOnly"] is True


def test_eventlog_metrics_are_scraped_through_a_pod_monitor(helm):
    manifests = helm.template(UMBRELLA, sets=["global.serviceMonitor.enabled=true"])
    assert [error for m in manifests for error in validation_errors(m)] == []
    monitor = named(manifests, "PodMonitor")["rs-eventlog"]["spec"]
    writer = named(manifests, "Deployment")["rs-eventlog"]["spec"]["template"]
    assert matches(monitor["selector"], writer["metadata"]["labels"])
    ports = {p["name"] for p in writer["spec"]["containers"][0]["ports"]}
    assert [e["port"] for e in monitor["podMetricsEndpoints"]] == ["metrics"] and "metrics" in ports
    assert not by_kind(helm.template(UMBRELLA), "PodMonitor")
