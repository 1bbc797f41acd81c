"""The charts' security settings, offline: TLS Secrets mounted (cert-manager Certificates as an option), TLS
probes, authentication on the public services only, the Kafka CA for SSL listeners, and the refusal of
half-made settings. Renders with helm and validates against the Kubernetes 1.31 / CRD schemas."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # helm_support sits beside this file (importlib import mode)
from helm_support import (  # noqa: E402
    UMBRELLA,
    Helm,
    HelmError,
    by_kind,
    named,
    offline_helm,
    pod_templates,
    validation_errors,
)

SECURED = [
    "global.tls.enabled=true",
    "global.tls.certManager.enabled=true",
    "global.tls.certManager.issuerRef.name=recsys-ca",
    "global.auth.mode=any",
    "global.auth.existingSecret=recsys-api-keys",
    "global.auth.jwtIssuer=https://idp.example",
    "global.kafka.securityProtocol=SASL_SSL",
    "ranking.mode=deployment",
]
SERVICES = ("gateway", "features", "candidates", "ranking", "monitoring")
# Workloads with a TLS key pair: the services, and the jobs as clients (the canary CronJob calls monitoring).
TLS_WORKLOADS = (*SERVICES, "jobs")


@pytest.fixture(scope="module")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    root = tmp_path_factory.mktemp("helm-security")
    return offline_helm(root)


@pytest.fixture(scope="module")
def secured(helm):
    return helm.template(UMBRELLA, sets=SECURED)


def env_of(manifests, component: str) -> dict[str, str]:
    return named(manifests, "ConfigMap")[f"rs-{component}-env"]["data"]


def test_secured_render_lints_and_validates(helm, secured):
    helm.lint(UMBRELLA, sets=SECURED)
    assert [error for m in secured for error in validation_errors(m)] == []


def test_each_service_gets_a_certificate_mounted_from_its_secret(secured):
    certificates = named(secured, "Certificate")
    assert set(certificates) == {f"rs-{s}" for s in TLS_WORKLOADS}
    gateway = certificates["rs-gateway"]["spec"]
    assert gateway["secretName"] == "rs-gateway-tls" and gateway["issuerRef"]["name"] == "recsys-ca"
    assert {"rs-gateway", "rs-gateway.recsys.svc", "localhost"} <= set(gateway["dnsNames"])
    assert {"server auth", "client auth"} <= set(gateway["usages"])
    for t in pod_templates(secured):
        if t.component not in TLS_WORKLOADS:
            assert not any(v["name"] == "tls" for v in t.spec.get("volumes", [])), t.owner
            continue
        volumes = {v["name"]: v for v in t.spec["volumes"]}
        assert volumes["tls"]["secret"]["secretName"] == f"rs-{t.component}-tls", t.owner
        for container in t.containers():
            mounts = {m["name"]: m for m in container["volumeMounts"]}
            assert mounts["tls"]["mountPath"] == "/etc/recsys/tls" and mounts["tls"]["readOnly"] is True
        env = env_of(secured, t.component)
        assert env["RECSYS_TLS_CERT"] == "/etc/recsys/tls/tls.crt" and env["RECSYS_TLS_CA"] == "/etc/recsys/tls/ca.crt"
        # Ray Serve's proxy (ranking) has no TLS: everybody calls it in plaintext.
        assert env["RECSYS_TLS_PLAINTEXT_TARGETS"] == "rs-ranking:50054"
    assert env_of(secured, "features")["RECSYS_TLS_CLIENT_AUTH"] == "require"
    assert env_of(secured, "gateway")["RECSYS_TLS_CLIENT_AUTH"] == "none"  # public: callers use API keys


def test_probes_of_tls_services_use_the_tls_health_check(secured):
    deployments = named(secured, "Deployment")
    for component in SERVICES:
        container = deployments[f"rs-{component}"]["spec"]["template"]["spec"]["containers"][0]
        probe = container["readinessProbe"]
        if component == "ranking":
            assert "grpc" in probe  # Serve's proxy: plaintext
            continue
        command = probe["exec"]["command"]
        assert command[:3] == ["python", "-m", "recsys.common.healthcheck"]
        assert command[command.index("--server-name") + 1] == f"rs-{component}"


def test_only_the_public_services_authenticate(secured):
    for component in ("gateway", "monitoring"):
        env = env_of(secured, component)
        assert env["RECSYS_AUTH_MODE"] == "any"
        assert env["RECSYS_AUTH_KEYS_FILE"] == "/etc/recsys/auth/keys.json"
        assert env["RECSYS_AUTH_JWT_SECRET_FILE"] == "/etc/recsys/auth/jwt-secret"
        assert env["RECSYS_AUTH_JWT_ISSUER"] == "https://idp.example"
        volumes = {v["name"]: v for v in named(secured, "Deployment")[f"rs-{component}"]["spec"]["template"]["spec"]
                   ["volumes"]}
        assert volumes["auth"]["secret"]["secretName"] == "recsys-api-keys"
    for component in ("features", "candidates", "ranking", "jobs"):
        assert env_of(secured, component)["RECSYS_AUTH_MODE"] == "off"


def test_kafka_clients_trust_the_cluster_ca(secured):
    for t in pod_templates(secured):
        if "recsys.io/kafka-client" not in t.labels:
            continue
        volumes = {v["name"]: v for v in t.spec["volumes"]}
        assert volumes["kafka-ca"]["secret"]["secretName"] == "rs-kafka-cluster-ca-cert", t.owner
    assert env_of(secured, "jobs")["RECSYS_KAFKA_SSL_CAFILE"] == "/etc/recsys/kafka-ca/ca.crt"
    listener = by_kind(secured, "Kafka")[0]["spec"]["kafka"]["listeners"][0]
    assert listener["tls"] is True and listener["authentication"]["type"] == "scram-sha-512"


def test_defaults_stay_plaintext_and_open(helm):
    manifests = helm.template(UMBRELLA)
    assert not by_kind(manifests, "Certificate")
    env = env_of(manifests, "gateway")
    assert env["RECSYS_TLS_CERT"] == "" and env["RECSYS_AUTH_MODE"] == "off" and env["RECSYS_KAFKA_SSL_CAFILE"] == ""


def test_shared_secret_replaces_certificates(helm):
    manifests = helm.template(UMBRELLA, sets=["global.tls.enabled=true", "global.tls.secretName=recsys-tls"])
    assert not by_kind(manifests, "Certificate")
    volumes = {v["name"]: v for v in named(manifests, "Deployment")["rs-features"]["spec"]["template"]["spec"]
               ["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == "recsys-tls"


@pytest.mark.parametrize("sets, message", [
    (["global.auth.mode=api_key"], "global.auth.existingSecret is required"),
    (["global.tls.enabled=true", "global.tls.certManager.enabled=true"], "issuerRef.name is required"),
    (["global.auth.mode=sometimes"], "global.auth.mode must be one of"),
    (["global.tls.clientAuth=optional"], "global.tls.clientAuth must be one of"),
])
def test_half_made_settings_are_refused(helm, sets, message):
    with pytest.raises(HelmError) as failure:
        helm.template(UMBRELLA, sets=sets)
    assert message in str(failure.value), str(failure.value)
