"""Admission control: how many requests take the full path (features, candidates, ranking) at once.

Past the backends' capacity every extra request in flight makes all of them slower, until their hops miss
their deadlines together and nearly every answer degrades. With a cap, the admitted requests keep their
normal speed; a request that finds no free slot within its wait is answered at once from the batch lists or
popular items (degraded, reason "gateway: overloaded") and costs the backends nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Counter, Gauge

ADMITTED = Gauge("recsys_gateway_full_path_in_flight", "Requests on the full path now")
SHED = Counter("recsys_gateway_shed_total", "Requests answered from fallbacks because every full-path slot was busy")


class Admission:
    """At most `limit` requests on the full path at once (0 = no limit); each waits up to `wait_s` for a slot."""

    def __init__(self, limit: int, wait_s: float) -> None:
        self.wait_s = max(0.0, wait_s)
        self._slots = threading.BoundedSemaphore(limit) if limit > 0 else None

    @contextmanager
    def slot(self) -> Iterator[bool]:
        """True inside when admitted (the slot is held until the block ends), False when shed."""
        if self._slots is None:
            yield True
            return
        if not self._slots.acquire(timeout=self.wait_s):
            SHED.inc()
            yield False
            return
        ADMITTED.inc()
        try:
            yield True
        finally:
            ADMITTED.dec()
            self._slots.release()
