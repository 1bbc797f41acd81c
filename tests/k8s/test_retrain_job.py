"""Drift starts a retrain, on a real kube-apiserver: the chart's RBAC for the monitoring service's retrain trigger
(recsys.monitoring.kube_job) is exactly as narrow as it says.

From `helm template` of the umbrella chart (default values, rendered into this test's namespace) it installs the
monitoring ServiceAccount, the Role and RoleBinding `rs-monitoring-retrain`, the retrain CronJob
`rs-jobs-retrain` itself (suspended, so its schedule starts nothing; its job pods select a node label no node
has, so a Job stays active: kwok would otherwise complete it at once) and the jobs' ServiceAccount its pods
use; not the rest of the chart. A TokenRequest gives a token of the monitoring ServiceAccount, the way the
kubelet mounts one into its pods, and an ApiClient with that token, the API server's address and CA stands in
for the in-cluster configuration. Then `KubernetesRetrainJob.trigger("drift")` creates the Job (the template's
spec, an ownerReference to the CronJob), a second trigger starts nothing while it is active, the same token is
refused (403) everything else tried (deleting the CronJob, creating a Pod, reading another CronJob, deleting a
Job, anything in another namespace), and deleting the CronJob garbage-collects the Job.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import kubernetes
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))  # k8s_support sits beside this file (importlib import mode)
from k8s_support import HELM, REPO, K8sCluster, helm_env, run, wait_until  # noqa: E402

from recsys.monitoring.kube_job import KubernetesRetrainJob, RetrainTriggerError  # noqa: E402

CHART = REPO / "helm" / "recsys"
NAMESPACE = "recsys-retrain-job"
RELEASE = "rs"
CRONJOB = f"{RELEASE}-jobs-retrain"
ACCOUNT = f"{RELEASE}-monitoring"
ROLE = f"{RELEASE}-monitoring-retrain"
NO_NODE = {"recsys.dev/retrain-test": "no-such-node"}
# What is installed from the render: (kind, name).
INSTALLED = [("ServiceAccount", ACCOUNT), ("ServiceAccount", f"{RELEASE}-jobs"), ("Role", ROLE),
             ("RoleBinding", ROLE), ("CronJob", CRONJOB)]

pytestmark = pytest.mark.timeout(300, func_only=True)


def get(cluster: K8sCluster, *args: str) -> dict:
    return json.loads(cluster.run_kubectl("get", "-n", NAMESPACE, *args, "-o", "json").stdout)


@pytest.fixture(scope="module")
def installed(cluster: K8sCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[tuple[str, str], dict]]:
    """The chart's objects for the trigger, rendered into NAMESPACE and applied; yields them by (kind, name)."""
    work = tmp_path_factory.mktemp("retrain-job")
    values = work / "values.json"
    values.write_text(json.dumps({"jobs": {"nodeSelector": NO_NODE}, "cronJobs": {"retrain": {"suspend": True}}}))
    rendered = run([str(HELM), "template", RELEASE, str(CHART), "-n", NAMESPACE, "-f", str(values)],
                   env=helm_env(work / "helm", cluster.env)).stdout
    docs = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(rendered) if d}
    objects = {key: docs[key] for key in INSTALLED}
    cluster.run_kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--timeout=120s", timeout=150)
    cluster.run_kubectl("create", "namespace", NAMESPACE)
    listing = {"apiVersion": "v1", "kind": "List", "items": list(objects.values())}
    cluster.run_kubectl("apply", "-n", NAMESPACE, "-f", "-", input=json.dumps(listing))
    try:
        yield objects
    finally:
        cluster.run_kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)


@pytest.fixture(scope="module")
def admin(cluster: K8sCluster) -> Iterator[kubernetes.client.ApiClient]:
    client = kubernetes.config.new_client_from_config(config_file=str(cluster.kubeconfig))
    yield client
    client.close()


@pytest.fixture(scope="module")
def monitoring(cluster: K8sCluster, installed, admin) -> Iterator[kubernetes.client.ApiClient]:
    """An ApiClient authenticated as the monitoring ServiceAccount (a token from the TokenRequest API)."""
    request = kubernetes.client.AuthenticationV1TokenRequest(
        spec=kubernetes.client.V1TokenRequestSpec(audiences=[], expiration_seconds=600))
    token = kubernetes.client.CoreV1Api(admin).create_namespaced_service_account_token(ACCOUNT, NAMESPACE,
                                                                                       request).status.token
    configuration = kubernetes.client.Configuration(host=cluster.server)
    configuration.ssl_ca_cert = str(cluster.ca_file)
    configuration.api_key = {"BearerToken": token}
    configuration.api_key_prefix = {"BearerToken": "Bearer"}
    client = kubernetes.client.ApiClient(configuration)
    yield client
    client.close()


def forbidden(call) -> str:
    """Run an API call that must be refused; return the API server's message."""
    with pytest.raises(kubernetes.client.ApiException) as caught:
        call()
    assert caught.value.status == 403, caught.value
    return json.loads(caught.value.body)["message"]


