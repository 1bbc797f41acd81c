"""A local Kubernetes for the tests in tests/k8s: `deploy/k8s-local/cluster.sh up` (etcd, kube-apiserver,
kube-controller-manager, kube-scheduler and kwok's fake nodes, all on 127.0.0.1), once per session.

These tests are collected only with RECSYS_K8S_TESTS=1 (see tests/conftest.py). A cluster that fails to start
fails the tests with its log tail; nothing is skipped. The cluster is stopped at the end unless
RECSYS_K8S_KEEP=1, or unless it was already running before the session (then it is used and left running).
The first `up` builds the binaries (~35 min on 2 cores); that and the start are not counted in the tests'
timeouts (pytest-timeout's func_only), only in the fixture's own limit.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # k8s_support sits beside this file (importlib import mode)
from k8s_support import CLUSTER_SH, K8sCluster, cluster_env, run, tail  # noqa: E402

K8S_TESTS = Path(__file__).resolve().parent
UP_TIMEOUT = float(os.environ.get("RECSYS_K8S_UP_TIMEOUT_S", "3600"))  # a cold build of the binaries included


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The session's cluster start (and a cold build) belongs to the setup of the first test that uses it: keep
    # it out of the per-test timeout, which then covers the test function only.
    for item in items:
        if (K8S_TESTS in item.path.parents and "cluster" in getattr(item, "fixturenames", ())
                and item.get_closest_marker("timeout") is None):
            item.add_marker(pytest.mark.timeout(300, func_only=True))


@pytest.fixture(scope="session")
def cluster() -> Iterator[K8sCluster]:
    """A running local Kubernetes with kwok nodes (type=kwok), its admin kubeconfig and binaries."""
    was_running = run(["bash", str(CLUSTER_SH), "status"], check=False, timeout=60).returncode == 0
    try:
        up = subprocess.run(["bash", str(CLUSTER_SH), "up"], capture_output=True, text=True, timeout=UP_TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        run(["bash", str(CLUSTER_SH), "down"], check=False, timeout=120)
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        raise RuntimeError(f"cluster.sh up did not finish in {UP_TIMEOUT:.0f}s:\n{tail(err)}") from None
    if up.returncode != 0:
        raise RuntimeError(f"cluster.sh up failed (exit {up.returncode}):\n{tail(up.stdout, 20)}\n{tail(up.stderr)}")

    kubeconfig, bin_dir = cluster_env()
    env = dict(os.environ, KUBECONFIG=str(kubeconfig), PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    try:
        yield K8sCluster(kubeconfig=kubeconfig, kubectl=bin_dir / "kubectl", bin_dir=bin_dir,
                         state_dir=kubeconfig.parent, env=env)
    finally:
        if was_running or os.environ.get("RECSYS_K8S_KEEP") == "1":
            print(f"\nleaving the local Kubernetes running: export KUBECONFIG={kubeconfig}")
        else:
            run(["bash", str(CLUSTER_SH), "down"], check=False, timeout=120)
