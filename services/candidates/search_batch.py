"""Concurrent ANN searches merged into one Milvus request.

A FLAT search in Milvus Lite costs about the same for two query vectors as for one (100k x 64: 4.3 ms of
CPU for one query, 2.6 per query at two, 1.9 at four), so searches that arrive while another with the same
collection and filter is in flight wait for it to finish and then go together as one request (nq > 1).
Nothing waits when the service is idle: the first search goes at once, and a batch forms only from the
searches queued behind one in flight. Each caller keeps its own deadline (a queued one gives up at it); a
batch's deadline is its members' latest, and its result is cut to each member's own limit.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

import numpy as np
from prometheus_client import Histogram

BATCH_SIZE = Histogram(
    "recsys_candidates_search_batch_size",
    "Query vectors per Milvus search request",
    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32),
)

Hits = list[tuple[str, float]]
# search(vectors, limit, timeout) -> per vector, [(item id, score)] best first
SearchMany = Callable[[list[np.ndarray], int, float], list[Hits]]


class BatchTimeout(TimeoutError):
    """A queued search's own deadline passed before its batch answered."""


@dataclass(eq=False)
class _Pending:
    vector: np.ndarray
    limit: int
    deadline: float
    wake: threading.Event = field(default_factory=threading.Event)  # answered, or handed the next batch to run
    taken: bool = False  # in a batch that is running
    answered: bool = False
    result: Hits | None = None
    error: BaseException | None = None


class SearchBatcher:
    """Run searches keyed by (collection, filter) one batch at a time per key, at most `max_batch` vectors each."""

    def __init__(self, max_batch: int = 8) -> None:
        self.max_batch = max(1, max_batch)
        self._lock = threading.Lock()
        self._queues: dict[Hashable, list[_Pending]] = {}
        self._running: set[Hashable] = set()

    def search(self, key: Hashable, search: SearchMany, vector: np.ndarray, limit: int, timeout: float) -> Hits:
        """The top `limit` hits for `vector`; raises what `search` raised, or BatchTimeout after `timeout` s."""
        if self.max_batch == 1:
            return search([vector], limit, timeout)[0]
        pending = _Pending(vector, limit, time.monotonic() + timeout)
        with self._lock:
            self._queues.setdefault(key, []).append(pending)
            lead = key not in self._running
            if lead:
                self._running.add(key)
        if not lead and not self._wait(key, pending):
            raise BatchTimeout(f"search queued past its {timeout * 1000:.0f} ms deadline")
        if not pending.answered:
            self._run_batch(key, search)
        return self._outcome(pending)

    def _wait(self, key: Hashable, pending: _Pending) -> bool:
        """Wait as a follower until answered or handed the lead; False when the deadline passed first."""
        if pending.wake.wait(max(0.0, pending.deadline - time.monotonic())):
            return True
        with self._lock:
            if pending.wake.is_set():  # answered or handed the lead as the deadline passed
                return True
            if not pending.taken:  # still queued: leave; a running batch's answer is dropped instead
                self._queues[key].remove(pending)
        return False

    def _run_batch(self, key: Hashable, search: SearchMany) -> None:
        """As the leader: take the queue's head (this caller first), search once, answer every member, hand on."""
        with self._lock:
            queue = self._queues[key]
            batch = queue[: self.max_batch]
            del queue[: self.max_batch]
            for member in batch:
                member.taken = True
        timeout = max(0.001, max(m.deadline for m in batch) - time.monotonic())
        BATCH_SIZE.observe(len(batch))
        try:
            results = search([m.vector for m in batch], max(m.limit for m in batch), timeout)
        except BaseException as exc:  # every member gets the failure, the leader re-raises it
            for member in batch:
                member.error = exc
        else:
            for member, hits in zip(batch, results, strict=True):
                member.result = hits[: member.limit]
        with self._lock:
            for member in batch:
                member.answered = True
                member.wake.set()
            self._hand_on(key)

    def _hand_on(self, key: Hashable) -> None:
        """Under the lock: wake the oldest queued search to lead the next batch, or mark the key idle."""
        queue = self._queues.get(key)
        if queue:
            queue[0].wake.set()
        else:
            self._running.discard(key)
            self._queues.pop(key, None)

    @staticmethod
    def _outcome(pending: _Pending) -> Hits:
        if pending.error is not None:
            raise pending.error
        assert pending.result is not None
        return pending.result
