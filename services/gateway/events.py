"""Events the gateway produces: impressions and sampled predictions (asynchronous, never blocking a
request) and product-app events from EventService.Publish (validated, then produced with acks)."""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import threading
import time
import uuid
from collections.abc import Sequence

from google.protobuf.message import Message
from prometheus_client import Counter, Gauge

from recsys.common.errors import InvalidArgument, Unavailable
from recsys.common.kafka import clients
from recsys.v1 import events_pb2

log = logging.getLogger("recsys.gateway.events")

SENT = Counter("recsys_gateway_events_sent_total", "Impressions/predictions delivered to Kafka", ["topic"])
RETRIED = Counter("recsys_gateway_events_retried_total", "Deliveries that failed and were queued again")
DROPPED = Counter("recsys_gateway_events_dropped_total", "Events dropped because the buffer was full")
PENDING = Gauge("recsys_gateway_events_pending", "Events buffered, waiting for Kafka")

PUBLISHABLE = {
    events_pb2.EVENT_TYPE_CLICK,
    events_pb2.EVENT_TYPE_RATING,
    events_pb2.EVENT_TYPE_PURCHASE,
    events_pb2.EVENT_TYPE_VIEW,
}
MAX_EVENTS_PER_PUBLISH = 1000


class AsyncPublisher:
    """A bounded buffer drained into Kafka by a background thread.

    `offer` never blocks: when the buffer is full the oldest event is dropped and counted. Failed sends
    go back to the front of the buffer and are retried with backoff, so a Kafka outage loses nothing
    that fits in the buffer. Sends are at least `interval_s` apart: one produce request then carries every
    event that came in meanwhile, instead of one request (and one flush) per served list.
    """

    def __init__(self, bootstrap: str, capacity: int, interval_s: float = 0.0) -> None:
        self.bootstrap = bootstrap
        self.capacity = capacity
        self.interval_s = interval_s
        self._buffer: collections.deque[tuple[str, Message]] = collections.deque()
        self._lock = threading.Condition()
        self._stop = threading.Event()
        self._producer = None
        self._thread = threading.Thread(target=self._run, name="event-publisher", daemon=True)
        self._thread.start()

    def offer(self, topic: str, message: Message) -> None:
        with self._lock:
            if len(self._buffer) >= self.capacity:
                self._buffer.popleft()
                DROPPED.inc()
            self._buffer.append((topic, message))
            PENDING.set(len(self._buffer))
            self._lock.notify()

    def pending(self) -> int:
        return len(self._buffer)

    def _take(self, n: int) -> list[tuple[str, Message]]:
        with self._lock:
            while not self._buffer and not self._stop.is_set():
                self._lock.wait(timeout=0.5)
            batch = [self._buffer.popleft() for _ in range(min(n, len(self._buffer)))]
            PENDING.set(len(self._buffer))
            return batch

    def _requeue(self, batch: Sequence[tuple[str, Message]]) -> None:
        with self._lock:
            room = self.capacity - len(self._buffer)
            keep = list(batch)[:max(room, 0)]
            DROPPED.inc(len(batch) - len(keep))
            self._buffer.extendleft(reversed(keep))
            PENDING.set(len(self._buffer))
        RETRIED.inc(len(batch))

    def _run(self) -> None:
        backoff = 0.2
        while not self._stop.is_set() or self._buffer:
            batch = self._take(500)
            if not batch:
                continue
            try:
                if self._producer is None:
                    self._producer = clients.make_producer(self.bootstrap, linger_ms=10, max_block_ms=2000)
                futures = [(topic, clients.publish(self._producer, topic, msg)) for topic, msg in batch]
                self._producer.flush(timeout=10)
                for topic, fut in futures:
                    fut.get(timeout=0)
                    SENT.labels(topic).inc()
                backoff = 0.2
                if self.interval_s > 0:
                    self._stop.wait(self.interval_s)  # gather the next batch (close() ends the wait)
            except Exception as exc:  # broker down or slow: keep the events, retry later
                log.warning("kafka publish failed; will retry", extra={"error": str(exc), "events": len(batch)})
                self._requeue(batch)
                close_quietly(self._producer, timeout_s=0)
                self._producer = None
                if self._stop.wait(backoff):
                    return
                backoff = min(backoff * 2, 5.0)

    def close(self, timeout_s: float = 5.0) -> None:
        """Flush what is buffered (up to timeout_s) and stop."""
        deadline = time.monotonic() + timeout_s
        while self._buffer and time.monotonic() < deadline:
            time.sleep(0.05)
        self._stop.set()
        with self._lock:
            self._lock.notify_all()
        self._thread.join(timeout=2)
        if self._buffer:
            log.warning("impressions not sent at shutdown (Kafka unreachable)", extra={"events": len(self._buffer)})
        close_quietly(self._producer, timeout_s=1)


