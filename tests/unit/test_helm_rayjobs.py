"""Offline work as KubeRay RayJobs, in the chart, offline: off by default; on, the batch-recommend RayJob is valid
against the vendored KubeRay CRD (deploy/k8s-local/crds/kuberay, what `make test-k8s` applies), its entrypoint
runs the batch on Ray Data joining its own cluster (`--ray-address auto --workers N`), its workers are N one-CPU
pods from the jobs image with the artifacts volume read-write and the jobs' environment, its head schedules
nothing, and with global.networkPolicy the Ray pods may talk among themselves."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # helm_support sits beside this file (importlib import mode)
from helm_support import Helm, by_kind, named, offline_helm, ours, validation_errors  # noqa: E402

ON = "jobs.rayJobs.definitions.batch-recommend.enabled=true"


@pytest.fixture(scope="module")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return offline_helm(tmp_path_factory.mktemp("helm-rayjobs"))


def test_off_by_default(helm: Helm):
    assert not by_kind(helm.template("recsys"), "RayJob")


def test_batch_recommend_rayjob_is_valid_and_runs_on_its_own_cluster(helm: Helm):
    manifests = ours(helm.template("recsys", sets=[ON, "jobs.rayJobs.definitions.batch-recommend.workers=3",
                                                   "global.networkPolicy.enabled=true"]))
    job = named(manifests, "RayJob")["rs-jobs-batch-recommend"]
    assert validation_errors(job) == []
    hooks = job["metadata"]["annotations"]
    assert hooks["helm.sh/hook"] == "post-install" and int(hooks["helm.sh/hook-weight"]) > 2  # after index
    spec = job["spec"]
    argv = shlex.split(spec["entrypoint"])
    assert argv[:2] == ["recsys", "batch-recommend"] and argv[-4:] == ["--ray-address", "auto", "--workers", "3"]
    assert argv[argv.index("--format") + 1] == "parquet"
    assert spec["shutdownAfterJobFinishes"] is True
    cluster = spec["rayClusterSpec"]
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    (group,) = cluster["workerGroupSpecs"]
    assert group["replicas"] == group["minReplicas"] == group["maxReplicas"] == 3
    assert group["rayStartParams"]["num-cpus"] == "1"
    for template in (cluster["headGroupSpec"]["template"], group["template"]):
        (container,) = template["spec"]["containers"]
        assert container["image"].endswith("-jobs:" + container["image"].rsplit(":", 1)[1])
        assert "command" not in container  # KubeRay supplies `ray start`
        mounts = {m["name"]: m for m in container["volumeMounts"]}
        assert mounts["artifacts"].get("readOnly", False) is False
        assert container["envFrom"][0]["configMapRef"]["name"] == "rs-jobs-env"
        assert template["metadata"]["labels"]["recsys.io/job"] == "batch-recommend"
    policy = named(manifests, "NetworkPolicy")["rs-jobs-ray"]
    assert validation_errors(policy) == []
    peers = [rule["from"][0] for rule in policy["spec"]["ingress"]]
    assert {"podSelector": {"matchLabels": {"recsys.io/job": "batch-recommend"}}} in peers


def test_schema_rejects_a_rayjob_without_workers(helm: Helm):
    from helm_support import HelmError

    with pytest.raises(HelmError, match="workers"):
        helm.template("recsys", sets=[ON, "jobs.rayJobs.definitions.batch-recommend.workers=0"])
