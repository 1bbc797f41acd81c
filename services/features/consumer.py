"""The streaming consumer: a Kafka consumer group on the events topic feeding the stream views.

Built on `recsys.common.kafka.loop.ConsumerLoop` (at-least-once: offsets are committed only after the handler
returned, i.e. after the Feast writes succeeded; undecodable records go to the dead-letter topic and the loop
goes on). ConsumerLoop hands the decoder only a record's value, so `_PositionTracker` remembers where each
polled value came from; the updater uses partitions and offsets to keep item counters exact across replays.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from kafka import KafkaConsumer

from recsys.common.kafka import clients, codec
from recsys.common.kafka.lag import LagGauge
from recsys.common.kafka.loop import ConsumerLoop
from recsys.features import settings as feature_settings
from recsys.features.streaming import ApplyResult, StreamEvent, StreamUpdater
from recsys.v1 import events_pb2

log = logging.getLogger(__name__)


class _PositionTracker:
    """A KafkaConsumer whose `poll` remembers the (partition, offset) of every value it returned."""

    def __init__(self, consumer: KafkaConsumer) -> None:
        self._consumer = consumer
        self.positions: dict[int, tuple[int, int]] = {}

    def poll(self, *args, **kwargs):
        batches = self._consumer.poll(*args, **kwargs)
        self.positions = {
            id(record.value): (record.partition, record.offset) for records in batches.values() for record in records
        }
        return batches

    def __getattr__(self, name: str):
        return getattr(self._consumer, name)


@dataclass
class ConsumerStats:
    """Running totals, plus per-batch event-to-online lags when `record_lags` is set (benchmarks)."""

    applied: int = 0
    duplicates: int = 0
    invalid: int = 0
    batches: int = 0
    record_lags: bool = False
    lags_s: list[float] = field(default_factory=list)

    def add(self, result: ApplyResult, events: list[StreamEvent]) -> None:
        self.applied += result.applied
        self.duplicates += result.duplicates
        self.invalid += result.invalid
        self.batches += 1
        if self.record_lags:
            done = time.time()
            self.lags_s.extend(done - se.event.timestamp_ms / 1000.0 for se in events if se.event.timestamp_ms)


class EventConsumer:
    """Consumes the events topic into the stream views until `stop()`."""

    def __init__(
        self,
        updater: StreamUpdater,
        *,
        bootstrap: str | None = None,
        topic: str | None = None,
        group_id: str | None = None,
        dlq_topic: str | None = None,
        max_records: int | None = None,
        poll_timeout_ms: int = 100,
        on_batch: Callable[[ApplyResult], None] | None = None,
        record_lags: bool = False,
    ) -> None:
        max_records = max_records or feature_settings.CONSUMER_MAX_RECORDS.int()
        self.updater = updater
        updater.replay_window = max(updater.replay_window, max_records)
        self.topic = topic or feature_settings.events_topic()
        self.stats = ConsumerStats(record_lags=record_lags)
        self.on_batch = on_batch
        self._kafka_consumer = clients.make_consumer(
            group_id or feature_settings.CONSUMER_GROUP.str(),
            [self.topic],
            bootstrap,
            max_poll_records=max_records,
            **clients.batched_fetch(feature_settings.CONSUMER_FETCH_WAIT_MS.int()),
        )
        self._tracker = _PositionTracker(self._kafka_consumer)
        self._producer = clients.make_producer(bootstrap)
        self.loop = ConsumerLoop(
            self._tracker,
            self._decode,
            self._handle,
            dlq_producer=self._producer,
            dlq_topic=dlq_topic or feature_settings.dlq_topic(),
            poll_timeout_ms=poll_timeout_ms,
            lag=LagGauge("features"),
        )

    def _decode(self, data: bytes | None) -> StreamEvent:
        event = codec.decode(events_pb2.Event, data)
        partition, offset = self._tracker.positions.get(id(data), (-1, -1))
        return StreamEvent(event, partition, offset)

    def _handle(self, events: list[StreamEvent]) -> None:
        result = self.updater.apply(events)
        self.stats.add(result, events)
        if result.invalid:
            log.warning("skipped %d events without user_id or event_id", result.invalid)
        if self.on_batch is not None:
            self.on_batch(result)

    def run(self, *, max_records: int | None = None, idle_timeout_s: float | None = None) -> int:
        """Consume until `stop()` (or the limits); returns the records consumed."""
        return self.loop.run(max_records=max_records, idle_timeout_s=idle_timeout_s)

    def stop(self) -> None:
        self.loop.stop()

    def close(self) -> None:
        """Leave the group and release the connections (call after `run` returned)."""
        try:
            self._kafka_consumer.close()
        finally:
            self._producer.close(timeout=10)
