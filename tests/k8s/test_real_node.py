"""Pods that really run: a real node (containerd + kubelet + kube-proxy, deploy/k8s-local/node.sh) inside a network
namespace of its own, joined to the local control plane; a Service's ClusterIP routes to both replicas.

The node (label type=real, taint recsys.dev/real-node=true:NoSchedule so that other tests' pods stay off it) runs
the locally built gateway image (imagePullPolicy Never) as the chart runs it: user 10001, read-only root file
system, an emptyDir on /tmp. Two replicas serve their pod name over HTTP behind a ClusterIP Service; requests to
the ClusterIP, from the node's network namespace and from a client Pod on the pod network, must be answered by
both replicas (kube-proxy's iptables rules, in the node's namespace only). Container output is read from the
kubelet's pod-log folder: the API server on the host cannot reach the kubelet inside the namespace, so
`kubectl logs` does not work.

Last, the chart's own gateway subchart (helm/recsys/charts/gateway, its probes, security contexts and Service as
rendered) is installed on the node, with a tiny model catalogue from a ConfigMap instead of the artifacts
volume and no other recsys service: both replicas pass the kubelet's native gRPC probes, and Recommend through
the Service's ClusterIP answers from the popularity fallback (degraded: features, candidates and ranking are
absent), checked with grpc-health-probe and grpcurl (deploy/k8s-local/build.sh tools) from the node's netns.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # k8s_support sits beside this file (importlib import mode)
from k8s_support import (  # noqa: E402
    HELM,
    NETNS,
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

GATEWAY_CHART = REPO / "helm" / "recsys" / "charts" / "gateway"
NODE_NAME = os.environ.get("RECSYS_NODE_NAME", "recsys-node-0")
NODE_UP_TIMEOUT = 900  # a first `up` imports the gateway image (~0.5 GB) into the node's containerd
NAMESPACE = "recsys-real-node"
IMAGE = "ghcr.io/recsys/recsys-gateway:0.1.0"
TAINT_KEY = "recsys.dev/real-node"

pytestmark = pytest.mark.timeout(300, func_only=True)

SERVER = """
import http.server, socket
NAME = socket.gethostname()
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = NAME.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        print("served", self.client_address[0], flush=True)
    def log_message(self, *args):
        pass
print("serving on 8080 as", NAME, flush=True)
http.server.ThreadingHTTPServer(("0.0.0.0", 8080), Handler).serve_forever()
"""

CLIENT = """
import json, os, time, urllib.request
url = "http://%s:%s/" % (os.environ["SVC_IP"], os.environ["SVC_PORT"])
seen = {}
for i in range(60):
    try:
        name = urllib.request.urlopen(url, timeout=3).read().decode()
    except Exception as exc:
        name = "error:" + type(exc).__name__
    seen[name] = seen.get(name, 0) + 1
    if i >= 19 and len([k for k in seen if not k.startswith("error:")]) >= 2:
        break
    time.sleep(0.1)
print("ANSWERS " + json.dumps(seen, sort_keys=True), flush=True)
"""


def pod_security(read_only: bool = True) -> dict:
    return {"runAsUser": 10001, "runAsGroup": 10001, "runAsNonRoot": True, "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": read_only, "capabilities": {"drop": ["ALL"]}}


def pod_spec(command: list[str], *, env: list[dict] | None = None, restart: str = "Always",
             probe: bool = False) -> dict:
    container = {
        "name": "main", "image": IMAGE, "imagePullPolicy": "Never", "command": command,
        "env": env or [], "securityContext": pod_security(),
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "256Mi"}},
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    if probe:
        container["ports"] = [{"name": "http", "containerPort": 8080}]
        container["readinessProbe"] = {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 2}
    return {
        "nodeSelector": {"type": "real"},
        "tolerations": [{"key": TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}],
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "restartPolicy": restart,
        "terminationGracePeriodSeconds": 5,
        "containers": [container],
        "volumes": [{"name": "tmp", "emptyDir": {}}],
    }


@pytest.fixture(scope="module")
def real_node(cluster: K8sCluster) -> Iterator[Path]:
    """node.sh up (a kubelet + containerd + kube-proxy in netns NETNS) for this module; down at its end.
    Yields the node's state folder."""
    node_up(NODE_UP_TIMEOUT)
    try:
        yield cluster.state_dir / "node"
    finally:
        cluster.run_kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=true",
                            "--timeout=90s", check=False, timeout=120)
        down = node_sh("down", timeout=300)
        print(f"\nnode.sh down (exit {down.returncode}):\n{tail(down.stderr, 20)}")


