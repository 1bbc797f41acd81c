"""The at-least-once consumer loop and the idle clock that bounds a consume loop."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Generic

from kafka import KafkaConsumer, KafkaProducer, OffsetAndMetadata, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import CommitFailedError

from recsys.common.kafka.codec import M, UndecodableMessage
from recsys.common.kafka.dlq import dead_letter
from recsys.common.kafka.lag import LagGauge

log = logging.getLogger(__name__)


class ConsumerLoop(Generic[M]):
    """Poll batches, decode them, hand the messages to `handler`, then commit (at-least-once).

    Offsets are committed only after the handler returned, so a crash re-delivers at most the batch in
    flight. Undecodable records go to the dead-letter topic (acknowledged before the commit) and the loop
    goes on. If the handler raises, the consumer seeks back to the batch start and the error propagates.
    """

    def __init__(
        self,
        consumer: KafkaConsumer,
        decode_value: Callable[[bytes | None], M],
        handler: Callable[[list[M]], None],
        *,
        dlq_producer: KafkaProducer | None = None,
        dlq_topic: str | None = None,
        poll_timeout_ms: int = 500,
        lag: LagGauge | None = None,
    ) -> None:
        self.consumer = consumer
        self.lag = lag
        self.decode_value = decode_value
        self.handler = handler
        self.dlq_producer = dlq_producer
        self.dlq_topic = dlq_topic
        self.poll_timeout_ms = poll_timeout_ms
        self.processed = 0
        self.dead_lettered = 0
        self._stop = threading.Event()

    def stop(self) -> None:
        """Ask `run` to return after the batch in flight is committed."""
        self._stop.set()

    def run_once(self) -> int:
        """One poll-decode-handle-commit cycle; returns the number of records consumed."""
        batches = self.consumer.poll(timeout_ms=self.poll_timeout_ms)
        if not batches:
            return 0
        messages: list[M] = []
        pending_dlq = []
        try:
            for records in batches.values():
                for record in records:
                    try:
                        messages.append(self.decode_value(record.value))
                    except UndecodableMessage as exc:
                        if self.dlq_producer is None:
                            raise
                        log.warning("dead-lettering %s[%d]@%d: %s", record.topic, record.partition,
                                    record.offset, exc)
                        pending_dlq.append(dead_letter(self.dlq_producer, record, str(exc), self.dlq_topic))
            if messages:
                self.handler(messages)
            for future in pending_dlq:
                future.get(timeout=30)
        except BaseException:
            # Nothing of this batch is committed; the next poll (or the next owner) starts at its beginning.
            for tp, records in batches.items():
                self.consumer.seek(tp, records[0].offset)
            raise
        self._commit(batches)
        if self.lag is not None:
            self.lag.processed(batches)
            self.lag.update(self.consumer)
        self.processed += len(messages)
        self.dead_lettered += len(pending_dlq)
        return sum(len(records) for records in batches.values())

    def _commit(self, batches: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        offsets = {
            tp: OffsetAndMetadata(records[-1].offset + 1, "", records[-1].leader_epoch)
            for tp, records in batches.items()
        }
        try:
            self.consumer.commit(offsets)
        except CommitFailedError as exc:
            # The group rebalanced meanwhile; the new owner re-reads from the last commit (duplicates, no loss).
            log.warning("offset commit failed after a rebalance, records will be re-delivered: %s", exc)

    def run(
        self,
        *,
        max_records: int | None = None,
        idle_timeout_s: float | None = None,
        join_timeout_s: float = 120.0,
    ) -> int:
        """Loop until `stop()`, `max_records` consumed, or no record for `idle_timeout_s`; returns the
        records consumed.

        The idle clock runs only while the consumer owns partitions: joining (or rejoining) the group can
        take seconds on a busy broker, and that is not idleness. With an idle bound set, a consumer that
        owns nothing for `join_timeout_s` gives up too (logged with its group state)."""
        consumed = 0
        clock = IdleClock(self.consumer, idle_timeout_s, join_timeout_s)
        while not self._stop.is_set():
            n = self.run_once()
            consumed += n
            if max_records is not None and consumed >= max_records:
                break
            if clock.expired(n):
                break
        return consumed


REJOIN_NUDGE_S = 20.0


def nudge_rejoin(consumer: KafkaConsumer) -> None:
    """Ask for fresh metadata and a new group join. kafka-python 3.0 can leave a group leader that assigned
    nothing (its assignor found "no partition metadata" for a new topic) waiting with no partition for good;
    a rejoin with fresh metadata assigns again. Best effort: these are the client's internals."""
    try:
        consumer._client.cluster.request_update()
        consumer._coordinator.request_rejoin()
    except AttributeError:  # another kafka-python: nothing to nudge
        return
    log.warning("no partition assigned for %.0f s; asked for fresh metadata and a rejoin", REJOIN_NUDGE_S)


class IdleClock:
    """When a bounded consume loop should stop: no record for `idle_timeout_s` while owning partitions, or
    no partition at all for `join_timeout_s`. Time spent joining or rejoining the group is not idleness. Every
    REJOIN_NUDGE_S without a partition, the consumer is nudged to rejoin (`nudge_rejoin`)."""

    def __init__(self, consumer: KafkaConsumer, idle_timeout_s: float | None, join_timeout_s: float = 120.0) -> None:
        self.consumer = consumer
        self.idle_timeout_s = idle_timeout_s
        self.join_timeout_s = join_timeout_s
        self._idle_since = self._unassigned_since = self._nudged = time.monotonic()

    def expired(self, records: int) -> bool:
        """Record one loop turn that consumed `records`; True when the loop should stop."""
        if self.idle_timeout_s is None:
            return False
        now = time.monotonic()
        if records:
            self._idle_since = now
        if self.consumer.assignment():
            self._unassigned_since = self._nudged = now
        else:
            self._idle_since = now
            if now - self._nudged >= REJOIN_NUDGE_S:
                self._nudged = now
                nudge_rejoin(self.consumer)
            if now - self._unassigned_since >= self.join_timeout_s:
                log.warning("no partition assigned after %.0f s (subscription %s); giving up",
                            self.join_timeout_s, sorted(self.consumer.subscription() or ()))
                return True
        return now - self._idle_since >= self.idle_timeout_s
