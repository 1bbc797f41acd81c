"""Drift acts on Kubernetes: one retrain as a Job made from the retrain CronJob's job template.

On Kubernetes the monitoring service does not run training itself. When drift calls for a retrain
(`recsys.monitoring.actions`), `KubernetesRetrainJob.trigger` does through the Kubernetes API what
`kubectl create job --from=cronjob/<release>-jobs-retrain` does:

1. GET the CronJob (the chart's retrain CronJob, `cronJobs.retrain`);
2. LIST the Jobs of the namespace: when a Job made from that CronJob is still active, by its schedule or by an
   earlier trigger, it starts nothing and returns None (one retrain at a time). A Job belongs to the CronJob
   when an ownerReference names the CronJob's uid or when it carries the label this module sets
   (`recsys.io/retrain-cronjob`); it is active until it has a Complete or Failed condition;
3. CREATE the Job `<cronjob>-<reason slug>-<unix time>` (at most 63 characters, the limit of the `job-name`
   label on its pods): the template's spec, labels and annotations, the annotation
   `cronjob.kubernetes.io/instantiate: manual` as kubectl sets it, `recsys.io/retrain-reason: <reason>`, and an
   ownerReference to the CronJob (controller, without blockOwnerDeletion, as kubectl makes it), so the garbage
   collector deletes it with the CronJob and the CronJob's history limits prune it.

The chart gives the monitoring ServiceAccount exactly these rights (a Role: `get` on that one CronJob, `create`,
`get` and `list` on Jobs) and mounts its token (helm/recsys/templates/monitoring-retrain.yaml). Any refusal or
failure of the API (403 when the Role is missing, 404 when the CronJob is, the server unreachable) raises
`RetrainTriggerError` naming the step and the API's message. Two triggers in the same second make the same name:
the second gets 409 AlreadyExists and returns None like any retrain already under way.

The CronJob controller itself does not count a Job it did not create in `status.active` (it logs an
`UnexpectedJob` event for it), so its `concurrencyPolicy: Forbid` does not hold a scheduled run back while a
triggered one runs; the trigger does wait for a scheduled one.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from pathlib import Path

import kubernetes

log = logging.getLogger("recsys.monitoring.kube_job")

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
MANUAL_ANNOTATION = "cronjob.kubernetes.io/instantiate"
REASON_ANNOTATION = "recsys.io/retrain-reason"
CRONJOB_LABEL = "recsys.io/retrain-cronjob"
MAX_NAME = 63  # a Job's name is also the value of its pods' job-name label
MAX_REASON = 1024  # characters of the reason kept in the annotation


class RetrainTriggerError(RuntimeError):
    """Starting a retrain failed: the Kubernetes API refused a step (status: its HTTP code) or was unreachable."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def reason_slug(reason: str) -> str:
    """The reason as a DNS label fragment: lower case, runs of other characters as one '-' ("" if nothing left)."""
    return re.sub(r"[^a-z0-9]+", "-", reason.lower()).strip("-")


def job_name(cronjob: str, reason: str, now_s: float) -> str:
    """`<cronjob>-<reason slug>-<unix time>`, the slug (then the CronJob's name) shortened to fit 63 characters."""
    stamp = str(int(now_s))
    slug = reason_slug(reason)[: max(0, MAX_NAME - len(cronjob) - len(stamp) - 2)].strip("-")
    if slug:
        return f"{cronjob}-{slug}-{stamp}"
    prefix = cronjob[: MAX_NAME - len(stamp) - 1].rstrip("-.")
    return f"{prefix}-{stamp}"


def is_finished(job: kubernetes.client.V1Job) -> bool:
    """Whether the Job has a Complete or Failed condition that is True."""
    conditions = (job.status.conditions if job.status else None) or []
    return any(c.type in ("Complete", "Failed") and c.status == "True" for c in conditions)


def made_from(job: kubernetes.client.V1Job, cronjob: str, uid: str) -> bool:
    """Whether the Job was made from the CronJob: owned by its uid (the schedule, kubectl) or labelled by us."""
    meta = job.metadata
    if meta is None:
        return False
    if any(ref.uid == uid for ref in meta.owner_references or []):
        return True
    return (meta.labels or {}).get(CRONJOB_LABEL) == cronjob


def build_job(cronjob: kubernetes.client.V1CronJob, name: str, reason: str) -> kubernetes.client.V1Job:
    """The Job `kubectl create job --from=cronjob/...` makes, plus our label and the reason annotation."""
    template = cronjob.spec.job_template
    template_meta = template.metadata or kubernetes.client.V1ObjectMeta()
    annotations = {MANUAL_ANNOTATION: "manual", **(template_meta.annotations or {}),
                   REASON_ANNOTATION: reason[:MAX_REASON]}
    labels = {**(template_meta.labels or {}), CRONJOB_LABEL: cronjob.metadata.name}
    owner = kubernetes.client.V1OwnerReference(
        api_version="batch/v1", kind="CronJob", name=cronjob.metadata.name, uid=cronjob.metadata.uid, controller=True
    )
    return kubernetes.client.V1Job(
        api_version="batch/v1",
        kind="Job",
        metadata=kubernetes.client.V1ObjectMeta(
            name=name, namespace=cronjob.metadata.namespace, labels=labels, annotations=annotations,
            owner_references=[owner],
        ),
        spec=template.spec,
    )