def pod_log(node_dir: Path, pod: dict, container: str = "main") -> str:
    """The container's log from the kubelet's pod-log folder (<ns>_<pod>_<uid>/<container>/<n>.log, CRI format)."""
    meta = pod["metadata"]
    folder = node_dir / "pod-logs" / f"{meta['namespace']}_{meta['name']}_{meta['uid']}" / container
    lines = []
    for path in sorted(folder.glob("*.log")):
        for line in path.read_text(errors="replace").splitlines():
            parts = line.split(" ", 3)  # timestamp stream tag message
            lines.append(parts[3] if len(parts) == 4 else line)
    return "\n".join(lines)


def get_json(cluster: K8sCluster, *args: str) -> dict:
    return json.loads(cluster.run_kubectl("get", "-n", NAMESPACE, *args, "-o", "json").stdout)


def test_service_on_the_real_node_routes_to_both_replicas(cluster: K8sCluster, real_node: Path):
    node = json.loads(cluster.run_kubectl("get", "node", NODE_NAME, "-o", "json").stdout)
    ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"]
    assert ready == "True" and node["metadata"]["labels"].get("type") == "real"
    node_ip = next(a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP")

    cluster.run_kubectl("create", "namespace", NAMESPACE)
    objects = [
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "echo", "namespace": NAMESPACE},
         "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "echo"}},
                  "template": {"metadata": {"labels": {"app": "echo"}},
                               "spec": pod_spec(["python", "-c", SERVER], probe=True)}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "echo", "namespace": NAMESPACE},
         "spec": {"type": "ClusterIP", "selector": {"app": "echo"},
                  "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}},
    ]
    cluster.run_kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))
    t0 = time.monotonic()
    rollout = cluster.run_kubectl("rollout", "status", "-n", NAMESPACE, "deployment/echo", "--timeout=180s",
                                  check=False, timeout=200)
    pods = get_json(cluster, "pods", "-l", "app=echo")["items"]
    if rollout.returncode != 0:
        events = cluster.run_kubectl("get", "events", "-n", NAMESPACE, check=False).stdout
        pytest.fail(f"the echo Deployment did not roll out:\n{rollout.stdout}{rollout.stderr}\n{tail(events, 30)}\n"
                    + "\n".join(pod_log(real_node, p) for p in pods), pytrace=False)
    print(f"\n2 replicas Ready on {NODE_NAME} in {time.monotonic() - t0:.1f}s")
    names = {p["metadata"]["name"] for p in pods if p["status"].get("phase") == "Running"}
    assert len(names) == 2, [(p["metadata"]["name"], p["status"].get("phase")) for p in pods]
    for p in pods:
        assert p["spec"]["nodeName"] == NODE_NAME
        ip = p["status"]["podIP"]
        assert ip.startswith("10.244.0.") and ip != node_ip, ip  # from the CNI bridge's host-local range
        assert "serving on 8080" in pod_log(real_node, p)

    svc = get_json(cluster, "service", "echo")
    cluster_ip, port = svc["spec"]["clusterIP"], svc["spec"]["ports"][0]["port"]

    # 1. From the node's network namespace (kube-proxy's OUTPUT rules), new connection per request.
    def answers_from_node() -> set[str] | None:
        seen = set()
        for _ in range(20):
            r = in_node_netns("curl", "-s", "--max-time", "3", f"http://{cluster_ip}:{port}/")
            if r.returncode == 0 and r.stdout:
                seen.add(r.stdout.strip())
        return seen if seen == names else None

    t1 = time.monotonic()
    seen = wait_until(f"answers from both replicas via {cluster_ip}:{port} in netns {NETNS}",
                      answers_from_node, timeout=60)
    print(f"ClusterIP {cluster_ip}:{port} from the node's netns: {sorted(seen)} ({time.monotonic() - t1:.1f}s)")

    # 2. From a Pod on the pod network (PREROUTING DNAT, bridge, masquerade back over cni0).
    client = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "client", "namespace": NAMESPACE},
              "spec": pod_spec(["python", "-c", CLIENT], restart="Never",
                               env=[{"name": "SVC_IP", "value": cluster_ip}, {"name": "SVC_PORT", "value": str(port)}])}
    cluster.run_kubectl("apply", "-f", "-", input=json.dumps(client))

    def client_done() -> dict | None:
        pod = get_json(cluster, "pod", "client")
        return pod if pod["status"].get("phase") in ("Succeeded", "Failed") else None

    pod = wait_until("the client Pod to finish", client_done, timeout=120)
    log = pod_log(real_node, pod)
    assert pod["status"]["phase"] == "Succeeded", log
    answers = json.loads(next(line for line in log.splitlines() if line.startswith("ANSWERS "))[len("ANSWERS "):])
    print(f"ClusterIP {cluster_ip}:{port} from Pod client ({pod['status']['podIP']}): {answers}")
    assert set(answers) == names, answers  # both replicas answered and no request failed

    # Both servers logged requests, and the Service's rules live in the node's netns, not the host's.
    for p in pods:
        assert "served" in pod_log(real_node, p)
    rules = in_node_netns("iptables-save", "-t", "nat").stdout
    assert f"{NAMESPACE}/echo:http cluster IP" in rules
    assert cluster_ip not in subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True).stdout
    assert "10.244.0.1/" not in subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True).stdout


