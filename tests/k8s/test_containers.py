"""The images, run exactly as the chart runs them: every service reaches SERVING and the gateway answers Recommend.

Needs the images of `make images` (deploy/images/build.sh) in the project's Docker engine. The chart is rendered
with its default values (ranking as a Deployment: a RayService needs the KubeRay operator) and a smaller
synthetic dataset for the train hook. Its hook Jobs (train, materialize) and then every service Deployment run
as containers (tests/k8s/docker_pods.py) in one loopback-only network namespace with Kafka and Redis started
inside it. Health is checked by grpc-health-probe and Recommend sent by grpcurl through server reflection: the
standard outside tools, built from the Go module proxy (deploy/k8s-local/build.sh tools).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))  # helpers beside this file (importlib import mode)
from docker_pods import Docker, PodRunner, config_data, holder_pid, in_netns  # noqa: E402
from k8s_support import HELM, helm_env, wait_until  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("RECSYS_K8S_CACHE", Path.home() / ".cache" / "recsys-k8s"))
TOOLS = CACHE / "bin"
RELEASE = "rs"
SERVICES = ("features", "candidates", "ranking", "monitoring", "gateway")  # start order: callees first
KAFKA_PORT, REDIS_PORT = 9092, 6390
# A smaller synthetic dataset than the chart's default, so that the train hook takes a minute, not ten.
# Docker runs the pods outside Kubernetes, so there is no API server for the monitoring service's retrain trigger
# (tests/k8s/test_retrain_job.py has it create its Job on a real one).
SMOKE_VALUES = {
    "ranking": {"mode": "deployment"},
    "monitoring": {"retrainOnDrift": {"enabled": False}},
    "jobs": {"definitions": {"train": {"steps": [
        {"name": "data", "args": ["data", "generate", "--out", "/var/lib/recsys/artifacts/data/current",
                                  "--interactions", "20000", "--force"]},
        {"name": "train", "args": ["train", "--data", "/var/lib/recsys/artifacts/data/current",
                                   "--out", "/var/lib/recsys/artifacts/models", "--quiet"]},
    ]}}},
}


def docker_host() -> str:
    """DOCKER_HOST, else the project's engine (deploy/images/dockerd.sh env: the one that holds the images)."""
    if os.environ.get("DOCKER_HOST"):
        return os.environ["DOCKER_HOST"]
    out = subprocess.run(["bash", str(REPO / "deploy/images/dockerd.sh"), "env"], capture_output=True, text=True,
                         check=True, timeout=30).stdout
    return out.strip().removeprefix("export DOCKER_HOST=")


def helm_template(values: Path) -> list[dict]:
    env = helm_env(values.parent / "helm-home")
    out = subprocess.run([str(HELM), "template", RELEASE, str(REPO / "helm" / "recsys"), "--namespace", "recsys",
                          "-f", str(values)], capture_output=True, text=True, env=env, timeout=120, check=True).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def loopback_rewrite(manifests: list[dict]):
    """A function turning a value that names a Service (host:port) into the same port on 127.0.0.1.

    A cluster's DNS resolves Service names; in one network namespace every server is on loopback. Redis moves
    to REDIS_PORT (6379 is Ray's GCS port in the ranking container); Kafka's bootstrap Service is Strimzi's.
    """
    names = {m["metadata"]["name"] for m in manifests if m["kind"] == "Service"}
    names |= {f"{m['metadata']['name']}-kafka-bootstrap" for m in manifests if m["kind"] == "Kafka"}
    pattern = re.compile(r"(?<![\w.-])(" + "|".join(sorted(map(re.escape, names), key=len, reverse=True))
                         + r")(?:\.[a-z0-9.-]+)?:(\d+)")

    def local(match: re.Match) -> str:
        port = REDIS_PORT if "redis" in match.group(1) else int(match.group(2))
        return f"127.0.0.1:{port}"

    return lambda value: pattern.sub(local, value)


def redis_password(secrets: dict[str, dict[str, str]]) -> str:
    """The password the chart generated for its Redis (the services' REDIS_PASSWORD)."""
    return next(data[key] for name, data in secrets.items() if "redis" in name for key in data
                if "password" in key.lower())


