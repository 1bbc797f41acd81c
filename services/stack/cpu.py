"""CPU time used by each supervised service (its whole process tree: Ray's raylet and workers, Milvus Lite),
for benchmarks that report where the CPU of a request goes."""

from __future__ import annotations

import psutil

from recsys.stack.supervisor import Supervisor


def _tree_cpu_s(pid: int) -> float:
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for proc in procs:
        try:
            t = proc.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            continue
    return total


def cpu_seconds(supervisor: Supervisor) -> dict[str, float]:
    """User + system CPU seconds so far, per service (summed over the service's live process tree)."""
    return {name: _tree_cpu_s(child.proc.pid) for name, child in supervisor.children.items() if child.proc}


def cpu_ms_per_request(before: dict[str, float], after: dict[str, float], requests: int) -> dict[str, float]:
    """CPU milliseconds per request, per service, between two `cpu_seconds` snapshots."""
    n = max(1, requests)
    return {name: round((after.get(name, 0.0) - before.get(name, 0.0)) * 1000 / n, 2) for name in after}