def test_kubectl_sees_container_status_and_restarts(cluster: K8sCluster, real_node: Path):
    """A container that exits is restarted by the kubelet and its exit code reported in the pod status."""
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "exit3", "namespace": NAMESPACE},
           "spec": pod_spec(["python", "-c", "import sys; print('bye', flush=True); sys.exit(3)"])}
    run([str(cluster.kubectl), "create", "namespace", NAMESPACE], env=cluster.env, check=False)
    cluster.run_kubectl("apply", "-f", "-", input=json.dumps(pod))

    def restarted() -> dict | None:
        p = get_json(cluster, "pod", "exit3")
        statuses = p["status"].get("containerStatuses") or []
        return p if statuses and statuses[0].get("restartCount", 0) >= 1 else None

    p = wait_until("the exit3 container to be restarted", restarted, timeout=120)
    status = p["status"]["containerStatuses"][0]
    last = status["lastState"].get("terminated") or status["state"].get("terminated")
    assert last and last["exitCode"] == 3, status
    assert "bye" in pod_log(real_node, p)


def test_chart_gateway_runs_on_the_real_node_and_answers_through_its_service(cluster: K8sCluster, real_node: Path,
                                                                            tmp_path: Path):
    import pandas as pd

    tools = cluster.bin_dir
    for tool in ("grpcurl", "grpc-health-probe"):
        assert (tools / tool).exists(), f"{tools / tool} is missing: deploy/k8s-local/build.sh tools"
    ns, release = NAMESPACE + "-chart", "gw"
    # A model "registry" of one version folder: manifest.json and the item feature table, all that the gateway
    # loads at start (its popularity fallback); mounted from a ConfigMap at RECSYS_MODELS_DIR.
    items = pd.DataFrame({"item_id": [f"item-{i}" for i in range(20)],
                          "item_log_count": [float(20 - i) for i in range(20)],
                          "item_genre_drama": [i % 2 for i in range(20)]})
    items.to_parquet(tmp_path / "item_features.parquet", index=False)
    (tmp_path / "manifest.json").write_text('{"version": "real-node-smoke"}')
    values = {
        "global": {"image": {"registry": "ghcr.io", "repository": "recsys/recsys", "pullPolicy": "Never"},
                   "artifacts": {"enabled": False}},
        "autoscaling": {"enabled": False},
        # no exploration, so that every answer is exactly the popularity order asserted below
        "config": {"RECSYS_MODELS_DIR": "/etc/recsys/models", "RECSYS_GATEWAY_EXPLORATION": "none"},
        "nodeSelector": {"type": "real"},
        "tolerations": [{"key": TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}],
        "extraVolumes": [{"name": "models", "configMap": {"name": "smoke-models", "items": [
            {"key": "manifest.json", "path": "manifest.json"},
            {"key": "item_features.parquet", "path": "features/item_features.parquet"}]}}],
        "extraVolumeMounts": [{"name": "models", "mountPath": "/etc/recsys/models", "readOnly": True}],
    }
    (tmp_path / "values.yaml").write_text(json.dumps(values))
    env = helm_env(cluster.state_dir / "helm", cluster.env)
    helm = [str(HELM)]
    cluster.run_kubectl("create", "namespace", ns)
    try:
        cluster.run_kubectl("-n", ns, "create", "configmap", "smoke-models",
                            f"--from-file={tmp_path / 'manifest.json'}",
                            f"--from-file={tmp_path / 'item_features.parquet'}")
        t0 = time.monotonic()
        install = run([*helm, "install", release, str(GATEWAY_CHART), "-n", ns, "-f", str(tmp_path / "values.yaml"),
                       "--wait", "--timeout", "3m"], env=env, check=False, timeout=240)
        pods = json.loads(cluster.run_kubectl("get", "pods", "-n", ns, "-o", "json").stdout)["items"]
        if install.returncode != 0:
            pytest.fail(f"helm install: {install.stdout}{install.stderr}\n"
                        + "\n".join(tail(pod_log(real_node, p, "gateway"), 20) for p in pods), pytrace=False)
        print(f"\nchart gateway: 2 replicas Ready (native gRPC probes) in {time.monotonic() - t0:.1f}s")
        assert len(pods) == 2 and all(p["spec"]["nodeName"] == NODE_NAME for p in pods)
        svc = json.loads(cluster.run_kubectl("get", "service", "-n", ns, f"{release}-gateway", "-o", "json").stdout)
        addr = f"{svc['spec']['clusterIP']}:50051"

        health = in_node_netns(str(tools / "grpc-health-probe"), "-addr", addr)
        assert health.returncode == 0 and "status: SERVING" in health.stderr, health.stdout + health.stderr
        answers = []
        for user in ("u1", "u2", "u3", "u4", "u5", "u6"):
            done = in_node_netns(str(tools / "grpcurl"), "-plaintext", "-max-time", "10", "-d",
                                 json.dumps({"user_id": user, "k": 5}), addr, "recsys.v1.RecommendService/Recommend")
            assert done.returncode == 0, done.stdout + done.stderr
            answers.append(json.loads(done.stdout))
        for reply in answers:
            assert [i["item_id"] for i in reply["items"]] == [f"item-{i}" for i in range(5)], reply
            assert reply["degraded"] is True  # no features / candidates / ranking in this release
        print(f"Recommend via ClusterIP {addr}: {[i['item_id'] for i in answers[0]['items']]} "
              f"(degraded: {answers[0].get('degraded_reasons')})")
    finally:
        run([*helm, "uninstall", release, "-n", ns, "--wait", "--timeout", "2m"], env=env, check=False,
            timeout=180)
        cluster.run_kubectl("delete", "namespace", ns, "--ignore-not-found", "--wait=true", "--timeout=90s",
                            check=False, timeout=120)
