"""The Kubernetes retrain trigger (recsys.monitoring.kube_job) against a fake API server: the real client's
BatchV1Api builds every request, a fake `ApiClient.call_api` answers it (JSON as the API server sends it).
The same code against a real kube-apiserver and the chart's RBAC: tests/k8s/test_retrain_job.py."""

from __future__ import annotations

import copy
import json
import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import kubernetes
import pytest
import urllib3

from recsys.monitoring import kube_job
from recsys.monitoring.kube_job import KubernetesRetrainJob, RetrainTriggerError

NAMESPACE = "recsys"
CRONJOB = "rs-jobs-retrain"
CRONJOB_UID = "5d0c4a8e-0000-4000-8000-000000000001"
NOW = 1_767_225_600.7
STAMP = "1767225600"

# A CronJob as the API server returns it (defaults filled in), trimmed to what matters.
TEMPLATE_SPEC = {
    "backoffLimit": 2,
    "activeDeadlineSeconds": 7200,
    "ttlSecondsAfterFinished": 86400,
    "completionMode": "NonIndexed",
    "suspend": False,
    "template": {
        "metadata": {"labels": {"app.kubernetes.io/component": "jobs", "recsys.io/job": "retrain"}},
        "spec": {
            "restartPolicy": "Never",
            "serviceAccountName": "rs-jobs",
            "automountServiceAccountToken": False,
            "containers": [{
                "name": "batch-recommend",
                "image": "ghcr.io/recsys/recsys-jobs:0.1.0",
                "command": ["recsys"],
                "args": ["batch-recommend", "--quiet"],
                "envFrom": [{"configMapRef": {"name": "rs-jobs-env"}}],
                "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "6Gi"}},
            }],
            "initContainers": [{"name": "retrain", "image": "ghcr.io/recsys/recsys-jobs:0.1.0",
                                "command": ["recsys"], "args": ["retrain", "--quiet"]}],
            "volumes": [{"name": "artifacts", "persistentVolumeClaim": {"claimName": "rs-artifacts"}}],
        },
    },
}
TEMPLATE_LABELS = {"app.kubernetes.io/component": "jobs", "recsys.io/job": "retrain"}
TEMPLATE_ANNOTATIONS = {"example.com/owner": "ml-team"}


def cronjob(uid: str = CRONJOB_UID, name: str = CRONJOB) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": name, "namespace": NAMESPACE, "uid": uid, "resourceVersion": "42",
                     "labels": {"app.kubernetes.io/component": "jobs"}},
        "spec": {
            "schedule": "0 3 * * 0",
            "concurrencyPolicy": "Forbid",
            "jobTemplate": {"metadata": {"labels": dict(TEMPLATE_LABELS), "annotations": dict(TEMPLATE_ANNOTATIONS)},
                            "spec": copy.deepcopy(TEMPLATE_SPEC)},
        },
    }


def job(name: str, *, owner_uid: str | None = None, labels: dict[str, str] | None = None,
        condition: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": NAMESPACE, "uid": f"uid-{name}", "labels": labels or {}}
    if owner_uid:
        meta["ownerReferences"] = [{"apiVersion": "batch/v1", "kind": "CronJob", "name": CRONJOB, "uid": owner_uid,
                                    "controller": True}]
    status: dict[str, Any] = {}
    if condition:
        status["conditions"] = [{"type": condition, "status": "True"}]
    else:
        status["active"] = 1
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": copy.deepcopy(TEMPLATE_SPEC),
            "status": status}


class Answer:
    """What urllib3 hands the client's RESTResponse: status, reason, headers, body bytes."""

    def __init__(self, status: int, payload: dict[str, Any]) -> None:
        self.status = status
        self.reason = {200: "OK", 201: "Created", 403: "Forbidden", 404: "Not Found", 409: "Conflict"}[status]
        self.headers = {"content-type": "application/json"}
        self.data = json.dumps(payload).encode()


def status(code: int, message: str) -> Answer:
    reason = {403: "Forbidden", 404: "NotFound", 409: "AlreadyExists"}[code]
    return Answer(code, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
                         "reason": reason, "code": code})


