"""Child processes that die with their parent, however the parent dies.

`spawn` starts a child in a session (and process group) of its own, so that stopping it also stops the helpers it
starts (Ray's raylet, Milvus Lite's server), and ties that group to this process: a small watchdog, in a session
of its own too, sees this process go (even by SIGKILL, when no `finally` runs) and sends the child's whole group
SIGTERM, then SIGKILL after a grace period. Linux's PR_SET_PDEATHSIG is not enough on its own: it reaches only the
direct child, fires when the *thread* that forked it ends, and is cleared by set-uid execs.

The watchdog is one bash process per child, asleep in a `read -t` (no fork per tick): it notices the parent is gone
when it has been re-parented (its own parent PID is no longer this one; a zombie parent still answers `kill -0`),
and it exits by itself once the child's group is empty (the child stopped normally).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading

#: Seconds between the watchdog's checks; the parent's death is acted on within this.
CHECK_S = 0.5

_WATCHDOG = r"""
parent=$1 group=$2 grace=$3 tick=$4
exec {nap}<> <(:)  # a pipe nobody writes: `read -t` on it sleeps without forking `sleep`
parent_now() { local stat; read -r stat < "/proc/$$/stat"; stat=${stat##*) }; set -- $stat; now=$2; }
alive() { kill -0 -- "-$group" 2>/dev/null; }
while parent_now && [[ $now == "$parent" ]]; do
  alive || exit 0
  read -r -t "$tick" -u "$nap" _ || true
done
alive || exit 0
kill -TERM -- "-$group" 2>/dev/null
deadline=$((SECONDS + grace))
while alive && ((SECONDS < deadline)); do read -r -t 0.2 -u "$nap" _ || true; done
kill -KILL -- "-$group" 2>/dev/null
exit 0
"""

_watchdogs: list[subprocess.Popen] = []
_lock = threading.Lock()


def spawn(argv: list[str], *, grace_s: float = 15.0, **popen_kwargs: object) -> subprocess.Popen:
    """`subprocess.Popen(argv, **popen_kwargs)` in a new session, whose whole process group gets SIGTERM and,
    `grace_s` later, SIGKILL once this process is gone (see the module's docstring)."""
    popen_kwargs.pop("start_new_session", None)
    proc = subprocess.Popen(argv, start_new_session=True, **popen_kwargs)  # type: ignore[call-overload]
    try:
        _watch(proc.pid, grace_s)
    except OSError:
        signal_group(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    return proc


def stop(proc: subprocess.Popen, grace_s: float = 10.0) -> int:
    """Stop a spawned child's whole group: SIGTERM, then SIGKILL after `grace_s`; returns its exit code."""
    if proc.poll() is None:
        signal_group(proc.pid, signal.SIGTERM)
        try:
            return proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            pass
    signal_group(proc.pid, signal.SIGKILL)  # the child, and helpers it left in its group
    return proc.wait()


def _watch(group: int, grace_s: float) -> None:
    argv = ["bash", "-c", _WATCHDOG, "recsys-watchdog", str(os.getpid()), str(group),
            str(max(1, round(grace_s))), str(CHECK_S)]
    watchdog = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)
    with _lock:  # reap the watchdogs whose child has gone, keep the rest
        _watchdogs[:] = [w for w in _watchdogs if w.poll() is None]
        _watchdogs.append(watchdog)


def signal_group(pid: int, sig: int) -> None:
    """Send sig to the process group led by pid (a spawned child's); nothing if it is gone."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
