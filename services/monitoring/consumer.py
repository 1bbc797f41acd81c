"""The Kafka side of the monitoring service: one consumer group over the events, impressions and
predictions topics.

Per polled batch: decode and validate every record (anything undecodable or invalid goes to the dead-letter
topic, counted, and the batch goes on), drop events whose event_id was already processed, feed the
online aggregates and the open drift window, then persist everything the batch changed together with the
offsets it reached in one SQLite transaction, and only then commit the offsets to Kafka. On start (and on
every partition assignment) the consumer seeks to the offsets stored with the state, so a restart resumes
exactly where the persisted state ends: nothing lost, nothing counted twice. The Kafka commit keeps the
group's lag visible; the stored offsets are the source of truth.

One instance per consumer group: the join state is local, so partitions are not meant to be split.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message
from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer, OffsetAndMetadata
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaError
from prometheus_client import Counter, Histogram

from recsys.common.kafka import clients, codec
from recsys.common.kafka.dlq import dead_letter
from recsys.common.kafka.lag import LagGauge
from recsys.common.kafka.loop import IdleClock
from recsys.monitoring import metrics
from recsys.monitoring.aggregates import BatchDelta, OnlineAggregator, bucket_of
from recsys.monitoring.coverage import CoverageTracker
from recsys.monitoring.settings import MonitoringSettings
from recsys.monitoring.store import DriftBatch, MonitoringStore, Prune, now_ms
from recsys.monitoring.windows import WindowTracker
from recsys.v1 import events_pb2

log = logging.getLogger("recsys.monitoring.consumer")

MESSAGES = Counter("recsys_monitoring_messages_total", "Kafka records consumed", ["topic"])
DEAD_LETTERS = Counter("recsys_monitoring_dead_letters_total", "Records sent to the dead-letter topic", ["topic"])
DUPLICATES = Counter("recsys_monitoring_duplicates_total", "Events dropped as already processed (event_id)")
BATCH_SECONDS = Histogram(
    "recsys_monitoring_batch_seconds",
    "Time to process and persist one polled batch",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)

_EVENT_TYPES = frozenset(events_pb2.EventType.values()) - {events_pb2.EVENT_TYPE_UNSPECIFIED}
_PRUNE_EVERY_S = 60.0


class InvalidRecord(ValueError):
    """A record that decodes but cannot be used (missing ids, inconsistent shapes)."""


def parse_event(data: bytes | None) -> events_pb2.Event:
    ev = codec.decode(events_pb2.Event, data)
    if not ev.event_id:
        raise InvalidRecord("Event.event_id is empty")
    if ev.type not in _EVENT_TYPES:
        raise InvalidRecord(f"Event.type {ev.type} is not a known event type")
    return ev


def parse_impression(data: bytes | None) -> events_pb2.Impression:
    imp = codec.decode(events_pb2.Impression, data)
    if not imp.event_id or not imp.request_id:
        raise InvalidRecord("Impression.event_id and Impression.request_id are required")
    return imp


def parse_prediction(data: bytes | None) -> events_pb2.PredictionLog:
    pred = codec.decode(events_pb2.PredictionLog, data)
    if not pred.scores:
        raise InvalidRecord("PredictionLog.scores is empty")
    if len(pred.features) != len(pred.scores) * len(pred.feature_names):
        raise InvalidRecord(
            f"PredictionLog.features has {len(pred.features)} values, expected "
            f"{len(pred.scores)} x {len(pred.feature_names)}"
        )
    return pred


# Deduplication keys: aggregates.seen_key(timestamp_ms, id) written out, one call less per record (the hot path).


def _event_key(message: events_pb2.Event | events_pb2.Impression, record: ConsumerRecord) -> str:
    return f"{message.timestamp_ms // 3_600_000:09d}{message.event_id}"


def _prediction_key(pred: events_pb2.PredictionLog, record: ConsumerRecord) -> str:
    rid = pred.request_id or f"{record.topic}:{record.partition}:{record.offset}"
    return f"{pred.timestamp_ms // 3_600_000:09d}P{rid}"


@dataclass(frozen=True, eq=False)
class _Kind:
    """The records of one topic: how a value is parsed (decoded and validated, raising UndecodableMessage or
    InvalidRecord), the deduplication key of a message, and how a fresh message is applied:
    apply(message, key, payload, delta, drift, now)."""

    parse: Callable[[bytes | None], Message]
    key: Callable[[Any, ConsumerRecord], str]
    apply: Callable[[Any, str, bytes, BatchDelta, DriftBatch, int], None]


class _SeekToStoredOffsets(ConsumerRebalanceListener):
    def __init__(self, owner: MonitoringConsumer) -> None:
        self.owner = owner

    def on_partitions_revoked(self, revoked) -> None:
        pass

    def on_partitions_assigned(self, assigned) -> None:
        stored = self.owner.store.offsets()
        for tp in assigned:
            offset = stored.get((tp.topic, tp.partition))
            if offset is not None:
                self.owner.consumer.seek(tp, offset)
        log.info("partitions assigned", extra={"partitions": sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned)})


class MonitoringConsumer:
    """Consume, aggregate, persist, commit; `run` loops until `stop`."""

    def __init__(
        self,
        settings: MonitoringSettings,
        store: MonitoringStore,
        on_window_closed: Callable[[list[int]], None] | None = None,
        consumer: KafkaConsumer | None = None,
        producer: KafkaProducer | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.on_window_closed = on_window_closed
        self._lag = LagGauge("monitoring")
        #: variant -> (model, model_version, timestamp_ms) of its latest impression (the dashboard's models view)
        self.served_models: dict[str, tuple[str, str, int]] = {}
        self.aggregator = OnlineAggregator(settings.bucket_s, settings.join_window_s)
        self.windows = WindowTracker(
            store, settings.drift_window_rows, settings.drift_window_s, settings.drift_min_rows
        )
        self.aggregator.restore(*store.join_state())
        self.coverage = CoverageTracker(store.known_items(), store.coverage_bitmap)
        impressions = _Kind(parse_impression, _event_key, self._apply_impression)
        events = _Kind(parse_event, _event_key, self._apply_event)
        predictions = _Kind(parse_prediction, _prediction_key, self._apply_prediction)
        # A batch applies impressions before the events that may click them, and predictions last.
        self._kinds = (impressions, events, predictions)
        routes = [
            (settings.events_topic, events),
            (settings.impressions_topic, impressions),
            (settings.predictions_topic, predictions),
        ]
        # topic -> kind; where topics coincide the first route wins
        self._kind_of: dict[str, _Kind] = {topic: kind for topic, kind in reversed(routes)}
        self.consumer = consumer or clients.make_consumer(
            settings.group,
            [],
            settings.bootstrap,
            max_poll_records=settings.max_poll_records,
            fetch_max_bytes=64 * 1024 * 1024,
            max_partition_fetch_bytes=16 * 1024 * 1024,
            check_crcs=settings.check_crcs,
            **clients.batched_fetch(settings.fetch_wait_ms),
        )
        self.consumer.subscribe(topics=settings.topics, listener=_SeekToStoredOffsets(self))
        self.producer = producer or clients.make_producer(settings.bootstrap)
        self.consumed = 0
        self.dead_lettered = 0
        self.duplicates = 0
        self._stop = threading.Event()
        self._last_prune = time.monotonic()
        self._prune_requests_below = 0
        self._dlq_topics: list[str] = []

    def stop(self) -> None:
        """Ask `run` to return after the batch in flight is persisted and committed."""
        self._stop.set()

    def close(self) -> None:
        self.consumer.close(autocommit=False)
        self.producer.close(timeout=10)

    def run(self, idle_timeout_s: float | None = None) -> int:
        """Loop until `stop()` (or `idle_timeout_s` without records); returns the records consumed."""
        consumed = 0
        clock = IdleClock(self.consumer, idle_timeout_s)
        while not self._stop.is_set():
            n = self.run_once()
            consumed += n
            if clock.expired(n):
                break
        return consumed

    def run_once(self, poll_timeout_ms: int = 500) -> int:
        """One poll-process-persist-commit cycle; returns the number of records consumed."""
        batches = self.consumer.poll(timeout_ms=poll_timeout_ms, max_records=self.settings.max_poll_records)
        started = time.perf_counter()
        now = now_ms()
        delta, drift = BatchDelta(), DriftBatch()
        offsets: dict[tuple[str, int], int] = {}
        if batches:
            dlq = self._process(batches, delta, drift, now, offsets)
            for future, _ in dlq:
                future.get(timeout=30)  # dead letters are durable before the offsets move past them
        expired_below = self.aggregator.expire(delta)
        self._prune_requests_below = max(self._prune_requests_below, expired_below)
        closed = self.windows.flush(drift, now)
        prune = self._prune(now)
        if not batches and not closed and prune is None and not delta.pending_del:
            return 0
        self.store.commit_batch(delta, offsets, drift, prune)
        if offsets:
            self._commit_kafka(batches)
        n = sum(len(records) for records in batches.values()) if batches else 0
        self._count(batches, delta)
        BATCH_SECONDS.observe(time.perf_counter() - started)
        if closed and self.on_window_closed is not None:
            self.on_window_closed(closed)
        return n

    def _process(self, batches: dict, delta: BatchDelta, drift: DriftBatch, now: int, offsets: dict) -> list:
        s = self.settings
        dlq: list = []
        parsed: dict[_Kind, list[tuple[str, Any, bytes]]] = {kind: [] for kind in self._kinds}
        rejected: list[tuple] = []  # (record, error)
        for tp, records in batches.items():
            offsets[(tp.topic, tp.partition)] = records[-1].offset + 1
            kind = self._kind_of.get(tp.topic)
            if kind is None:
                continue
            parse, key_of, out = kind.parse, kind.key, parsed[kind]
            for record in records:
                try:
                    message = parse(record.value)
                except (codec.UndecodableMessage, InvalidRecord) as exc:
                    rejected.append((record, exc))
                    continue
                out.append((key_of(message, record), message, record.value))
        for record, exc in rejected:
            dlq.append((dead_letter(self.producer, record, str(exc), s.dlq_topic), record.topic))
            where = {"topic": record.topic, "partition": record.partition, "offset": record.offset}
            log.warning("dead-lettered", extra={**where, "error": str(exc)})
        if dlq:
            delta.counters["dead_letters"] += len(dlq)
        self.dead_lettered += len(dlq)
        self._dlq_topics = [topic for _, topic in dlq]
        fresh = self._fresh([key for kind in self._kinds for key, _, _ in parsed[kind]], delta)
        for kind in self._kinds:
            apply = kind.apply
            for key, message, payload in parsed[kind]:
                if key in fresh:
                    apply(message, key, payload, delta, drift, now)
        delta.coverage_rows = self.coverage.update(delta.served_items, delta.new_items)
        delta.finalize()
        return dlq

    # The _Kind.apply of each topic.

    def _apply_impression(self, imp: events_pb2.Impression, key: str, payload: bytes, delta: BatchDelta,
                          drift: DriftBatch, now: int) -> None:
        self.aggregator.add_impression(imp, payload, delta, now)
        self.served_models[imp.variant] = (imp.model, imp.model_version, imp.timestamp_ms)

    def _apply_event(self, ev: events_pb2.Event, key: str, payload: bytes, delta: BatchDelta, drift: DriftBatch,
                     now: int) -> None:
        self.aggregator.add_event(ev, key, delta, now)

    def _apply_prediction(self, pred: events_pb2.PredictionLog, key: str, payload: bytes, delta: BatchDelta,
                          drift: DriftBatch, now: int) -> None:
        self.windows.add(pred, key, payload, drift, now)

    def _fresh(self, keys: list[str], delta: BatchDelta) -> set[str]:
        """Keys not processed before (earlier batches or earlier in this batch); records them as seen."""
        unique = set(keys)
        duplicates = len(keys) - len(unique)
        old = self.store.already_seen(unique)
        fresh = unique - old
        duplicates += len(old)
        delta.seen.extend(fresh)
        delta.counters["duplicates"] += duplicates
        # In-batch duplicates: the first occurrence wins.
        if len(keys) != len(unique):
            return _FirstOccurrence(fresh)
        return fresh

    def _prune(self, now: int) -> Prune | None:
        if time.monotonic() - self._last_prune < _PRUNE_EVERY_S:
            return None
        self._last_prune = time.monotonic()
        s = self.settings
        watermark = self.aggregator.watermark_ms or now
        prune = Prune(
            seen_before_key=f"{(watermark - s.dedupe_window_s * 1000) // 3_600_000:09d}",
            requests_before_seq=self._prune_requests_below,
            buckets_before=bucket_of(watermark - s.retention_s * 1000, s.bucket_s),
        )
        return prune

    def _commit_kafka(self, batches: dict) -> None:
        offsets = {
            tp: OffsetAndMetadata(records[-1].offset + 1, "", records[-1].leader_epoch)
            for tp, records in batches.items()
        }
        try:
            self.consumer.commit(offsets)
        except KafkaError as exc:  # the stored offsets stay authoritative; the next commit catches up
            log.warning("kafka offset commit failed", extra={"error": str(exc)})

    def _count(self, batches: dict | None, delta: BatchDelta) -> None:
        metrics.count_cells(delta.cells)
        if batches:
            self._lag.processed(batches)
            for tp, records in batches.items():
                MESSAGES.labels(tp.topic).inc(len(records))
                self.consumed += len(records)
            for topic in self._dlq_topics:
                DEAD_LETTERS.labels(topic).inc()
        DUPLICATES.inc(delta.counters.get("duplicates", 0))
        self.duplicates += delta.counters.get("duplicates", 0)
        self._lag.update(self.consumer)


class _FirstOccurrence(set):
    """A set whose membership test succeeds once per key: the first occurrence of a duplicated key in a
    batch is processed, later ones are not."""

    def __contains__(self, key: object) -> bool:
        if set.__contains__(self, key):
            self.discard(key)
            return True
        return False
