"""The local Kubernetes itself (deploy/k8s-local/cluster.sh): version, fake nodes, workloads under kwok, RBAC."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # k8s_support sits beside this file (importlib import mode)
from k8s_support import K8sCluster, run  # noqa: E402

K8S_VERSION = "v1.32.13"
IMAGE = "registry.k8s.io/pause:3.10"  # kwok runs no containers: any image name works


@pytest.fixture(scope="module")
def namespace(cluster: K8sCluster) -> Iterator[str]:
    name = f"smoke-{uuid.uuid4().hex[:8]}"
    cluster.run_kubectl("create", "namespace", name)
    # Pods are admitted only once the namespace's default ServiceAccount exists.
    cluster.run_kubectl("wait", "-n", name, "--for=create", "serviceaccount/default", "--timeout=60s")
    yield name
    cluster.run_kubectl("delete", "namespace", name, "--wait=false", check=False)


def test_server_version(cluster: K8sCluster) -> None:
    version = json.loads(cluster.run_kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"] == K8S_VERSION
    assert version["clientVersion"]["gitVersion"] == K8S_VERSION


def test_fake_node_ready(cluster: K8sCluster) -> None:
    nodes = json.loads(cluster.run_kubectl("get", "nodes", "-l", "type=kwok", "-o", "json").stdout)["items"]
    assert nodes, "no node labelled type=kwok"
    for node in nodes:
        ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}.get("Ready")
        assert ready == "True", node["status"]["conditions"]
        assert node["metadata"]["annotations"]["kwok.x-k8s.io/node"] == "fake"
        assert int(node["status"]["allocatable"]["cpu"]) >= 32
        assert not node["spec"].get("taints"), node["spec"]["taints"]


def test_deployment_rolls_out(cluster: K8sCluster, namespace: str) -> None:
    manifest = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "pause", "namespace": namespace},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "pause"}},
            "template": {
                "metadata": {"labels": {"app": "pause"}},
                "spec": {"containers": [{"name": "pause", "image": IMAGE,
                                         "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]},
            },
        },
    }
    cluster.run_kubectl("apply", "-f", "-", input=json.dumps(manifest))
    cluster.run_kubectl("rollout", "status", "-n", namespace, "deployment/pause", "--timeout=60s", timeout=90)
    pods = json.loads(cluster.run_kubectl("get", "pods", "-n", namespace, "-l", "app=pause", "-o", "json").stdout)
    phases = sorted(p["status"]["phase"] for p in pods["items"])
    assert phases == ["Running", "Running"]
    assert all(p["spec"]["nodeName"].startswith("kwok-node-") for p in pods["items"])


def test_job_completes(cluster: K8sCluster, namespace: str) -> None:
    manifest = {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "once", "namespace": namespace},
        "spec": {
            "backoffLimit": 0,
            "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "once", "image": IMAGE}]}},
        },
    }
    cluster.run_kubectl("apply", "-f", "-", input=json.dumps(manifest))
    cluster.run_kubectl("wait", "-n", namespace, "--for=condition=complete", "job/once", "--timeout=60s", timeout=90)
    job = json.loads(cluster.run_kubectl("get", "job", "-n", namespace, "once", "-o", "json").stdout)
    assert job["status"]["succeeded"] == 1


def test_rbac_denies_unprivileged_service_account(cluster: K8sCluster) -> None:
    sa = "system:serviceaccount:default:default"
    # Impersonated by the admin...
    denied = cluster.run_kubectl("auth", "can-i", f"--as={sa}", "list", "secrets", check=False)
    assert (denied.returncode, denied.stdout.strip()) == (1, "no"), denied
    allowed = cluster.run_kubectl("auth", "can-i", "list", "secrets", check=False)
    assert (allowed.returncode, allowed.stdout.strip()) == (0, "yes"), allowed

    # ...and with a real token of that ServiceAccount (signed with the service-account key): authenticated, not allowed.
    token = cluster.run_kubectl("create", "token", "default", "-n", "default", "--duration=10m").stdout.strip()
    as_sa = [str(cluster.kubectl), "--kubeconfig=/dev/null", f"--server={cluster.server}",
             f"--certificate-authority={cluster.ca_file}", f"--token={token}"]
    whoami = run([*as_sa, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"])
    assert whoami.stdout.strip() == sa
    listed = run([*as_sa, "get", "secrets", "-n", "default"], check=False)
    assert listed.returncode != 0
    assert "forbidden" in listed.stderr.lower(), listed.stderr
