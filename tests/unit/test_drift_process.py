"""The drift worker process: a group-wide stop signal is left to the parent; a killed worker is restarted
without ever blocking the parent's wake-ups."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from recsys.monitoring.drift_process import DriftProcess
from recsys.monitoring.settings import MonitoringSettings
from recsys.monitoring.store import MonitoringStore


@pytest.fixture
def drift(tmp_path):
    settings = MonitoringSettings(state_dir=tmp_path / "state", reference_path=tmp_path / "none.parquet")
    store = MonitoringStore(settings.db_path)
    process = DriftProcess(settings, store, watch_interval_s=0.1).start()
    time.sleep(1.5)  # the child is up, its handlers installed, waiting for a wake-up
    yield process
    stopper = threading.Thread(target=process.stop, kwargs={"timeout_s": 10}, daemon=True)
    stopper.start()
    stopper.join(30)
    store.close()
    assert not stopper.is_alive(), "stop() blocked"


def test_sigterm_to_the_worker_is_left_to_the_parent_which_stops_it_without_a_restart(drift, caplog):
    child = drift._proc
    os.kill(child.pid, signal.SIGTERM)  # what a supervisor's killpg sends every process
    time.sleep(0.5)
    assert child.is_alive() and drift._proc is child  # ignored: neither dead nor restarted
    drift.stop(timeout_s=10)
    assert not child.is_alive() and child.exitcode == 0
    assert "restarting" not in caplog.text


def test_a_killed_worker_is_restarted_and_wake_ups_never_block(drift):
    child = drift._proc
    os.kill(child.pid, signal.SIGKILL)  # killed while it waits for a wake-up
    child.join(5)
    notifier = threading.Thread(target=lambda: [drift.notify() for _ in range(100)], daemon=True)
    notifier.start()
    notifier.join(5)
    assert not notifier.is_alive(), "notify() blocked on the dead worker"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (drift._proc is child or not drift._proc.is_alive()):
        time.sleep(0.05)
    assert drift._proc is not child and drift._proc.is_alive()
    drift.notify()


def test_the_html_thread_alone_drops_to_idle_priority():
    from recsys.monitoring.drift_process import _lowest_priority

    seen = {}

    def html_thread():
        seen["got"] = _lowest_priority()
        seen["policy"] = os.sched_getscheduler(0)

    thread = threading.Thread(target=html_thread)
    thread.start()
    thread.join(5)
    assert seen["got"] == "idle" and seen["policy"] == os.SCHED_IDLE
    assert os.sched_getscheduler(0) == os.SCHED_OTHER  # the rest of the process keeps its priority