class FakeApiServer(kubernetes.client.ApiClient):
    """One namespace of an API server: CronJobs and Jobs by name; `forbidden` holds (verb, resource) pairs the
    caller is refused; every request is recorded as (method, path, query, body)."""

    def __init__(self, cronjobs: list[dict[str, Any]] = (), jobs: list[dict[str, Any]] = (), page_size: int = 2,
                 forbidden: set[tuple[str, str]] = frozenset()) -> None:
        super().__init__(kubernetes.client.Configuration(host="https://kube.test"))
        self.cronjobs = {c["metadata"]["name"]: c for c in cronjobs}
        self.jobs = {j["metadata"]["name"]: j for j in jobs}
        self.page_size = page_size
        self.forbidden = forbidden
        self.requests: list[tuple[str, str, dict[str, list[str]], Any]] = []

    def call_api(self, method, url, header_params=None, body=None, post_params=None, _request_timeout=None):
        parts = urlsplit(url)
        query = parse_qs(parts.query)
        self.requests.append((method, parts.path, query, body))
        match = re.fullmatch(rf"/apis/batch/v1/namespaces/{NAMESPACE}/(cronjobs|jobs)(?:/([^/]+))?", parts.path)
        assert match, f"unexpected request {method} {url}"
        resource, name = match.groups()
        verb = {"GET": "get" if name else "list", "POST": "create"}[method]
        user = "system:serviceaccount:recsys:rs-monitoring"
        if (verb, resource) in self.forbidden:
            return kubernetes.client.rest.RESTResponse(status(403, (
                f'{resource}.batch{" " + repr(name) if name else ""} is forbidden: User "{user}" cannot {verb} '
                f'resource "{resource}" in API group "batch" in the namespace "{NAMESPACE}"')))
        if resource == "cronjobs":
            if name not in self.cronjobs:
                return kubernetes.client.rest.RESTResponse(status(404, f'cronjobs.batch "{name}" not found'))
            return kubernetes.client.rest.RESTResponse(Answer(200, self.cronjobs[name]))
        if method == "GET":
            names = sorted(self.jobs)
            start = int(query.get("continue", ["0"])[0])
            limit = int(query.get("limit", [str(len(names))])[0])
            size = min(self.page_size, limit)
            page = [self.jobs[n] for n in names[start:start + size]]
            more = {"continue": str(start + size)} if start + size < len(names) else {}
            return kubernetes.client.rest.RESTResponse(Answer(200, {
                "apiVersion": "batch/v1", "kind": "JobList", "metadata": {"resourceVersion": "7", **more},
                "items": page}))
        created = json.loads(json.dumps(body))
        if created["metadata"]["name"] in self.jobs:
            return kubernetes.client.rest.RESTResponse(status(409, "jobs.batch already exists"))
        created["metadata"]["uid"] = f"uid-{created['metadata']['name']}"
        self.jobs[created["metadata"]["name"]] = created
        return kubernetes.client.rest.RESTResponse(Answer(201, created))

    def posted(self) -> list[dict[str, Any]]:
        return [body for method, _, _, body in self.requests if method == "POST"]


def trigger_of(server: FakeApiServer, cronjob_name: str = CRONJOB) -> KubernetesRetrainJob:
    return KubernetesRetrainJob(cronjob_name, NAMESPACE, api_client=server, clock=lambda: NOW)


# --- the Job -------------------------------------------------------------------------------------------------