def grpcurl(pid: int, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return in_netns(pid, [str(TOOLS / "grpcurl"), "-plaintext", "-max-time", "10", *args], timeout=timeout,
                    check=False)


def recommend(pid: int, port: int, user: str, k: int = 10) -> dict:
    """Recommend through grpcurl (server reflection); the reply as grpcurl prints it (proto field names)."""
    done = grpcurl(pid, "-d", json.dumps({"user_id": user, "k": k}), f"127.0.0.1:{port}",
                   "recsys.v1.RecommendService/Recommend")
    assert done.returncode == 0, f"grpcurl Recommend: {done.stdout}{done.stderr}"
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def pod_stack(tmp_path_factory: pytest.TempPathFactory):
    for tool in ("grpcurl", "grpc-health-probe"):
        assert (TOOLS / tool).exists(), f"{tool} missing: run deploy/k8s-local/build.sh tools"
    docker = Docker(docker_host())
    work = tmp_path_factory.mktemp("pods")
    os.chmod(work, 0o755)
    values = work / "smoke-values.yaml"
    values.write_text(yaml.safe_dump(SMOKE_VALUES))
    manifests = helm_template(values)
    images = {c["image"] for m in manifests if m["kind"] in ("Deployment", "Job")
              for c in m["spec"]["template"]["spec"]["containers"]}
    for image in images:
        if "/recsys-" in image:
            assert docker("images", "-q", image), f"{image} not built: run `make images`"
    configmaps, secrets = config_data(manifests)
    net = f"recsys-pods-{os.getpid()}"
    gateway_image = next(i for i in images if "/recsys-gateway:" in i)
    docker("run", "-d", "--name", net, "--network", "none", "--no-healthcheck", "--entrypoint", "python", gateway_image,
           "-c", "import time; time.sleep(86400)")
    pid = holder_pid(docker, net)
    runner = PodRunner(docker, work, net, configmaps, secrets, loopback_rewrite(manifests))
    kafka_dir, redis_dir = work / "kafka", work / "redis"
    try:
        in_netns(pid, ["bash", str(REPO / "deploy/local/kafka.sh"), "start", "--port", str(KAFKA_PORT),
                       "--controller-port", "9093", "--state-dir", str(kafka_dir)], timeout=180)
        in_netns(pid, ["bash", str(REPO / "deploy/local/redis.sh"), "start", "--port", str(REDIS_PORT),
                       "--state-dir", str(redis_dir)], timeout=60)
        in_netns(pid, ["redis-cli", "-p", str(REDIS_PORT), "config", "set", "requirepass", redis_password(secrets)])
        hooks = sorted((m for m in manifests if m["kind"] == "Job"
                        and "helm.sh/hook" in (m["metadata"].get("annotations") or {})),
                       key=lambda m: int(m["metadata"]["annotations"].get("helm.sh/hook-weight", "0")))
        timings = {}
        for job in hooks:  # post-install hooks in weight order, as helm runs them
            started = time.monotonic()
            runner.run_job(job["metadata"]["name"], job["spec"]["template"]["spec"])
            timings[job["metadata"]["name"]] = round(time.monotonic() - started, 1)
        deployments = {m["metadata"]["labels"]["app.kubernetes.io/component"]: m
                       for m in manifests if m["kind"] == "Deployment"}
        containers = {}
        for index, service in enumerate(SERVICES):
            spec = deployments[service]["spec"]["template"]["spec"]
            metrics = {"RECSYS_METRICS_PORT": str(9100 + index)}  # one namespace: one metrics port each
            containers[service] = runner.run_pod(deployments[service]["metadata"]["name"], spec, env=metrics)[0]
        ports = {s: next(p["containerPort"] for p in deployments[s]["spec"]["template"]["spec"]["containers"][0]
                         ["ports"] if p["name"] == "grpc") for s in SERVICES}
        interactions = work / "claims" / f"{RELEASE}-artifacts" / "data" / "current" / "interactions.parquet"
        user = str(pq.read_table(interactions, columns=["user_id"]).column(0)[0])  # a user the models know
        yield {"user": user, "docker": docker, "pid": pid, "containers": containers, "ports": ports, "jobs": timings,
               "deployments": deployments, "runner": runner}
    finally:
        if os.environ.get("RECSYS_K8S_KEEP") != "1":
            runner.stop_all()
            for script, state in (("kafka.sh", kafka_dir), ("redis.sh", redis_dir)):
                subprocess.run(["bash", str(REPO / "deploy/local" / script), "stop", "--state-dir", str(state)],
                               capture_output=True, timeout=90)
            docker("rm", "-f", net, check=False)
            shutil.rmtree(work, ignore_errors=True)


def test_every_service_container_reaches_serving(pod_stack):
    pid, docker = pod_stack["pid"], pod_stack["docker"]
    for service in SERVICES:
        container = pod_stack["containers"][service]
        probe = [str(TOOLS / "grpc-health-probe"), "-addr", f"127.0.0.1:{pod_stack['ports'][service]}",
                 "-connect-timeout", "2s", "-rpc-timeout", "2s"]

        def serving(probe=probe, container=container) -> bool:
            state = docker("inspect", "-f", "{{.State.Status}}", container)
            assert state == "running", f"{container} is {state}:\n{docker.logs(container)}"
            return in_netns(pid, probe, check=False).returncode == 0

        wait_until(f"{service} SERVING", serving, 300, 2)
        # Hardened as the chart asks: uid 10001, read-only root filesystem.
        info = json.loads(docker("inspect", container))[0]
        assert info["Config"]["User"].startswith("10001:") and info["HostConfig"]["ReadonlyRootfs"]


def test_gateway_answers_recommend_through_reflection(pod_stack):
    pid, port = pod_stack["pid"], pod_stack["ports"]["gateway"]
    listed = grpcurl(pid, f"127.0.0.1:{port}", "list")
    assert "recsys.v1.RecommendService" in listed.stdout, listed.stdout + listed.stderr
    answers = []

    def full_answer() -> bool:
        reply = recommend(pid, port, pod_stack["user"])
        answers.append(reply)
        full = not reply.get("degraded") and len(reply.get("items", [])) == 10
        return full and bool(reply.get("model_version"))

    wait_until("a Recommend that is not degraded", full_answer, 120, 2, last=lambda: answers[-1])
    reply = answers[-1]
    assert len({item["item_id"] for item in reply["items"]}) == 10
    assert {t["hop"]: t["status"] for t in reply["timings"]}.get("rank") == "ok", reply["timings"]


def test_a_stopped_service_degrades_answers_without_error(pod_stack):
    pid, port, docker = pod_stack["pid"], pod_stack["ports"]["gateway"], pod_stack["docker"]
    docker("stop", "-t", "10", pod_stack["containers"]["ranking"], timeout=60)
    reply = {}

    def degraded() -> bool:
        nonlocal reply
        # grpcurl exits non-zero on any gRPC error, and recommend() asserts it exited 0: no error, ever
        reply = recommend(pid, port, pod_stack["user"])
        return bool(reply.get("degraded"))

    wait_until("a degraded answer after ranking stopped", degraded, 60, 1, last=lambda: reply)
    assert len(reply["items"]) == 10
    assert any("rank" in reason for reason in reply.get("degraded_reasons", [])), reply