def _api_message(exc: kubernetes.client.ApiException) -> str:
    """The message of the API's Status body, else its reason."""
    try:
        message = json.loads(exc.body or "").get("message")
    except (ValueError, AttributeError):
        message = None
    return message or str(exc.reason or "no reason given")


def pod_namespace(service_account_dir: Path = SERVICE_ACCOUNT_DIR) -> str:
    """The pod's namespace, from its mounted ServiceAccount token folder."""
    try:
        namespace = (service_account_dir / "namespace").read_text().strip()
    except OSError as exc:
        raise RetrainTriggerError(
            f"no namespace given and none mounted at {service_account_dir}/namespace ({exc}): set "
            "RECSYS_MONITORING_NAMESPACE, or run in a pod with its ServiceAccount token mounted"
        ) from exc
    if not namespace:
        raise RetrainTriggerError(f"{service_account_dir}/namespace is empty")
    return namespace


def in_cluster_client() -> kubernetes.client.ApiClient:
    """An ApiClient authenticated with the pod's ServiceAccount token (re-read as the kubelet rotates it)."""
    configuration = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(client_configuration=configuration)
    except kubernetes.config.ConfigException as exc:
        raise RetrainTriggerError(
            f"not in a pod with a ServiceAccount token ({exc}): the kubernetes retrain trigger needs "
            "automountServiceAccountToken (the chart's monitoring.retrainOnDrift)"
        ) from exc
    return kubernetes.client.ApiClient(configuration)


class KubernetesRetrainJob:
    """Starts one retrain as a Job made from the retrain CronJob's job template (like `kubectl create job
    --from=cronjob/NAME`)."""

    def __init__(self, cronjob: str, namespace: str = "", api_client: kubernetes.client.ApiClient | None = None,
                 *, timeout_s: float = 10.0, clock: Callable[[], float] = time.time,
                 service_account_dir: Path = SERVICE_ACCOUNT_DIR) -> None:
        """api_client None: the in-cluster configuration (the pod's ServiceAccount token); namespace "": the
        pod's namespace (from service_account_dir). Raises RetrainTriggerError when either is missing."""
        if not cronjob:
            raise RetrainTriggerError("no retrain CronJob named: set RECSYS_MONITORING_RETRAIN_CRONJOB")
        self.cronjob = cronjob
        self.namespace = namespace or pod_namespace(service_account_dir)
        self.api_client = api_client if api_client is not None else in_cluster_client()
        self.batch = kubernetes.client.BatchV1Api(self.api_client)
        self.timeout_s = timeout_s
        self.clock = clock

    def _fail(self, action: str, exc: Exception) -> RetrainTriggerError:
        where = f"in namespace {self.namespace}"
        if isinstance(exc, kubernetes.client.ApiException):
            status = exc.status
            hint = ""
            if status == 403:
                hint = (" (the monitoring ServiceAccount lacks the Role of monitoring.retrainOnDrift: get on this "
                        "CronJob, create/get/list on Jobs)")
            elif status == 404:
                hint = " (is cronJobs.retrain enabled?)"
            return RetrainTriggerError(
                f"{action} {where}: the Kubernetes API answered {status} {exc.reason}: {_api_message(exc)}{hint}",
                status=status,
            )
        return RetrainTriggerError(f"{action} {where}: the Kubernetes API could not be reached: {exc}")

    def read_cronjob(self) -> kubernetes.client.V1CronJob:
        """The retrain CronJob (its job template and uid)."""
        try:
            return self.batch.read_namespaced_cron_job(self.cronjob, self.namespace, _request_timeout=self.timeout_s)
        except Exception as exc:  # ApiException, or urllib3's connection errors
            raise self._fail(f"reading CronJob {self.cronjob}", exc) from exc

    def active_jobs(self, uid: str) -> list[str]:
        """Names of the Jobs made from the CronJob (by its schedule or a trigger) that have not finished."""
        names: list[str] = []
        token: str | None = None
        while True:
            try:
                page = self.batch.list_namespaced_job(self.namespace, limit=500, _continue=token,
                                                      _request_timeout=self.timeout_s)
            except Exception as exc:
                raise self._fail("listing Jobs", exc) from exc
            names += [j.metadata.name for j in page.items or []
                      if made_from(j, self.cronjob, uid) and not is_finished(j)]
            token = page.metadata.var_continue if page.metadata else None
            if not token:
                return names

    def trigger(self, reason: str) -> str | None:
        """Create the Job and return its name; None when a Job made from the CronJob is still active (or one of
        the same name was just created). Raises RetrainTriggerError when the API refuses or fails."""
        cronjob = self.read_cronjob()
        active = self.active_jobs(cronjob.metadata.uid)
        if active:
            log.info("a retrain Job is still active: starting none", extra={"jobs": active, "reason": reason})
            return None
        body = build_job(cronjob, job_name(self.cronjob, reason, self.clock()), reason)
        try:
            created = self.batch.create_namespaced_job(self.namespace, body, _request_timeout=self.timeout_s)
        except kubernetes.client.ApiException as exc:
            if exc.status == 409:
                log.info("retrain Job %s already exists", body.metadata.name, extra={"reason": reason})
                return None
            raise self._fail(f"creating Job {body.metadata.name}", exc) from exc
        except Exception as exc:
            raise self._fail(f"creating Job {body.metadata.name}", exc) from exc
        name = created.metadata.name
        log.info("started retrain Job %s from CronJob %s", name, self.cronjob,
                 extra={"reason": reason, "namespace": self.namespace})
        return name

    def close(self) -> None:
        """Close the API client's connections."""
        self.api_client.close()
