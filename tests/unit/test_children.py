"""recsys.common.children: a spawned child and everything in its process group die with the parent, however the
parent dies (SIGKILL included), and the watchdogs go away by themselves."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from recsys.common import children

# A parent that spawns two children: one whose group holds a grandchild and ignores SIGTERM (so only the SIGKILL
# after the grace period stops it), one plain. It prints their PIDs, then waits to be killed.
PARENT = """
import sys, time
from recsys.common import children
stubborn = children.spawn(["bash", "-c", "trap '' TERM; sleep 600 & sleep 600"], grace_s=2)
plain = children.spawn(["sleep", "600"], grace_s=2)
print(stubborn.pid, plain.pid, flush=True)
time.sleep(600)
"""


def _commands(pid: int) -> dict[int, str]:
    """PID -> command line of every live descendant of pid (zombies and processes gone meanwhile left out)."""
    out = {}
    for proc in psutil.Process(pid).children(recursive=True):
        try:
            out[proc.pid] = " ".join(proc.cmdline())
        except psutil.Error:
            pass
    return out


def _gone(pids: list[int], timeout_s: float) -> list[int]:
    """The PIDs among `pids` still running (not zombies) after up to timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        alive = []
        for pid in pids:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    alive.append(pid)
            except psutil.NoSuchProcess:
                pass
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


@pytest.mark.timeout(60)
def test_children_and_their_groups_die_when_the_parent_is_killed():
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    try:
        line = parent.stdout.readline()
        assert line, "the parent printed nothing"
        # the shells fork their sleeps, and the watchdogs exec, a moment later (longer on a busy machine): a process
        # caught between fork and exec shows an empty command line
        deadline = time.monotonic() + 10
        while True:
            found = _commands(parent.pid)
            pids, commands = list(found), list(found.values())
            settled = (sum("sleep 600" == c for c in commands) == 3
                       and sum("recsys-watchdog" in c for c in commands) == 2)
            if settled or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert sum("sleep 600" == c for c in commands) == 3, commands  # the grandchild, the stubborn, the plain
        assert sum("recsys-watchdog" in c for c in commands) == 2, commands
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        assert _gone(pids, timeout_s=15) == []
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


@pytest.mark.timeout(30)
def test_a_watchdog_leaves_once_its_child_has_ended():
    proc = children.spawn(["sleep", "600"])
    mine = f"recsys-watchdog {os.getpid()} {proc.pid} "  # its argv: parent, group, grace, tick
    deadline = time.monotonic() + 5
    watchdogs: list[int] = []
    while not watchdogs and time.monotonic() < deadline:
        watchdogs = [pid for pid, command in _commands(os.getpid()).items() if mine in command]
        time.sleep(0.05)
    assert watchdogs, "no watchdog was started"
    proc.terminate()
    proc.wait()
    assert _gone(watchdogs, timeout_s=10) == []


@pytest.mark.timeout(30)
def test_stop_ends_the_whole_group():
    proc = children.spawn(["bash", "-c", "trap '' TERM; sleep 600 & sleep 600"])
    time.sleep(0.5)
    group = [*_commands(proc.pid), proc.pid]
    started = time.monotonic()
    code = children.stop(proc, grace_s=1.0)
    assert code == -signal.SIGKILL  # SIGTERM was ignored; SIGKILL after the grace period ended it
    assert time.monotonic() - started < 5
    assert _gone(group, timeout_s=5) == []
    assert os.getpgid(os.getpid()) != proc.pid  # the child had a group of its own