def test_the_job_is_the_cron_jobs_template_owned_by_it_and_annotated_like_kubectl():
    server = FakeApiServer(cronjobs=[cronjob()])
    name = trigger_of(server).trigger("data_drift")
    assert name == f"{CRONJOB}-data-drift-{STAMP}"
    (body,) = server.posted()
    assert body["apiVersion"] == "batch/v1" and body["kind"] == "Job"
    meta = body["metadata"]
    assert meta["name"] == name and meta["namespace"] == NAMESPACE
    assert meta["labels"] == {**TEMPLATE_LABELS, "recsys.io/retrain-cronjob": CRONJOB}
    assert meta["annotations"] == {**TEMPLATE_ANNOTATIONS, "cronjob.kubernetes.io/instantiate": "manual",
                                   "recsys.io/retrain-reason": "data_drift"}
    assert meta["ownerReferences"] == [{"apiVersion": "batch/v1", "kind": "CronJob", "name": CRONJOB,
                                        "uid": CRONJOB_UID, "controller": True}]
    assert body["spec"] == TEMPLATE_SPEC  # the job template's spec, untouched
    assert set(body) == {"apiVersion", "kind", "metadata", "spec"}
    # The requests: the CronJob by name, the namespace's Jobs, then the Job; all in the namespace.
    assert [(m, p) for m, p, _, _ in server.requests] == [
        ("GET", f"/apis/batch/v1/namespaces/{NAMESPACE}/cronjobs/{CRONJOB}"),
        ("GET", f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs"),
        ("POST", f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs"),
    ]


def test_template_annotations_may_not_drop_the_reason_but_may_set_instantiate():
    cron = cronjob()
    cron["spec"]["jobTemplate"]["metadata"] = {"annotations": {"recsys.io/retrain-reason": "template",
                                                               "cronjob.kubernetes.io/instantiate": "x"}}
    server = FakeApiServer(cronjobs=[cron])
    trigger_of(server).trigger("ctr_drop:control")
    meta = server.posted()[0]["metadata"]
    # kubectl lets the template's annotations win over its "manual"; the reason is ours.
    assert meta["annotations"] == {"cronjob.kubernetes.io/instantiate": "x",
                                   "recsys.io/retrain-reason": "ctr_drop:control"}
    assert meta["labels"] == {"recsys.io/retrain-cronjob": CRONJOB}


DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@pytest.mark.parametrize(
    ("cronjob_name", "reason", "expected"),
    [
        (CRONJOB, "drift", f"{CRONJOB}-drift-{STAMP}"),
        (CRONJOB, "ctr_drop:Variant-B,data_drift", f"{CRONJOB}-ctr-drop-variant-b-data-drift-{STAMP}"),
        (CRONJOB, "  ¿¡!  ", f"{CRONJOB}-{STAMP}"),
        (CRONJOB, "x" * 100, f"{CRONJOB}-{'x' * (63 - len(CRONJOB) - len(STAMP) - 2)}-{STAMP}"),
        (CRONJOB, "data_drift," * 10, None),
        ("a" * 52, "drift", f"{'a' * 52}-{STAMP}"),  # the longest CronJob name leaves no room for a reason
        ("release-with-a-long-name-jobs-retrain", "prediction_drift", None),
    ],
)
def test_job_names_are_dns_labels_within_63_characters(cronjob_name, reason, expected):
    name = kube_job.job_name(cronjob_name, reason, NOW)
    assert len(name) <= 63 and DNS_LABEL.match(name), name
    assert name.startswith(cronjob_name[:40]) and name.endswith(f"-{STAMP}")
    if expected is not None:
        assert name == expected


# --- one retrain at a time -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "running",
    [
        job("rs-jobs-retrain-29000000", owner_uid=CRONJOB_UID),  # the schedule's (or kubectl's)
        job("rs-jobs-retrain-drift-1767225000", labels={"recsys.io/retrain-cronjob": CRONJOB}),  # an earlier trigger
    ],
    ids=["scheduled", "triggered"],
)
def test_an_active_job_of_the_cron_job_means_none(running):
    others = [job("a-done", owner_uid=CRONJOB_UID, condition="Complete"), job("b-other", owner_uid="other-uid"),
              job("c-unrelated"), job("d-failed", labels={"recsys.io/retrain-cronjob": CRONJOB}, condition="Failed")]
    server = FakeApiServer(cronjobs=[cronjob()], jobs=[*others, running], page_size=2)  # three pages
    assert trigger_of(server).trigger("drift") is None
    assert server.posted() == []
    lists = [q for m, p, q, _ in server.requests if m == "GET" and p.endswith("/jobs")]
    assert len(lists) == 3 and "continue" not in lists[0] and lists[1]["continue"] == ["2"]


def test_finished_or_foreign_jobs_do_not_hold_a_retrain_back_and_the_second_trigger_waits():
    jobs = [job("done", owner_uid=CRONJOB_UID, condition="Complete"),
            job("failed", labels={"recsys.io/retrain-cronjob": CRONJOB}, condition="Failed"),
            job("other-cron", owner_uid="11111111-other"),
            job("other-label", labels={"recsys.io/retrain-cronjob": "rs-jobs-batch-inference"})]
    server = FakeApiServer(cronjobs=[cronjob()], jobs=jobs)
    trigger = trigger_of(server)
    first = trigger.trigger("drift")
    assert first == f"{CRONJOB}-drift-{STAMP}"
    trigger.clock = lambda: NOW + 60
    assert trigger.trigger("drift") is None  # the first is still active
    assert len(server.posted()) == 1


def test_a_job_of_the_same_name_already_there_is_none():
    # Another replica created it this second (and it already finished): the name is taken, 409.
    server = FakeApiServer(cronjobs=[cronjob()], jobs=[job(f"{CRONJOB}-drift-{STAMP}", condition="Complete")])
    assert trigger_of(server).trigger("drift") is None
    assert len(server.posted()) == 1


# --- failures are clear ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("forbidden", "step"),
    [(("create", "jobs"), f"creating Job {CRONJOB}-drift-{STAMP}"), (("list", "jobs"), "listing Jobs"),
     (("get", "cronjobs"), f"reading CronJob {CRONJOB}")],
)
def test_forbidden_is_a_clear_error(forbidden, step):
    server = FakeApiServer(cronjobs=[cronjob()], forbidden={forbidden})
    with pytest.raises(RetrainTriggerError) as caught:
        trigger_of(server).trigger("drift")
    error = caught.value
    assert error.status == 403
    message = str(error)
    assert message.startswith(f"{step} in namespace {NAMESPACE}: the Kubernetes API answered 403 Forbidden: ")
    assert f'cannot {forbidden[0]} resource "{forbidden[1]}"' in message  # the API server's own words
    assert "monitoring.retrainOnDrift" in message
    assert isinstance(error.__cause__, kubernetes.client.ApiException)


