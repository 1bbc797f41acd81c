"""The impression publisher batches what arrives between sends, and a broker outage loses nothing buffered; the
acknowledged producer works again once the broker is back."""

from __future__ import annotations

import threading
import time

import pytest

from recsys.common.errors import Unavailable
from recsys.gateway import events
from recsys.v1 import events_pb2


class _FakeFuture:
    def get(self, timeout: float) -> None:
        return None


class _FakeProducer:
    """Records sends and flushes; fails every flush while `down` is set."""

    def __init__(self, down: threading.Event) -> None:
        self.down = down
        self.pending: list[str] = []
        self.delivered: list[str] = []
        self.flushes = 0

    def send(self, topic: str, key=None, value=None) -> _FakeFuture:
        self.pending.append(value.event_id)
        return _FakeFuture()

    def flush(self, timeout: float) -> None:
        self.flushes += 1
        if self.down.is_set():
            self.pending.clear()
            raise TimeoutError("broker down")
        self.delivered += self.pending
        self.pending.clear()

    def close(self, timeout: float) -> None:
        pass


def _publisher(monkeypatch, interval_s: float, down: threading.Event) -> tuple[events.AsyncPublisher, list]:
    producers: list[_FakeProducer] = []

    def make(*args, **kwargs) -> _FakeProducer:
        producers.append(_FakeProducer(down))
        return producers[-1]

    monkeypatch.setattr(events.clients, "make_producer", make)
    return events.AsyncPublisher("127.0.0.1:1", capacity=1000, interval_s=interval_s), producers


def _offer(publisher: events.AsyncPublisher, n: int, spacing_s: float) -> list[str]:
    ids = [f"e{i}" for i in range(n)]
    for event_id in ids:
        publisher.offer("impressions", events_pb2.Event(event_id=event_id, user_id="u1"))
        time.sleep(spacing_s)
    return ids


def test_events_arriving_between_sends_go_out_together(monkeypatch):
    publisher, producers = _publisher(monkeypatch, interval_s=0.2, down=threading.Event())
    ids = _offer(publisher, 40, spacing_s=0.01)  # 0.4 s of traffic
    publisher.close(timeout_s=2.0)
    delivered = [e for p in producers for e in p.delivered]
    assert delivered == ids
    assert sum(p.flushes for p in producers) <= 5  # one send per interval, not one per event


def test_events_offered_while_the_broker_is_down_are_delivered_after(monkeypatch):
    down = threading.Event()
    down.set()
    publisher, producers = _publisher(monkeypatch, interval_s=0.05, down=down)
    ids = _offer(publisher, 10, spacing_s=0.01)
    time.sleep(0.3)
    assert not any(p.delivered for p in producers)
    down.clear()
    publisher.close(timeout_s=5.0)
    assert [e for p in producers for e in p.delivered] == ids


class _WedgingProducer(_FakeProducer):
    """Like kafka-python's idempotent producer after an outage: once a flush failed, every later one fails too."""

    def flush(self, timeout: float) -> None:
        if self.down.is_set():
            self.wedged = True
        if getattr(self, "wedged", False):
            self.flushes += 1
            self.pending.clear()
            raise TimeoutError("wedged")
        super().flush(timeout)


def test_acknowledged_produce_works_again_once_the_broker_is_back(monkeypatch):
    down = threading.Event()
    producers: list[_FakeProducer] = []

    def make(*args, **kwargs) -> _FakeProducer:
        producers.append(_WedgingProducer(down))
        return producers[-1]

    monkeypatch.setattr(events.clients, "make_producer", make)
    sync = events.SyncProducer("127.0.0.1:1")
    try:
        assert sync.produce("events", [events_pb2.Event(event_id="a", user_id="u1")], timeout_s=1.0) == 1
        down.set()
        with pytest.raises(Unavailable):
            sync.produce("events", [events_pb2.Event(event_id="b", user_id="u1")], timeout_s=1.0)
        down.clear()
        assert sync.produce("events", [events_pb2.Event(event_id="c", user_id="u1")], timeout_s=1.0) == 1
        assert [e for p in producers for e in p.delivered] == ["a", "c"]
        assert len(producers) == 2  # the failed one was replaced, not reused
    finally:
        sync.close()
