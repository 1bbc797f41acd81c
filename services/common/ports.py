"""Free TCP ports for local stacks, tests and benchmarks, picked where no other process will take them.

A port that is free "a moment ago" (bind port 0, read it, close) goes back to the kernel's ephemeral pool,
and every `bind(..., 0)` and outgoing connection in the meantime may get it: a local Ray cluster alone opens
dozens of servers on port 0 (workers, agents) and picks more at random above the ephemeral floor. A service
started a minute later then finds its port held by someone else, or, worse, a client reaches a stranger
that answers UNIMPLEMENTED. `free_port` therefore picks at random *below* the ephemeral range (never handed
out by the kernel) and above Ray's worker range, checks that nothing listens there, and never hands the same
port out twice in one process.
"""

from __future__ import annotations

import random
import socket
import threading
from pathlib import Path

EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
DEFAULT_EPHEMERAL = (32768, 60999)
#: Ray's default worker ports end at 19999 (`ray start`); stay above them.
FLOOR = 20000
_given: set[int] = set()
_lock = threading.Lock()


def ephemeral_range(path: Path = EPHEMERAL_RANGE) -> tuple[int, int]:
    """The kernel's (first, last) ephemeral port; Linux' default when it cannot be read."""
    try:
        low, high = (int(x) for x in path.read_text().split())
    except (OSError, ValueError):
        return DEFAULT_EPHEMERAL
    return low, high


def quiet_ranges(ephemeral: tuple[int, int]) -> list[tuple[int, int]]:
    """Port ranges above FLOOR that the kernel never hands out on its own, widest first."""
    low, high = ephemeral
    ranges = [(FLOOR, low - 1), (max(FLOOR, high + 1), 65535)]
    return sorted((r for r in ranges if r[1] - r[0] >= 100), key=lambda r: r[0] - r[1])


def _bindable(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port_block(size: int, host: str = "127.0.0.1", attempts: int = 500) -> int:
    """The first of `size` consecutive ports that are all free as `free_port` defines it (a quiet range only)."""
    ranges = quiet_ranges(ephemeral_range())
    with _lock:
        for _ in range(attempts if ranges else 0):
            first, last = ranges[0]
            start = random.randint(first, last - size + 1)
            block = range(start, start + size)
            if all(p not in _given and _bindable(host, p) and _bindable("0.0.0.0", p) for p in block):
                _given.update(block)
                return start
    raise RuntimeError(f"no {size} consecutive free ports on {host}")


def free_port(host: str = "127.0.0.1", attempts: int = 500) -> int:
    """A port nothing listens on at host, outside the ephemeral range, not returned before by this process."""
    ranges = quiet_ranges(ephemeral_range())
    with _lock:
        for _ in range(attempts if ranges else 0):
            first, last = ranges[0] if random.random() < 0.8 or len(ranges) == 1 else ranges[1]
            port = random.randint(first, last)
            if port not in _given and _bindable(host, port) and _bindable("0.0.0.0", port):
                _given.add(port)
                return port
        for _ in range(attempts):  # no quiet range on this machine: fall back to the kernel's choice
            with socket.socket() as sock:
                sock.bind((host, 0))
                port = int(sock.getsockname()[1])
            if port not in _given:
                _given.add(port)
                return port
    raise RuntimeError(f"no free port on {host}")
