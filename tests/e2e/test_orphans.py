"""A killed `recsys serve` leaves nothing behind: SIGKILL to it (no `finally`, no signal handler runs) and every
process it started, the services and their helpers (Ray's raylet and GCS under ranking, Milvus Lite's server under
candidates), exits by itself within the grace period. In `make test-slow` (a second whole stack costs about a
minute); `tests/unit/test_children.py` kills a parent with SIGKILL in `make test`."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import psutil
import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(360)]  # make test-slow


def _running(pids: list[int]) -> list[str]:
    alive = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            if proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(f"{pid} {' '.join(proc.cmdline())[:120]}")
        except psutil.NoSuchProcess:
            pass
    return alive


def test_recsys_serve_killed_with_sigkill_leaves_no_process(stack, tmp_path):
    # A second stack from the e2e stack's models and features, with its own Milvus Lite file and folders, on the
    # same broker under topics and consumer groups of its own (so it takes nothing from the running stack).
    var = tmp_path / "var"
    for part in ("models", "feast", "compiled"):
        shutil.copytree(stack.cfg.var_dir / part, var / part, symlinks=True)
    env = {**os.environ, "RECSYS_VAR_DIR": str(var), "RECSYS_MODELS_DIR": str(var / "models"),
           "RECSYS_KAFKA_BOOTSTRAP": stack.broker.bootstrap}
    for name in ("EVENTS", "IMPRESSIONS", "PREDICTIONS", "DLQ"):
        env[f"RECSYS_KAFKA_{name}_TOPIC"] = f"orphans.{name.lower()}"
    for name in ("EVENTLOG_GROUP", "FEATURES_CONSUMER_GROUP", "MONITORING_GROUP"):
        env[f"RECSYS_{name}"] = f"orphans-{name.lower()}"
    cli = [sys.executable, "-m", "recsys.cli"]
    subprocess.run([*cli, "index", "--quiet"], env=env, check=True, timeout=180)

    log = open(tmp_path / "serve.log", "w+")  # noqa: SIM115 - closed in finally
    serve = subprocess.Popen([*cli, "serve", "--free-ports"], env=env, stdout=subprocess.PIPE, stderr=log,
                             text=True)
    pids: list[int] = []
    try:
        line = serve.stdout.readline()
        assert line.startswith("serving:"), f"{line}\n{(tmp_path / 'serve.log').read_text()[-3000:]}"
        time.sleep(2.0)  # the services' own helpers settle
        found = {}
        for proc in psutil.Process(serve.pid).children(recursive=True):
            try:
                found[proc.pid] = " ".join(proc.cmdline())
            except psutil.Error:  # a zombie, or gone meanwhile
                pass
        pids, commands = list(found), "\n".join(found.values())
        for helper in ("raylet", "gcs_server", "milvus", "recsys.gateway", "recsys.ranking", "recsys-watchdog"):
            assert helper in commands, f"{helper} not among the processes serve started:\n{commands}"

        serve.send_signal(signal.SIGKILL)
        serve.wait()
        deadline = time.monotonic() + 60
        while _running(pids) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _running(pids) == []
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait()
        for pid in pids:  # only if the test failed: what we started, by PID
            try:
                psutil.Process(pid).kill()
            except psutil.NoSuchProcess:
                pass
        log.close()
