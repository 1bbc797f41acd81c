"""Background work that must not crowd out serving: a loop that rests in proportion to the work it just did.

A burst of catalogue changes is work for every service that follows the items topic (embedding and upserting
into Milvus, writing online features). Done at once, it takes the cores the serving threads need for a few
seconds and Recommend's tail latency jumps; spread out, the same work costs the serving path little. `DutyCycle`
keeps a loop's busy time to at most `share` of the wall time: after work that took t seconds, it rests
t * (1 / share - 1). With nothing to do it costs nothing, and a single change is applied at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from recsys.common.config import CATALOG_APPLY_SHARE


class DutyCycle:
    """Rest after each piece of work so that busy time is at most `share` of the wall time (share >= 1: never)."""

    def __init__(self, share: float) -> None:
        self.share = share

    @classmethod
    def from_env(cls) -> DutyCycle:
        return cls(CATALOG_APPLY_SHARE.float())

    def rest_s(self, busy_s: float) -> float:
        """How long to rest after `busy_s` of work."""
        if self.share >= 1.0 or busy_s <= 0:
            return 0.0
        return busy_s * (1.0 / max(self.share, 0.01) - 1.0)

    def rest(self, busy_s: float, stop: threading.Event | None = None) -> None:
        """Rest after `busy_s` of work; returns early when `stop` is set."""
        pause = self.rest_s(busy_s)
        if pause > 0:
            (stop or threading.Event()).wait(pause)


class PacedGate:
    """Paced work inside request handlers (catalogue writes on the gateway): one piece at a time, and after a
    piece that kept its handler busy t seconds the next one starts no earlier than `DutyCycle.rest_s(t)` later.
    The piece's own answer is not held back; a caller waits at most `max_wait_s` for its turn, after which it goes
    ahead anyway (a deadline beats pacing)."""

    def __init__(self, cycle: DutyCycle) -> None:
        self.cycle = cycle
        self._lock = threading.Lock()
        self._free_at = 0.0

    @contextmanager
    def turn(self, max_wait_s: float) -> Iterator[None]:
        deadline = time.monotonic() + max(0.0, max_wait_s)
        held = self._lock.acquire(timeout=max(0.0, max_wait_s))
        start = time.monotonic()
        try:
            wait = min(self._free_at, deadline) - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            start = time.monotonic()
            yield
        finally:
            if held:
                self._free_at = time.monotonic() + self.cycle.rest_s(time.monotonic() - start)
                self._lock.release()
