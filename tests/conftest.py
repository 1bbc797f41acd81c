"""Shared pytest fixtures: an isolated RECSYS_VAR_DIR, and (for integration and e2e tests) a private Kafka
broker and a private Redis.

Each is started with the deploy/local scripts on free loopback ports and a temporary state folder, and
stopped by the PID in its pidfile at the end of the session, even when tests fail; the scripts' watchdog
(--watch-pid) also stops it if this pytest process is killed before its teardown runs. Set
RECSYS_TEST_KAFKA_BOOTSTRAP (host:port) or RECSYS_TEST_REDIS_URL (redis://host:port/db) to use a running
server instead.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from recsys.common.entry import process_defaults
from recsys.common.ports import free_port

process_defaults()  # before any test imports torch or LightGBM, as the recsys processes do

DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "local"

# tests/k8s run against a local Kubernetes (deploy/k8s-local/cluster.sh; its binaries take ~35 min to build once):
# collected only with RECSYS_K8S_TESTS=1, so `make test` leaves them out.
collect_ignore = [] if os.environ.get("RECSYS_K8S_TESTS") == "1" else ["k8s"]


def _kill_pidfile(pidfile: Path) -> None:
    """Last resort when the stop script failed: KILL the PID in `pidfile`, if any."""
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    for _ in range(100):
        if not Path(f"/proc/{pid}").exists():
            return
        time.sleep(0.05)


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout)


@contextmanager
def _managed(script: str, args: list[str], pidfile: Path, start_timeout: float) -> Iterator[None]:
    """Start a server with `script start`, yield, and stop it with `script stop` (KILL as a fallback)."""
    try:
        started = _run([str(DEPLOY / script), "start", *args], timeout=start_timeout)
        if started.returncode != 0:
            pytest.fail(f"{script} start failed:\n{started.stdout}\n{started.stderr}", pytrace=False)
        yield
    finally:
        try:
            _run([str(DEPLOY / script), "stop", *args], timeout=60)
        except subprocess.TimeoutExpired:
            pass
        _kill_pidfile(pidfile)


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap servers ("127.0.0.1:PORT") of a private single-node Kafka for this test session."""
    external = os.environ.get("RECSYS_TEST_KAFKA_BOOTSTRAP")
    if external:
        yield external
        return
    if shutil.which("java") is None:
        pytest.skip("Kafka needs Java 17+ on PATH (or set RECSYS_TEST_KAFKA_BOOTSTRAP)")
    port = free_port()
    controller_port = free_port()
    while controller_port == port:
        controller_port = free_port()
    state = tmp_path_factory.mktemp("kafka")
    args = ["--port", str(port), "--controller-port", str(controller_port), "--state-dir", str(state),
            "--watch-pid", str(os.getpid())]
    # The first start may also resolve the broker from Maven Central.
    with _managed("kafka.sh", args, state / "kafka.pid", start_timeout=300):
        yield f"127.0.0.1:{port}"


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL ("redis://127.0.0.1:PORT/0") of a private Redis for this test session."""
    external = os.environ.get("RECSYS_TEST_REDIS_URL")
    if external:
        yield external
        return
    if shutil.which("redis-server") is None and shutil.which("apt-get") is None:
        pytest.skip("redis-server is not installed (or set RECSYS_TEST_REDIS_URL)")
    port = free_port()
    state = tmp_path_factory.mktemp("redis")
    args = ["--port", str(port), "--state-dir", str(state), "--watch-pid", str(os.getpid())]
    with _managed("redis.sh", args, state / "redis.pid", start_timeout=180):
        yield f"redis://127.0.0.1:{port}/0"


@pytest.fixture(autouse=True, scope="session")
def _isolated_var_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Local state of tests stays under a temporary RECSYS_VAR_DIR; Ray reports no usage stats."""
    os.environ.setdefault("RECSYS_VAR_DIR", str(tmp_path_factory.mktemp("var")))
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    yield