def close_quietly(producer: object | None, timeout_s: float) -> None:
    """Close a Kafka producer; with the broker down its final flush times out, which is logged, not raised."""
    if producer is None:
        return
    try:
        producer.close(timeout=timeout_s)
    except Exception as exc:  # noqa: BLE001 - shutting down either way
        log.warning("kafka producer closed with records unsent", extra={"error": repr(exc)})


def validate_events(events: Sequence[events_pb2.Event]) -> list[events_pb2.Event]:
    """Check product-app events and fill event_id / timestamp; raises InvalidArgument naming the field."""
    if not events:
        raise InvalidArgument("events", "must not be empty")
    if len(events) > MAX_EVENTS_PER_PUBLISH:
        raise InvalidArgument("events", f"at most {MAX_EVENTS_PER_PUBLISH} per call (got {len(events)})")
    out = []
    now_ms = int(time.time() * 1000)
    for i, event in enumerate(events):
        if event.type not in PUBLISHABLE:
            raise InvalidArgument(f"events[{i}].type", "must be CLICK, RATING, PURCHASE or VIEW")
        if not event.user_id:
            raise InvalidArgument(f"events[{i}].user_id", "required")
        if not event.item_id:
            raise InvalidArgument(f"events[{i}].item_id", "required")
        if len(event.user_id) > 128 or len(event.item_id) > 128:
            raise InvalidArgument(f"events[{i}]", "user_id / item_id longer than 128 characters")
        if event.type == events_pb2.EVENT_TYPE_RATING and not 0 <= event.value <= 10:
            raise InvalidArgument(f"events[{i}].value", "a rating must be within 0..10")
        if event.value != event.value or event.value in (float("inf"), float("-inf")):
            raise InvalidArgument(f"events[{i}].value", "must be finite")
        copy = events_pb2.Event()
        copy.CopyFrom(event)
        if not copy.event_id:
            copy.event_id = uuid.uuid4().hex
        if copy.timestamp_ms <= 0:
            copy.timestamp_ms = now_ms
        out.append(copy)
    return out


class SyncProducer:
    """Produces validated events and waits for the broker's acks, so an accepted event is durable.

    The wait runs on a worker thread with a hard bound: kafka-python can block past its own timeouts while
    the broker is down, and the caller must get UNAVAILABLE (retry; consumers dedupe by event_id) in time.
    """

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self._producer = None
        self._lock = threading.Lock()
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="event-produce")

    def _current(self):
        """The producer, made on first use (connecting is bounded by max_block_ms)."""
        with self._lock:
            if self._producer is None:
                self._producer = clients.make_producer(self.bootstrap, linger_ms=1, max_block_ms=2000)
            return self._producer

    def _discard(self, producer) -> None:
        """Drop a producer that failed a call, so the next call connects afresh: after a broker outage
        kafka-python's idempotent producer can stay wedged (every later send timing out) although the broker
        is back. What it still holds was answered UNAVAILABLE, so closing it loses nothing accepted."""
        with self._lock:
            if self._producer is not producer:
                return  # another call replaced it already
            self._producer = None
        threading.Thread(target=close_quietly, args=(producer, 0), name="event-producer-close", daemon=True).start()

    def _produce(self, topic: str, events: Sequence[Message], timeout_s: float, key=None) -> int:
        producer = self._current()
        try:
            futures = [clients.publish(producer, topic, e, None if key is None else key(e)) for e in events]
            producer.flush(timeout=max(timeout_s, 0.1))
            for fut in futures:
                fut.get(timeout=0)
        except Exception:
            self._discard(producer)
            raise
        return len(futures)

    def warm(self, topics: Sequence[str]) -> None:
        """Connect and fetch the topics' metadata now (on a thread: Kafka may be down), so the first call of a
        topic does not spend its deadline there."""
        def run() -> None:
            try:
                producer = self._current()
                for topic in topics:
                    producer.partitions_for(topic)
            except Exception as exc:  # noqa: BLE001 - the first call connects instead
                log.info("kafka producer not warmed up", extra={"error": repr(exc)})

        threading.Thread(target=run, name="event-producer-warm-up", daemon=True).start()

    def produce(self, topic: str, events: Sequence[Message], timeout_s: float, key=None) -> int:
        """Produce every message (keyed by key(message), default its user_id) and wait for the acks; raises
        Unavailable when Kafka did not acknowledge them all in time."""
        try:
            return self._pool.submit(self._produce, topic, events, timeout_s, key).result(timeout=timeout_s + 0.2)
        except Exception as exc:
            log.warning("event produce failed", extra={"error": repr(exc)})
            raise Unavailable("event stream unavailable, retry later") from exc

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        close_quietly(self._producer, timeout_s=1)  # what it still holds was answered UNAVAILABLE: not accepted

