"""The umbrella chart on a real kube-apiserver: install, upgrade, rollback, uninstall (kwok runs the pods).

The vendored upstream CRDs (deploy/k8s-local/crds) are applied first, so every custom resource of the chart is
validated server-side as on a cluster. Then, for the default values and for values-production.yaml, each in
its own namespace: `helm install --wait` (every object admitted, RBAC included; the post-install hook Jobs
complete in weight order; every Deployment and StatefulSet rolls out), NetworkPolicies and PodDisruptionBudgets
select the pods they mean to, `helm upgrade` with a changed value rolls the gateway, `helm rollback` restores
revision 1, and `helm uninstall` leaves only what the chart keeps on purpose.

Claims of kwok's default StorageClass are provisioned by its volume stages; for each class the values name
(production: gp3, efs-sc) the fixture adds the class and PersistentVolumes of it, as a cloud cluster has them.
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # k8s_support sits beside this file (importlib import mode)
from k8s_support import HELM, REPO, K8sCluster, helm_env, run  # noqa: E402

CHART = REPO / "helm" / "recsys"
CRDS = REPO / "deploy" / "k8s-local" / "crds"
RELEASE = "rs"
VARIANTS = {"default": [], "production": ["-f", str(CHART / "values-production.yaml")]}
# Objects a `helm uninstall` leaves on purpose: PVCs annotated helm.sh/resource-policy: keep (the artifacts and
# the monitoring state), and hook Jobs (Helm deletes hooks only by their hook-delete-policy, here
# before-hook-creation: the next install replaces them).
KEPT_KINDS = {"PersistentVolumeClaim", "Job"}
pytestmark = pytest.mark.timeout(900, func_only=True)


def helm(cluster: K8sCluster, *args: str, timeout: float = 600) -> str:
    return run([str(HELM), *args], env=helm_env(cluster.state_dir / "helm", cluster.env), timeout=timeout).stdout


def get(cluster: K8sCluster, *args: str) -> list[dict]:
    return json.loads(cluster.run_kubectl("get", *args, "-o", "json").stdout)["items"]


@pytest.fixture(scope="module")
def crds(cluster: K8sCluster) -> list[str]:
    names = []
    for path in sorted(CRDS.glob("*/*.yaml")):
        out = cluster.run_kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path), "-o", "name")
        names += out.stdout.split()
    cluster.run_kubectl("wait", "--for=condition=Established", "--timeout=60s", *names)
    return names


@pytest.fixture(scope="module")
def storage_classes(cluster: K8sCluster) -> Iterator[None]:
    """The StorageClasses the values name (production: gp3, efs-sc), each with PersistentVolumes made ahead, as a
    cluster administrator provides them (kwok's provisioner serves only its own default class)."""
    existing = {c["metadata"]["name"] for c in get(cluster, "storageclass")}
    names = set()
    for args in VARIANTS.values():
        rendered = helm(cluster, "template", RELEASE, str(CHART), *args)
        names |= set(re.findall(r"storageClassName: \"?([\w.-]+)", rendered))
    created = sorted(names - existing)
    for name in created:
        sc = {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": name},
              "provisioner": "kubernetes.io/no-provisioner", "volumeBindingMode": "Immediate"}
        cluster.run_kubectl("apply", "-f", "-", input=json.dumps(sc))
        for i in range(4):
            pv = {"apiVersion": "v1", "kind": "PersistentVolume",
                  "metadata": {"name": f"recsys-test-{name}-{i}", "labels": {"recsys-test": "1"}},
                  "spec": {"storageClassName": name, "capacity": {"storage": "500Gi"},
                           "accessModes": ["ReadWriteOnce", "ReadWriteMany"], "persistentVolumeReclaimPolicy": "Retain",
                           "hostPath": {"path": f"/tmp/recsys-test-{name}-{i}"}}}
            cluster.run_kubectl("apply", "-f", "-", input=json.dumps(pv))
    yield
    cluster.run_kubectl("delete", "pv", "-l", "recsys-test=1", "--wait=false", check=False)
    for name in created:
        cluster.run_kubectl("delete", "storageclass", name, check=False)


@contextmanager
def load_balancer_controller(cluster: K8sCluster, namespace: str) -> Iterator[None]:
    """What a cloud's load-balancer controller does, which `helm --wait` waits for: give each Service of type
    LoadBalancer an ingress address in its status (192.0.2.0/24, TEST-NET-1: written to a status field only)."""
    stop = threading.Event()

    def assign() -> None:
        while not stop.wait(1.0):
            listed = run([str(cluster.kubectl), "get", "services", "-n", namespace, "-o", "json"], env=cluster.env,
                         check=False, timeout=30)
            if listed.returncode != 0:
                continue
            for index, svc in enumerate(json.loads(listed.stdout)["items"]):
                if svc["spec"]["type"] == "LoadBalancer" and not svc["status"].get("loadBalancer", {}).get("ingress"):
                    status = {"status": {"loadBalancer": {"ingress": [{"ip": f"192.0.2.{10 + index}"}]}}}
                    run([str(cluster.kubectl), "patch", "service", "-n", namespace, svc["metadata"]["name"],
                         "--subresource=status", "--type=merge", "-p", json.dumps(status)], env=cluster.env,
                        check=False, timeout=30)

    thread = threading.Thread(target=assign, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=30)


@pytest.fixture(scope="module", params=list(VARIANTS))
def release(request: pytest.FixtureRequest, cluster: K8sCluster, crds: list[str],
            storage_classes: None) -> Iterator[dict]:
    """The chart installed with --wait in a namespace of its own; yields what the install took."""
    variant = request.param
    namespace = f"recsys-{variant}"
    # A namespace left by an interrupted run (the cluster may be kept running between runs): start clean.
    cluster.run_kubectl("delete", "namespace", namespace, "--ignore-not-found", "--timeout=120s")
    started = time.monotonic()
    with load_balancer_controller(cluster, namespace):
        helm(cluster, "install", RELEASE, str(CHART), "-n", namespace, "--create-namespace", *VARIANTS[variant],
             "--wait", "--wait-for-jobs", "--timeout", "8m")
    info = {"variant": variant, "namespace": namespace, "install_s": round(time.monotonic() - started, 1)}
    yield info
    run([str(cluster.kubectl), "delete", "namespace", namespace, "--wait=false"], env=cluster.env, check=False)


def test_every_object_is_admitted_and_every_workload_rolls_out(cluster: K8sCluster, release: dict):
    ns = release["namespace"]
    manifest = helm(cluster, "get", "manifest", RELEASE, "-n", ns)
    expected = {(doc.split("\nkind: ", 1)[1].split("\n", 1)[0]) for doc in manifest.split("\n---") if "\nkind: " in doc}
    assert {"Deployment", "Service", "NetworkPolicy", "PodDisruptionBudget", "Kafka", "RayService"} <= expected
    for kind in ("deployment", "statefulset"):
        for obj in get(cluster, kind, "-n", ns):
            name = f"{kind}/{obj['metadata']['name']}"
            cluster.run_kubectl("rollout", "status", "-n", ns, name, "--timeout=120s")
            status = cluster.run_kubectl("get", "-n", ns, name, "-o", "json")
            spec_status = json.loads(status.stdout)
            assert spec_status["status"].get("readyReplicas") == spec_status["spec"]["replicas"], name
    for kind in ("kafka", "rayservice", "kafkatopic"):  # custom resources accepted by their CRD schemas
        assert get(cluster, kind, "-n", ns), f"no {kind} in {ns}"
    print(f"\n{release['variant']}: helm install --wait took {release['install_s']} s")


def test_jobs_complete_and_hooks_run_in_weight_order(cluster: K8sCluster, release: dict):
    """Every Job of the release completes (helm --wait-for-jobs); the default values' post-install hooks
    (train, materialize) run one after the other in weight order. Production runs its Jobs without hooks. Jobs a
    CronJob started on its schedule while the tests ran (the canary's, every 5 minutes) are not the release's:
    left out (one started at 02:00 during a run was still active on the kwok node)."""
    jobs = [j for j in get(cluster, "jobs", "-n", release["namespace"])
            if not any(o.get("kind") == "CronJob" for o in j["metadata"].get("ownerReferences") or [])]
    assert jobs, "no Job in the release"
    for job in jobs:
        assert job["status"].get("succeeded") == 1, (job["metadata"]["name"], job["status"])
    hooks = [j for j in jobs if "helm.sh/hook" in (j["metadata"].get("annotations") or {})]
    if release["variant"] == "default":
        assert len(hooks) >= 2, [j["metadata"]["name"] for j in jobs]
    hooks.sort(key=lambda j: int(j["metadata"]["annotations"]["helm.sh/hook-weight"]))
    for before, after in zip(hooks, hooks[1:], strict=False):
        assert before["status"]["completionTime"] <= after["status"]["startTime"], (
            f"{after['metadata']['name']} started before {before['metadata']['name']} completed")


def _selected(cluster: K8sCluster, namespace: str, selector: dict) -> list[str]:
    labels = ",".join(f"{k}={v}" for k, v in (selector.get("matchLabels") or {}).items())
    for expr in selector.get("matchExpressions") or []:
        labels += ("," if labels else "") + f"{expr['key']} {expr['operator'].lower()} ({','.join(expr['values'])})"
    return [p["metadata"]["name"] for p in get(cluster, "pods", "-n", namespace, *(["-l", labels] if labels else []))]


def test_network_policies_and_disruption_budgets_select_their_pods(cluster: K8sCluster, release: dict):
    ns = release["namespace"]
    for policy in get(cluster, "networkpolicies", "-n", ns):
        selector = policy["spec"]["podSelector"]
        if not selector:
            continue  # an empty selector means every pod of the namespace
        component = (selector.get("matchLabels") or {}).get("app.kubernetes.io/component")
        if component in ("kafka", "ranking"):
            continue  # pods of the Strimzi and KubeRay operators, not running on this cluster
        assert _selected(cluster, ns, selector), f"NetworkPolicy {policy['metadata']['name']} selects no pod"
    deadline = time.monotonic() + 60
    for pdb in get(cluster, "pdb", "-n", ns):
        name = pdb["metadata"]["name"]
        if "ranking" in name:
            continue  # selects the RayService's pods, which the KubeRay operator would create
        while pdb["status"].get("expectedPods", 0) == 0 and time.monotonic() < deadline:
            time.sleep(2)  # the disruption controller computes it
            pdb = json.loads(cluster.run_kubectl("get", "pdb", "-n", ns, name, "-o", "json").stdout)
        assert pdb["status"].get("expectedPods", 0) >= 1, f"PodDisruptionBudget {name} selects no pod"
        assert pdb["status"]["expectedPods"] == len(_selected(cluster, ns, pdb["spec"]["selector"]))


def test_ray_jobs_are_admitted_by_the_kuberay_crd(cluster: K8sCluster, release: dict):
    """The train and batch-recommend jobs as KubeRay RayJobs (jobs.rayJobs): rendered with both definitions on and
    created in the release's namespace, the real API server admits them against the vendored KubeRay CRD, spec
    intact. No KubeRay operator runs here, so they are created, not run; they are deleted again after."""
    ns = release["namespace"]
    sets = [f"--set=jobs.rayJobs.definitions.{name}.enabled=true" for name in ("train", "batch-recommend")]
    rendered = helm(cluster, "template", RELEASE, str(CHART), "-n", ns, *VARIANTS[release["variant"]], *sets,
                    "--show-only", "templates/rayjobs.yaml")
    created = cluster.run_kubectl("create", "-n", ns, "-f", "-", "-o", "name", input=rendered).stdout.split()
    try:
        assert sum(name.startswith("rayjob") for name in created) == 2, created  # (and their NetworkPolicy)
        jobs = {j["metadata"]["labels"]["recsys.io/job"]: j for j in get(cluster, "rayjobs", "-n", ns)}
        assert set(jobs) == {"train", "batch-recommend"}
        assert jobs["train"]["spec"]["entrypoint"].startswith('recsys "train" ')
        assert "--ray-address auto --workers 2" in jobs["train"]["spec"]["entrypoint"]
        workers = jobs["batch-recommend"]["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
        assert workers["replicas"] == 2 and workers["template"]["spec"]["containers"][0]["image"]
    finally:
        cluster.run_kubectl("delete", "-n", ns, "--wait=false", *created, check=False)


def test_upgrade_rolls_the_gateway_and_rollback_restores_it(cluster: K8sCluster, release: dict):
    ns = release["namespace"]
    gateway = next(d for d in get(cluster, "deployments", "-n", ns)
                   if d["metadata"]["labels"].get("app.kubernetes.io/component") == "gateway")
    name = gateway["metadata"]["name"]
    before = gateway["spec"]["template"]["metadata"]["annotations"]["checksum/env"]
    sets = [*VARIANTS[release["variant"]], "--reuse-values", "--set", "gateway.config.RECSYS_LOG_LEVEL=DEBUG"]
    helm(cluster, "upgrade", RELEASE, str(CHART), "-n", ns, *sets, "--wait", "--timeout", "5m")
    cluster.run_kubectl("rollout", "status", "-n", ns, f"deployment/{name}", "--timeout=120s")
    upgraded = json.loads(cluster.run_kubectl("get", "-n", ns, f"deployment/{name}", "-o", "json").stdout)
    assert upgraded["spec"]["template"]["metadata"]["annotations"]["checksum/env"] != before
    assert upgraded["metadata"]["generation"] > gateway["metadata"]["generation"]  # a rolling update happened
    replica_sets = [rs for rs in get(cluster, "replicasets", "-n", ns)
                    if rs["metadata"]["ownerReferences"][0]["name"] == name]
    assert len(replica_sets) >= 2
    helm(cluster, "rollback", RELEASE, "1", "-n", ns, "--wait", "--timeout", "5m")
    cluster.run_kubectl("rollout", "status", "-n", ns, f"deployment/{name}", "--timeout=120s")
    rolled = json.loads(cluster.run_kubectl("get", "-n", ns, f"deployment/{name}", "-o", "json").stdout)
    assert rolled["spec"]["template"]["metadata"]["annotations"]["checksum/env"] == before
    history = json.loads(helm(cluster, "history", RELEASE, "-n", ns, "-o", "json"))
    assert [h["status"] for h in history] == ["superseded", "superseded", "deployed"], history


def test_uninstall_leaves_only_what_the_chart_keeps(cluster: K8sCluster, release: dict):
    ns = release["namespace"]
    helm(cluster, "uninstall", RELEASE, "-n", ns, "--wait", "--timeout", "3m")
    kinds = ("deployments,statefulsets,services,configmaps,secrets,serviceaccounts,networkpolicies,pdb,hpa,"
             "cronjobs,jobs,persistentvolumeclaims,kafkas,kafkatopics,kafkanodepools,rayservices")
    left = get(cluster, kinds, "-n", ns, "-l", f"app.kubernetes.io/instance={RELEASE}")
    leftover = {(o["kind"], o["metadata"]["name"]) for o in left}
    assert {kind for kind, _ in leftover} <= KEPT_KINDS, leftover
    for obj in left:
        if obj["kind"] == "PersistentVolumeClaim":
            assert obj["metadata"]["annotations"].get("helm.sh/resource-policy") == "keep", obj["metadata"]
        else:
            assert "helm.sh/hook" in obj["metadata"].get("annotations", {}), obj["metadata"]
    print(f"\n{release['variant']}: left after uninstall: {sorted(leftover)}")