def test_the_monitoring_account_starts_one_retrain_job_and_nothing_else(cluster: K8sCluster, installed, monitoring):
    who = f"system:serviceaccount:{NAMESPACE}:{ACCOUNT}"
    review = kubernetes.client.AuthenticationV1Api(monitoring).create_self_subject_review(
        kubernetes.client.V1SelfSubjectReview())
    assert review.status.user_info.username == who  # the token is the monitoring ServiceAccount's

    trigger = KubernetesRetrainJob(CRONJOB, NAMESPACE, api_client=monitoring)
    name = trigger.trigger("drift")
    assert name and name.startswith(f"{CRONJOB}-drift-") and len(name) <= 63

    cron = get(cluster, "cronjob", CRONJOB)
    job = get(cluster, "job", name)
    meta = job["metadata"]
    assert meta["ownerReferences"] == [{"apiVersion": "batch/v1", "kind": "CronJob", "name": CRONJOB,
                                        "uid": cron["metadata"]["uid"], "controller": True}]
    assert meta["annotations"]["cronjob.kubernetes.io/instantiate"] == "manual"
    assert meta["annotations"]["recsys.io/retrain-reason"] == "drift"
    template = cron["spec"]["jobTemplate"]
    assert template["metadata"]["labels"].items() <= meta["labels"].items()
    assert meta["labels"]["recsys.io/retrain-cronjob"] == CRONJOB
    # The template's spec, as the API server stored both (the Job adds its selector and pod labels).
    for key in ("backoffLimit", "activeDeadlineSeconds", "ttlSecondsAfterFinished"):
        assert job["spec"][key] == template["spec"][key], key
    assert job["spec"]["template"]["spec"] == template["spec"]["template"]["spec"]
    steps = [c["args"][0] for c in [*job["spec"]["template"]["spec"].get("initContainers", []),
                                    *job["spec"]["template"]["spec"]["containers"]]]
    assert steps[0] == "retrain"

    # No node runs its pod (Pending), so the Job stays active: a second trigger starts nothing.
    def pending_pod() -> dict | None:
        pods = get(cluster, "pods", "-l", f"job-name={name}")["items"]
        return pods[0] if pods and pods[0]["status"].get("phase") == "Pending" else None

    pod = wait_until(f"the pod of Job {name}", pending_pod, timeout=60)
    assert not pod["spec"].get("nodeName")
    assert trigger.trigger("drift") is None
    assert trigger.trigger("ctr_drop:control") is None
    made = [j["metadata"]["name"] for j in get(cluster, "jobs")["items"]]
    assert made == [name]

    # The same token may do nothing else.
    batch, core = kubernetes.client.BatchV1Api(monitoring), kubernetes.client.CoreV1Api(monitoring)
    message = forbidden(lambda: batch.delete_namespaced_cron_job(CRONJOB, NAMESPACE))
    assert f'User "{who}" cannot delete resource "cronjobs"' in message
    container = kubernetes.client.V1Container(name="c", image="registry.k8s.io/pause:3.10")
    pod_body = kubernetes.client.V1Pod(metadata=kubernetes.client.V1ObjectMeta(name="not-allowed"),
                                       spec=kubernetes.client.V1PodSpec(containers=[container]))
    assert 'cannot create resource "pods"' in forbidden(lambda: core.create_namespaced_pod(NAMESPACE, pod_body))
    forbidden(lambda: batch.read_namespaced_cron_job(f"{RELEASE}-jobs-canary", NAMESPACE))  # resourceNames
    forbidden(lambda: batch.patch_namespaced_cron_job(CRONJOB, NAMESPACE, {"spec": {"suspend": False}}))
    forbidden(lambda: batch.delete_namespaced_job(name, NAMESPACE))
    forbidden(lambda: batch.list_namespaced_job("default"))  # a Role: this namespace only
    forbidden(lambda: core.list_namespaced_secret(NAMESPACE))
    with pytest.raises(RetrainTriggerError) as caught:
        KubernetesRetrainJob(f"{RELEASE}-jobs-batch-inference", NAMESPACE, api_client=monitoring).trigger("drift")
    assert caught.value.status == 403 and "reading CronJob rs-jobs-batch-inference" in str(caught.value)
    assert get(cluster, "cronjob", CRONJOB)["metadata"]["uid"] == cron["metadata"]["uid"]  # still there

    # The ownerReference: deleting the CronJob garbage-collects the Job.
    cluster.run_kubectl("delete", "-n", NAMESPACE, "cronjob", CRONJOB)

    def gone() -> bool:
        return not get(cluster, "jobs")["items"]

    wait_until(f"Job {name} garbage-collected with its CronJob", gone, timeout=120, interval=2)
    print(f"\ntriggered {name}; second trigger: None; 403 for delete cronjob / create pod / other objects; "
          "garbage-collected with the CronJob")
