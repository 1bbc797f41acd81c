"""Helpers of the tests in tests/k8s: the local Kubernetes that deploy/k8s-local/cluster.sh runs, and kubectl."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CLUSTER_SH = REPO / "deploy" / "k8s-local" / "cluster.sh"
LOG_TAIL_LINES = 80


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
