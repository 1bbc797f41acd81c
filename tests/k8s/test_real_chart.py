"""The whole umbrella chart (helm/recsys) on the real node (deploy/k8s-local/node.sh): Recommend through the
gateway's Service answers ranked items from the model its own train hook Job trained.

The node runs with its cluster DNS (CoreDNS on the node IP 10.244.0.1:53, node.sh with RECSYS_NODE_DNS=1; needs
`deploy/k8s-local/build.sh coredns`): the services find each other by Service name (rs-features:50052, ...).
The six locally built images are imported into the node's containerd (imagePullPolicy Never). Kafka
(deploy/local/kafka.sh) and Redis (deploy/local/redis.sh) run as processes inside the node's network namespace,
bound to the node IP that pods reach over the bridge, and the chart uses them in external mode. The artifacts
PVC binds to a hostPath PersistentVolume (storage class recsys-real-node: static binding, no provisioner) under
var/k8s/node/volumes, owned by uid 10001 (fsGroup does not apply to hostPath). Every workload and hook Job gets
nodeSelector type=real, the node's toleration and small CPU requests (a 2-core node), ranking runs as a
Deployment (a RayService needs KubeRay), one replica each, and the train hook uses a 20k-interaction dataset.

Then: helm install (it returns once the post-install hooks train and materialize have completed), every
Deployment rolls out, a pod resolves a Service by its full and short names, and Recommend through the gateway's
ClusterIP (grpcurl from the node's netns) is not degraded, has a model_version and a `rank` hop with status ok.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # k8s_support sits beside this file (importlib import mode)
from k8s_support import (  # noqa: E402
    HELM,
    REPO,
    K8sCluster,
    helm_env,
    in_node_netns,
    node_sh,
    node_up,
    run,
    tail,
    wait_until,
)

CHART = REPO / "helm" / "recsys"
NODE_NAME = os.environ.get("RECSYS_NODE_NAME", "recsys-node-0")
NODE_IP = "10.244.0.1"
NAMESPACE = "recsys-real-chart"
RELEASE = "rs"
TAINT_KEY = "recsys.dev/real-node"
KAFKA_PORT, KAFKA_CONTROLLER_PORT, REDIS_PORT = 9092, 9093, 6390
REDIS_PASSWORD = "real-node-redis"
STORAGE_CLASS = "recsys-real-node"
IMAGES = [f"ghcr.io/recsys/recsys-{c}:0.1.0" for c in ("gateway", "features", "candidates", "ranking", "monitoring",
                                                       "jobs")]
SERVICES = ("features", "candidates", "ranking", "monitoring", "gateway")
# A first `up` imports the six images (the five big ones share ~6.7 GB of layers) into the node's containerd.
NODE_UP_TIMEOUT = 1800

pytestmark = pytest.mark.timeout(1500, func_only=True)


def values() -> dict:
    sched = {"nodeSelector": {"type": "real"},
             "tolerations": [{"key": TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}]}

    def resources(memory_limit: str) -> dict:
        return {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": memory_limit}}

    def service(memory_limit: str) -> dict:
        return {"replicas": 1, "autoscaling": {"enabled": False}, "resources": resources(memory_limit), **sched}

    return {
        "global": {"image": {"pullPolicy": "Never"},
                   "kafka": {"mode": "external", "bootstrap": f"{NODE_IP}:{KAFKA_PORT}"},
                   "redis": {"mode": "external", "address": f"{NODE_IP}:{REDIS_PORT}"}},
        "secrets": {"redis": {"password": REDIS_PASSWORD}},
        "artifacts": {"size": "1Gi", "storageClassName": STORAGE_CLASS},
        "features": service("2Gi"),
        "gateway": service("1Gi"),
        "monitoring": {**service("1Gi"), "persistence": {"enabled": False}},
        "candidates": {**service("3Gi"), "embeddedIndex": {"resources": resources("3Gi")}},
        "ranking": {**service("4Gi"), "mode": "deployment"},
        "jobs": {**sched, "resources": resources("4Gi"), "definitions": {"train": {"steps": [
            {"name": "data", "args": ["data", "generate", "--out", "/var/lib/recsys/artifacts/data/current",
                                      "--interactions", "20000", "--force"]},
            {"name": "train", "args": ["train", "--data", "/var/lib/recsys/artifacts/data/current",
                                       "--out", "/var/lib/recsys/artifacts/models", "--quiet"]}]}}},
        "eventlog": {**sched, "resources": resources("1Gi")},
        "cronJobs": {"batch-inference": {"enabled": False}, "retrain": {"enabled": False},
                     "canary": {"enabled": False}},
    }


NODE_ENV = {"RECSYS_NODE_DNS": "1", "RECSYS_NODE_IMAGES": " ".join(IMAGES), "RECSYS_NODE_UP_TIMEOUT": "300"}


def pod_logs(node_dir: Path, pod: dict, lines: int = 30) -> str:
    """Every container's log of a pod from the kubelet's pod-log folder (kubectl logs cannot reach the kubelet)."""
    meta = pod["metadata"]
    folder = node_dir / "pod-logs" / f"{meta['namespace']}_{meta['name']}_{meta['uid']}"
    out = []
    for container in sorted(folder.glob("*")) if folder.exists() else []:
        text = []
        for path in sorted(container.glob("*.log")):
            for line in path.read_text(errors="replace").splitlines():
                parts = line.split(" ", 3)
                text.append(parts[3] if len(parts) == 4 else line)
        out.append(f"--- {meta['name']}/{container.name}:\n" + tail("\n".join(text), lines))
    return "\n".join(out)


@pytest.fixture(scope="module")
def chart_node(cluster: K8sCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """The real node with DNS and the images, Kafka and Redis in its netns, and the artifacts volume."""
    coredns = cluster.bin_dir / "coredns"
    assert coredns.exists(), f"{coredns} is missing: deploy/k8s-local/build.sh coredns"
    t0 = time.monotonic()
    node_up(NODE_UP_TIMEOUT, env=NODE_ENV)
    timings = {"node_up": round(time.monotonic() - t0, 1)}
    node_dir = cluster.state_dir / "node"
    work = tmp_path_factory.mktemp("real-chart")
    kafka_dir, redis_dir = work / "kafka", work / "redis"
    volume = node_dir / "volumes" / f"{NAMESPACE}-artifacts"
    local = REPO / "deploy" / "local"
    try:
        t0 = time.monotonic()
        started = in_node_netns("bash", str(local / "kafka.sh"), "start", "--host", NODE_IP, "--port", str(KAFKA_PORT),
                                "--controller-port", str(KAFKA_CONTROLLER_PORT), "--state-dir", str(kafka_dir),
                                "--watch-pid", str(os.getpid()), timeout=240)
        assert started.returncode == 0, started.stdout + started.stderr
        # A password: Redis's protected mode refuses clients from other addresses (the pods) without one.
        started = in_node_netns("bash", str(local / "redis.sh"), "start", "--host", NODE_IP, "--port", str(REDIS_PORT),
                                "--password", REDIS_PASSWORD, "--state-dir", str(redis_dir),
                                "--watch-pid", str(os.getpid()), timeout=60)
        assert started.returncode == 0, started.stdout + started.stderr
        timings["kafka_redis"] = round(time.monotonic() - t0, 1)

        shutil.rmtree(volume, ignore_errors=True)
        volume.mkdir(parents=True)
        os.chown(volume, 10001, 10001)
        pv = {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": f"{NAMESPACE}-artifacts"},
              "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                       "storageClassName": STORAGE_CLASS, "persistentVolumeReclaimPolicy": "Retain",
                       "hostPath": {"path": str(volume), "type": "Directory"},
                       "claimRef": {"namespace": NAMESPACE, "name": f"{RELEASE}-artifacts"},
                       "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                           {"key": "kubernetes.io/hostname", "operator": "In", "values": [NODE_NAME]}]}]}}}}
        cluster.run_kubectl("apply", "-f", "-", input=json.dumps(pv))
        yield {"node_dir": node_dir, "volume": volume, "work": work, "timings": timings}
    finally:
        if os.environ.get("RECSYS_K8S_KEEP") != "1":
            cluster.run_kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=true",
                                "--timeout=120s", check=False, timeout=150)
            cluster.run_kubectl("delete", "pv", f"{NAMESPACE}-artifacts", "--ignore-not-found", check=False)
            for script, state in (("kafka.sh", kafka_dir), ("redis.sh", redis_dir)):
                subprocess.run(["bash", str(local / script), "stop", "--state-dir", str(state)], capture_output=True,
                               timeout=90)
            down = node_sh("down", timeout=300, env=NODE_ENV)
            print(f"\nnode.sh down (exit {down.returncode}):\n{tail(down.stderr, 20)}")
            shutil.rmtree(volume, ignore_errors=True)


def test_umbrella_chart_on_the_real_node_recommends_ranked_items(cluster: K8sCluster, chart_node: dict):
    import pyarrow.parquet as pq

    tools = cluster.bin_dir
    node_dir, timings = chart_node["node_dir"], chart_node["timings"]
    (chart_node["work"] / "values.json").write_text(json.dumps(values()))
    env = helm_env(cluster.state_dir / "helm", cluster.env)
    helm = [str(HELM)]
    cluster.run_kubectl("create", "namespace", NAMESPACE)

    def pods() -> list[dict]:
        return json.loads(cluster.run_kubectl("get", "pods", "-n", NAMESPACE, "-o", "json").stdout)["items"]

    def diagnostics() -> str:
        events = cluster.run_kubectl("get", "events", "-n", NAMESPACE, "--sort-by=.lastTimestamp",
                                     check=False).stdout
        listing = cluster.run_kubectl("get", "pods", "-n", NAMESPACE, "-o", "wide", check=False).stdout
        return f"{listing}\n{tail(events, 30)}\n" + "\n".join(pod_logs(node_dir, p) for p in pods())

    try:
        t0 = time.monotonic()
        # Returns when the post-install hooks (train, materialize) have completed; the Deployments start meanwhile.
        install = run([*helm, "install", RELEASE, str(CHART), "-n", NAMESPACE, "-f",
                       str(chart_node["work"] / "values.json"), "--timeout", "15m"],
                      env=env, check=False, timeout=960)
        timings["helm_install_with_hooks"] = round(time.monotonic() - t0, 1)
        if install.returncode != 0:
            pytest.fail(f"helm install: {install.stdout}{install.stderr}\n{diagnostics()}", pytrace=False)
        for service in (*SERVICES, "eventlog"):  # the event log writer: a Deployment of the jobs image
            rollout = cluster.run_kubectl("rollout", "status", "-n", NAMESPACE, f"deployment/{RELEASE}-{service}",
                                          "--timeout=600s", check=False, timeout=620)
            if rollout.returncode != 0:
                pytest.fail(f"{service} did not roll out: {rollout.stdout}{rollout.stderr}\n{diagnostics()}",
                            pytrace=False)
        timings["all_ready"] = round(time.monotonic() - t0, 1)
        running = pods()
        assert all(p["spec"]["nodeName"] == NODE_NAME for p in running)

        # Cluster DNS: a pod resolves a Service by its full and its short name (search domains from the kubelet).
        gateway_pod = next(p["metadata"]["name"] for p in running if "-gateway-" in p["metadata"]["name"])
        svc = json.loads(cluster.run_kubectl("get", "service", "-n", NAMESPACE, f"{RELEASE}-features",
                                             "-o", "json").stdout)
        probe = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "dns-check", "namespace": NAMESPACE},
                 "spec": {"nodeSelector": {"type": "real"}, "restartPolicy": "Never",
                          "tolerations": [{"key": TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}],
                          "securityContext": {"runAsUser": 10001, "runAsNonRoot": True},
                          "containers": [{"name": "main", "image": IMAGES[0], "imagePullPolicy": "Never",
                                          "command": ["python", "-c", "import socket; print('RESOLVED', "
                                                      f"socket.gethostbyname('{RELEASE}-features.{NAMESPACE}.svc"
                                                      f".cluster.local'), socket.gethostbyname('{RELEASE}-features'))"],
                                          "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}}}]}}
        cluster.run_kubectl("apply", "-f", "-", input=json.dumps(probe))

        def probe_done() -> dict | None:
            pod = json.loads(cluster.run_kubectl("get", "pod", "-n", NAMESPACE, "dns-check", "-o", "json").stdout)
            return pod if pod["status"].get("phase") in ("Succeeded", "Failed") else None

        pod = wait_until("the dns-check pod", probe_done, timeout=120)
        log = pod_logs(node_dir, pod)
        ip = svc["spec"]["clusterIP"]
        assert pod["status"]["phase"] == "Succeeded" and f"RESOLVED {ip} {ip}" in log, log
        print(f"\nDNS: {RELEASE}-features and its FQDN resolve to {ip} in a pod ({gateway_pod} runs beside it)")

        # Recommend through the gateway's ClusterIP, for a user of the trained dataset.
        interactions = chart_node["volume"] / "data" / "current" / "interactions.parquet"
        user = str(pq.read_table(interactions, columns=["user_id"]).column(0)[0])
        gw = json.loads(cluster.run_kubectl("get", "service", "-n", NAMESPACE, f"{RELEASE}-gateway",
                                            "-o", "json").stdout)
        addr = f"{gw['spec']['clusterIP']}:50051"
        answers = []

        def full_answer() -> dict | None:
            done = in_node_netns(str(tools / "grpcurl"), "-plaintext", "-max-time", "20", "-d",
                                 json.dumps({"user_id": user, "k": 10}), addr, "recsys.v1.RecommendService/Recommend")
            if done.returncode != 0:
                answers.append(done.stdout + done.stderr)
                return None
            reply = json.loads(done.stdout)
            answers.append(reply)
            full = not reply.get("degraded") and len(reply.get("items", [])) == 10 and reply.get("model_version")
            return reply if full else None

        t1 = time.monotonic()
        reply = wait_until("a Recommend that is not degraded", full_answer, timeout=300, interval=3,
                           last=lambda: answers[-1] if answers else None)
        timings["first_full_recommend"] = round(time.monotonic() - t1, 1)
        hops = {t["hop"]: t["status"] for t in reply["timings"]}
        assert hops.get("rank") == "ok", reply["timings"]
        assert len({i["item_id"] for i in reply["items"]}) == 10
        print(f"Recommend via ClusterIP {addr} for {user}: model {reply['model_version']}, "
              f"{[i['item_id'] for i in reply['items']][:5]}..., hops {hops}")
        print(f"timings (s): {timings}")
    finally:
        if os.environ.get("RECSYS_K8S_KEEP") != "1":
            run([*helm, "uninstall", RELEASE, "-n", NAMESPACE, "--wait", "--timeout", "3m"], env=env,
                check=False, timeout=240)
