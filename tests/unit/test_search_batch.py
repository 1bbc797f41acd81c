"""SearchBatcher: searches queued behind one in flight go as one request; deadlines, errors and limits per caller."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from recsys.candidates.search_batch import BatchTimeout, SearchBatcher


class _GatedSearch:
    """A search that records each call's batch and blocks its first call until released."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.calls: list[tuple[list[float], int]] = []
        self.first_started = threading.Event()
        self.release = threading.Event()
        self.fail = fail

    def __call__(self, vectors, limit, timeout):
        self.calls.append(([float(v[0]) for v in vectors], limit))
        if len(self.calls) == 1:
            self.first_started.set()
            assert self.release.wait(5)
        if self.fail is not None:
            raise self.fail
        # hits name the query they answer, best first
        return [[(f"q{float(v[0]):g}-{j}", 1.0 - j / 100) for j in range(limit)] for v in vectors]


def _start(batcher, search, value, limit=3, timeout=5.0, key="c", out=None):
    out = {} if out is None else out

    def run():
        try:
            out[value] = batcher.search(key, search, np.array([value], dtype=np.float32), limit, timeout)
        except Exception as exc:  # noqa: BLE001 - recorded for the test's assertions
            out[value] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


def _queued(batcher, key, n, timeout_s=2.0):
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        with batcher._lock:
            if len(batcher._queues.get(key, ())) >= n:
                return
        time.sleep(0.001)
    raise AssertionError(f"{n} searches never queued")


def test_an_idle_batcher_searches_at_once_with_one_vector():
    search = _GatedSearch()
    search.release.set()
    hits = SearchBatcher(8).search("c", search, np.array([1.0], dtype=np.float32), 2, 1.0)
    assert hits == [("q1-0", 1.0), ("q1-1", 0.99)]
    assert search.calls == [([1.0], 2)]


def test_searches_queued_behind_one_in_flight_go_together_each_cut_to_its_limit():
    batcher, search = SearchBatcher(8), _GatedSearch()
    first, out = _start(batcher, search, 1.0)
    assert search.first_started.wait(5)
    threads = [_start(batcher, search, v, limit=lim, out=out)[0] for v, lim in ((2.0, 2), (3.0, 5), (4.0, 1))]
    _queued(batcher, "c", 3)
    search.release.set()
    for thread in (first, *threads):
        thread.join(5)
    assert search.calls == [([1.0], 3), ([2.0, 3.0, 4.0], 5)]  # one request for the three, at the largest limit
    assert [item for item, _ in out[2.0]] == ["q2-0", "q2-1"]
    assert [item for item, _ in out[3.0]] == [f"q3-{j}" for j in range(5)]
    assert [item for item, _ in out[4.0]] == ["q4-0"]
    assert not batcher._running and not batcher._queues  # idle again


def test_a_batch_never_exceeds_max_batch():
    batcher, search = SearchBatcher(2), _GatedSearch()
    first, out = _start(batcher, search, 1.0)
    assert search.first_started.wait(5)
    threads = [_start(batcher, search, float(v), out=out)[0] for v in range(2, 7)]
    _queued(batcher, "c", 5)
    search.release.set()
    for thread in (first, *threads):
        thread.join(5)
    assert [len(vectors) for vectors, _ in search.calls] == [1, 2, 2, 1]
    assert all(not isinstance(out[float(v)], Exception) for v in range(1, 7))


def test_a_failed_batch_fails_each_member():
    batcher, search = SearchBatcher(8), _GatedSearch(fail=RuntimeError("milvus down"))
    first, out = _start(batcher, search, 1.0)
    assert search.first_started.wait(5)
    second, _ = _start(batcher, search, 2.0, out=out)
    _queued(batcher, "c", 1)
    search.release.set()
    first.join(5)
    second.join(5)
    assert isinstance(out[1.0], RuntimeError) and isinstance(out[2.0], RuntimeError)


def test_a_queued_search_gives_up_at_its_deadline_and_leaves_the_queue():
    batcher, search = SearchBatcher(8), _GatedSearch()
    first, out = _start(batcher, search, 1.0)
    assert search.first_started.wait(5)
    hurried, _ = _start(batcher, search, 2.0, timeout=0.05, out=out)
    hurried.join(5)
    assert isinstance(out[2.0], BatchTimeout)
    patient, _ = _start(batcher, search, 3.0, out=out)
    _queued(batcher, "c", 1)
    search.release.set()
    first.join(5)
    patient.join(5)
    assert search.calls == [([1.0], 3), ([3.0], 3)]  # the one that gave up is not searched for
    assert [item for item, _ in out[3.0]][0] == "q3-0"


def test_searches_on_other_keys_do_not_wait():
    batcher, search = SearchBatcher(8), _GatedSearch()
    first, out = _start(batcher, search, 1.0, key="a")
    assert search.first_started.wait(5)
    other, _ = _start(batcher, search, 2.0, key="b", out=out)
    other.join(5)
    assert not other.is_alive() and [item for item, _ in out[2.0]][0] == "q2-0"
    search.release.set()
    first.join(5)


@pytest.mark.parametrize("max_batch", [0, 1])
def test_batching_off_calls_through(max_batch):
    search = _GatedSearch()
    search.release.set()
    batcher = SearchBatcher(max_batch)
    assert batcher.search("c", search, np.array([5.0], dtype=np.float32), 1, 1.0) == [("q5-0", 1.0)]
    assert not batcher._queues
