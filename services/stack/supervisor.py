"""Start each service as its own process, wait for readiness, restart crashed ones, stop them by PID."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from recsys.common import children

log = logging.getLogger("recsys.supervisor")


@dataclass
class ServiceSpec:
    """How to run and probe one service."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    ready: Callable[[], bool] | None = None
    ready_timeout_s: float = 120.0


@dataclass
class _Child:
    spec: ServiceSpec
    proc: subprocess.Popen | None = None
    restarts: int = 0
    log_path: Path | None = None


class Supervisor:
    """Owns the child processes; each runs in its own session so its helpers (e.g. Ray) stop with it, and each
    session dies with this process however it dies (`recsys.common.children`)."""

    def __init__(self, log_dir: Path, restart: bool = True) -> None:
        self.log_dir = log_dir
        self.restart = restart
        self.children: dict[str, _Child] = {}
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None

    def start(self, spec: ServiceSpec, wait: bool = True) -> None:
        """Launch spec and (by default) block until its readiness probe passes."""
        child = self.children.setdefault(spec.name, _Child(spec))
        self._launch(child)
        if wait:
            self.wait_ready(spec.name)

    def _launch(self, child: _Child) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        child.log_path = self.log_dir / f"{child.spec.name}.log"
        env = {**os.environ, **child.spec.env}
        with open(child.log_path, "ab") as out:
            child.proc = children.spawn(child.spec.argv, env=env, stdout=out, stderr=subprocess.STDOUT)
        log.info("started", extra={"service": child.spec.name, "pid": child.proc.pid})

    def wait_ready(self, name: str) -> None:
        child = self.children[name]
        deadline = time.monotonic() + child.spec.ready_timeout_s
        while time.monotonic() < deadline:
            if child.proc is not None and child.proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {child.proc.returncode}; see {child.log_path}\n"
                                   + self.tail(name))
            if child.spec.ready is None or _safe(child.spec.ready):
                return
            time.sleep(0.2)
        raise TimeoutError(f"{name} not ready after {child.spec.ready_timeout_s}s; see {child.log_path}\n"
                           + self.tail(name))

    def tail(self, name: str, lines: int = 20) -> str:
        path = self.children[name].log_path
        if path is None or not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def watch(self, interval_s: float = 0.2) -> None:
        """Restart crashed children in a background thread until stop()."""

        def loop() -> None:
            while not self._stopping.wait(interval_s):
                for child in list(self.children.values()):
                    if child.proc is not None and child.proc.poll() is not None and not self._stopping.is_set():
                        log.warning("service exited; restarting",
                                    extra={"service": child.spec.name, "code": child.proc.returncode})
                        child.restarts += 1
                        self._launch(child)

        if self.restart:
            self._watcher = threading.Thread(target=loop, name="supervisor", daemon=True)
            self._watcher.start()

    def kill(self, name: str, sig: int = signal.SIGKILL) -> int:
        """Send sig to one child (chaos tests); returns its PID."""
        proc = self.children[name].proc
        assert proc is not None
        os.killpg(proc.pid, sig)
        return proc.pid

    def stop(self, grace_s: float = 15.0) -> None:
        """Stop every child: SIGTERM to all at once, wait up to grace_s in all, then SIGKILL the rest."""
        self._stopping.set()
        running = [c.proc for c in self.children.values() if c.proc is not None and c.proc.poll() is None]
        for proc in running:
            children.signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for proc in running:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for proc in running:  # stragglers, and helpers a service left in its own session
            children.signal_group(proc.pid, signal.SIGKILL)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                log.error("child did not die", extra={"pid": proc.pid})


def _safe(probe: Callable[[], bool]) -> bool:
    try:
        return bool(probe())
    except Exception:  # noqa: BLE001 - a probe that raises means "not ready yet"
        return False


def python_module(module: str, *args: str) -> list[str]:
    """argv running `python -m module` with this interpreter."""
    return [sys.executable, "-m", module, *args]