def test_a_missing_cron_job_is_a_clear_error():
    server = FakeApiServer(cronjobs=[cronjob(name="rs-jobs-canary")])
    with pytest.raises(RetrainTriggerError, match=r"reading CronJob rs-jobs-retrain in namespace recsys: .* 404 .*"
                                                  r"not found \(is cronJobs.retrain enabled\?\)") as caught:
        trigger_of(server).trigger("drift")
    assert caught.value.status == 404


def test_an_unreachable_api_server_is_a_clear_error():
    class Unreachable(FakeApiServer):
        def call_api(self, method, url, *args, **kwargs):
            raise urllib3.exceptions.MaxRetryError(None, url, reason=ConnectionRefusedError(111, "refused"))

    with pytest.raises(RetrainTriggerError, match="reading CronJob rs-jobs-retrain in namespace recsys: the "
                                                  "Kubernetes API could not be reached") as caught:
        trigger_of(Unreachable()).trigger("drift")
    assert caught.value.status is None


# --- configuration --------------------------------------------------------------------------------------------


def test_the_namespace_defaults_to_the_pods(tmp_path):
    (tmp_path / "namespace").write_text("team-a\n")
    trigger = KubernetesRetrainJob(CRONJOB, api_client=FakeApiServer(), service_account_dir=tmp_path)
    assert trigger.namespace == "team-a"
    assert KubernetesRetrainJob(CRONJOB, "given", api_client=FakeApiServer(),
                                service_account_dir=tmp_path).namespace == "given"
    with pytest.raises(RetrainTriggerError, match="RECSYS_MONITORING_NAMESPACE"):
        KubernetesRetrainJob(CRONJOB, api_client=FakeApiServer(), service_account_dir=tmp_path / "absent")


def test_outside_a_pod_the_in_cluster_configuration_fails_clearly(monkeypatch, tmp_path):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_PORT", raising=False)
    with pytest.raises(RetrainTriggerError, match="not in a pod with a ServiceAccount token"):
        KubernetesRetrainJob(CRONJOB, "recsys")


def test_a_cron_job_must_be_named():
    with pytest.raises(RetrainTriggerError, match="RECSYS_MONITORING_RETRAIN_CRONJOB"):
        KubernetesRetrainJob("", NAMESPACE, api_client=FakeApiServer())
