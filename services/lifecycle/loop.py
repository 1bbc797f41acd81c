"""The lifecycle loop `recsys serve` runs beside the services: canary decisions every `check_s`, and
`recsys retrain` on a schedule (`retrain_interval_s`) or on demand (`request_retrain`), one at a time and never
while a canary runs. After a promotion the new `latest` is materialized and indexed, as after `recsys train`."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from recsys.common import children
from recsys.lifecycle import canary
from recsys.lifecycle.settings import LifecycleSettings
from recsys.model import requests, rollout
from recsys.model.registry import Registry
from recsys.model.requests import REQUEST, request_retrain  # noqa: F401 - the loop's API, kept importable here

log = logging.getLogger("recsys.lifecycle.loop")

Runner = Callable[[list[str]], int]


class CliRunner:
    """Runs `recsys` steps as their own processes, with `env`, appending to `log_path` (None: this process's
    output); `terminate` stops the step in flight (the loop's owner stopping must not leave a retrain behind)."""

    def __init__(self, env: dict[str, str], log_path: Path | None = None) -> None:
        self.env = env
        self.log_path = log_path
        self._running: subprocess.Popen | None = None

    def __call__(self, argv: list[str]) -> int:
        command = [sys.executable, "-m", "recsys.cli", *argv]
        out = None
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            out = open(self.log_path, "ab")  # noqa: SIM115 - closed below, after the process ends
        try:
            self._running = children.spawn(command, env={**os.environ, **self.env}, stdout=out,
                                           stderr=subprocess.STDOUT if out else None)
            return self._running.wait()
        finally:
            self._running = None
            if out is not None:
                out.close()

    def terminate(self, timeout_s: float = 10.0) -> None:
        """Stop the step in flight and what it started, if any (SIGTERM, then SIGKILL after `timeout_s`)."""
        proc = self._running
        if proc is not None:
            children.stop(proc, timeout_s)


def run_cli(env: dict[str, str], log_path: Path | None = None) -> CliRunner:
    """A runner of `recsys` steps as their own processes (see `CliRunner`)."""
    return CliRunner(env, log_path)


def follow_steps(index: bool = True) -> list[list[str]]:
    """The `recsys` steps after a promotion: the new `latest`'s features into the online store and, with `index`,
    its embeddings into Milvus (the ranking service follows `latest` by itself)."""
    return [["materialize"], *([["index", "--quiet"]] if index else [])]


class LifecycleLoop:
    """Canary checks and retrains in one background thread (so never two retrains at once)."""

    def __init__(self, settings: LifecycleSettings, run: Runner, log_uri: str = "") -> None:
        self.settings = settings
        self.registry = Registry(settings.models_dir)
        self.run = run
        self.log_uri = log_uri
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="lifecycle", daemon=True)
        self._last_retrain = time.monotonic()
        self.retrains = 0

    def start(self) -> LifecycleLoop:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the loop; a step in flight (a retrain) is terminated when the runner can."""
        self._stop.set()
        terminate = getattr(self.run, "terminate", None)
        if terminate is not None:
            terminate()
        self._thread.join(timeout_s)

    def _loop(self) -> None:
        while not self._stop.wait(self.settings.check_s):
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - one failed check must not end the loop
                log.exception("lifecycle check failed")

    def tick(self) -> None:
        """One round: decide the canary, else retrain when one is due or requested."""
        result = canary.check(self.registry, self.settings.monitoring_addr, self.settings.policy)
        if result is not None:
            if result.verdict.action == rollout.PROMOTE:
                self._follow_latest()
            return
        due = self.settings.retrain_interval_s > 0 and (
            time.monotonic() - self._last_retrain >= self.settings.retrain_interval_s)
        age = requests.age_s(self.settings.models_dir)
        ready = age is not None and age >= self.settings.retrain_delay_s
        reason = requests.take_request(self.settings.models_dir) if ready else None
        if reason is not None or due:
            self.retrain(reason or "schedule")

    def retrain(self, reason: str) -> int:
        """Run `recsys retrain` once (the gate and the canary decide the rest); returns its exit code."""
        self._last_retrain = time.monotonic()
        argv = ["retrain", "--models", str(self.settings.models_dir), "--quiet"]
        base = self.settings.retrain_base
        if self.log_uri:
            argv += ["--base", str(base), "--log", self.log_uri]
        else:
            argv += ["--data", str(base)]
        log.info("retrain", extra={"reason": reason, "argv": argv})
        before = self.registry.latest()
        self.registry.record("retrain_started", reason=reason)
        code = self.run(argv)
        self.retrains += 1
        if code != 0:
            self.registry.record("retrain_failed", reason=reason, exit_code=code)
        elif self.registry.latest() != before:
            self._follow_latest()  # promoted at once (no canary share)
        return code

    def _follow_latest(self) -> None:
        """The online store and the Milvus index follow the new `latest`."""
        for argv in follow_steps():
            code = self.run(argv)
            if code != 0:
                log.error("step after promotion failed", extra={"argv": argv, "exit_code": code})

