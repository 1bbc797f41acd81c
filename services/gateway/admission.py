"""Admission control: how many requests take the full path (features, candidates, ranking) at once.

Past the backends' capacity every extra request in flight makes all of them slower, until their hops miss
their deadlines together and nearly every answer degrades. With a cap, the admitted requests keep their
normal speed; a request that finds no free slot in time is answered at once from the batch lists or popular
items (degraded, reason "gateway: overloaded") and costs the backends nothing.

The cap is sized from what the backends measurably sustain, not fixed: with `adaptive`, the limit grows by one
per limit's worth of full paths that finished without a sign of overload (no hop out of time) and shrinks by a
quarter when one had one (at most once per full path's mean duration, so that the requests caught in one slow
moment are one step down), between 1 and `ceiling`: AIMD, as TCP sizes its window from losses.

A request waits for a slot only while a full path could still finish inside its deadline: at most `wait_s`,
and never past its remaining budget less the time a full path likely takes now (the recent mean plus two mean
deviations); one whose remaining budget is shorter than the recent mean is not started at all, unless nothing
is on the full path (so the estimate always gets new measurements).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Counter, Gauge

from recsys.common.feature_client import SKIPPED_NO_BUDGET

ADMITTED = Gauge("recsys_gateway_full_path_in_flight", "Requests on the full path now")
LIMIT = Gauge("recsys_gateway_full_path_limit", "Requests the full path admits at once (adapted to the backends)")
SHED = Counter("recsys_gateway_shed_total", "Requests answered from fallbacks instead of the full path, by reason",
               ["reason"])
for _reason in ("busy", "deadline"):  # zero from the start: dashboards show 0, not "no data"
    SHED.labels(_reason)
EWMA_ALPHA = 0.1
#: What a degraded reason says when the backends are past their capacity (a down backend or an open breaker
#: does not): a hop or the index ran out of time, or a server refused the call for load
OVERLOAD_MARKS = ("DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", SKIPPED_NO_BUDGET, "timeout")


def overloaded(reasons: list[str]) -> bool:
    """True when one of an answer's degraded reasons ("hop: status") is a sign of overload."""
    return any(mark in reason for reason in reasons for mark in OVERLOAD_MARKS)


class Ticket:
    """An admitted request's slot; `fail()` when the full path degraded (a hop missed its deadline or failed)."""

    __slots__ = ("started", "failed")

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.failed = False

    def fail(self) -> None:
        self.failed = True


class Admission:
    """At most `limit` requests on the full path at once (0 = no limit); see the module docstring."""

    def __init__(self, limit: int, wait_s: float, adaptive: bool = False, initial: int | None = None) -> None:
        self.wait_s = max(0.0, wait_s)
        self.ceiling = max(0, limit)
        self.adaptive = adaptive and self.ceiling > 0
        self.limit = float(min(self.ceiling, initial or self.ceiling)) if self.ceiling else 0.0
        self.expected_s = 0.0  # a full path's likely duration: EWMA of the admitted ones' + 2 mean deviations
        self._mean_s = self._dev_s = 0.0
        self.in_flight = 0
        self._last_decrease = 0.0
        self._cond = threading.Condition()
        LIMIT.set(self.limit)

    def _free(self) -> bool:
        return self.in_flight < max(1, int(self.limit))

    @contextmanager
    def slot(self, remaining_s: float | None = None) -> Iterator[Ticket | None]:
        """A Ticket inside when admitted (the slot is held until the block ends), None when shed. `remaining_s`:
        the request's budget left; no wait outlasts the time a full path still has to finish in it."""
        if self.ceiling == 0:
            yield Ticket()
            return
        wait = self.wait_s
        if remaining_s is not None:
            if remaining_s < self._mean_s and self.in_flight > 0:  # would likely not finish: not started
                SHED.labels("deadline").inc()
                yield None
                return
            wait = max(0.0, min(wait, remaining_s - self.expected_s))  # a free slot now is still taken
        with self._cond:
            if not self._cond.wait_for(self._free, timeout=wait):
                SHED.labels("busy").inc()
                admitted = False
            else:
                self.in_flight += 1
                admitted = True
        if not admitted:
            yield None
            return
        ADMITTED.inc()
        ticket = Ticket()
        try:
            yield ticket
        finally:
            ADMITTED.dec()
            self._release(ticket, time.monotonic() - ticket.started)

    def _release(self, ticket: Ticket, took_s: float) -> None:
        with self._cond:
            self.in_flight -= 1
            if self._mean_s == 0:
                self._mean_s = took_s
            else:  # as TCP estimates its retransmission timeout from round trips
                self._dev_s += EWMA_ALPHA * (abs(took_s - self._mean_s) - self._dev_s)
                self._mean_s += EWMA_ALPHA * (took_s - self._mean_s)
            self.expected_s = self._mean_s + 2 * self._dev_s
            if self.adaptive:
                now = time.monotonic()
                if ticket.failed:
                    if now - self._last_decrease >= self._mean_s:
                        self.limit = max(1.0, self.limit * 0.75)
                        self._last_decrease = now
                else:
                    self.limit = min(float(self.ceiling), self.limit + 1.0 / max(1.0, self.limit))
                LIMIT.set(self.limit)
            self._cond.notify()
