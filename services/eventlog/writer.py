"""The log writer: its own consumer group over the impressions and events topics, writing the partitioned
Parquet log with exactly-once effect.

- Assignment: a newly assigned partition is paused (the rebalance listener runs on kafka-python's IO thread and
  may not block); before the next records are taken, the writer deletes the partition's incomplete writes and
  seeks it to max(committed offset, the offset after its last complete write), then resumes it. A crash after
  the files were written but before the commit therefore neither duplicates (the files say where to go on) nor
  loses (an incomplete write is deleted and consumed again).
- Consumption: polled records are buffered per partition, in offset order; undecodable ones are dead-lettered
  but stay in the batch's offset range, so the next write resumes after them.
- Flush: when the buffered rows reach the row threshold, or the oldest buffered record has waited the time
  threshold, every partition's batch becomes one write (sink.write: all parts durable), then their offsets are
  committed synchronously. A revoked partition's batch is dropped unwritten: whoever owns it next starts at the
  end of its complete writes.
- SIGTERM: `stop()`; the loop finishes the write in flight, writes what is buffered, commits and returns.

One writer owns a partition at a time (the consumer group); retention runs in the same loop, hourly.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable

from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer, OffsetAndMetadata, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaError

from recsys.common.kafka import clients
from recsys.common.kafka.codec import UndecodableMessage
from recsys.common.kafka.dlq import dead_letter
from recsys.eventlog import metrics, retention, sink
from recsys.eventlog.batch import PartitionBatch
from recsys.eventlog.layout import open_root
from recsys.eventlog.settings import EventLogSettings

log = logging.getLogger(__name__)

MAX_POLL_RECORDS = 10_000
FETCH_WAIT_MS = 200
RETENTION_EVERY_S = 3600.0
_DEAD_LETTER_TIMEOUT_S = 30.0


class _PauseNewPartitions(ConsumerRebalanceListener):
    """Runs on the consumer's IO thread, so only notes changes (and pauses new partitions) for the loop."""

    def __init__(self, writer: EventLogWriter) -> None:
        self.writer = writer

    def on_partitions_revoked(self, revoked) -> None:
        self.writer._note_revoked(revoked)

    def on_partitions_assigned(self, assigned) -> None:
        self.writer._note_assigned(assigned)


class EventLogWriter:
    """Consume, buffer, write durably, commit; `run` loops until `stop()`."""

    def __init__(
        self,
        settings: EventLogSettings,
        consumer: KafkaConsumer | None = None,
        producer: KafkaProducer | None = None,
        poll_timeout_ms: int = 500,
        stop: threading.Event | None = None,
    ) -> None:
        self.settings = settings
        self.fs, self.root = open_root(settings.uri)
        self.tables = settings.tables
        self.poll_timeout_ms = poll_timeout_ms
        self.consumer = consumer or clients.make_consumer(
            settings.group,
            [],
            settings.bootstrap,
            max_poll_records=MAX_POLL_RECORDS,
            fetch_max_bytes=64 * 1024 * 1024,
            max_partition_fetch_bytes=16 * 1024 * 1024,
            **({"group_instance_id": settings.instance_id} if settings.instance_id else {}),
            **clients.batched_fetch(FETCH_WAIT_MS),
        )
        self.producer = producer or clients.make_producer(settings.bootstrap)
        self.batches: dict[TopicPartition, PartitionBatch] = {}
        self.records = self.rows = self.writes = self.files = self.dead_lettered = 0
        self._lock = threading.Lock()
        self._to_recover: set[TopicPartition] = set()
        self._revoked: set[TopicPartition] = set()
        self._stop = stop or threading.Event()
        self._next_retention = time.monotonic()
        self.consumer.subscribe(topics=list(self.tables), listener=_PauseNewPartitions(self))

    # Rebalance notes (IO thread) and their handling (the loop's thread).

    def _note_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        with self._lock:
            self._revoked.update(revoked)
            self._to_recover.difference_update(revoked)

    def _note_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        assigned = set(assigned)
        self.consumer.pause(*assigned)
        with self._lock:
            self._to_recover.update(assigned)

    def _handle_rebalance(self) -> set[TopicPartition]:
        """Drop the batches of revoked and reassigned partitions and recover the new ones; returns the
        partitions whose records of the last poll must not be taken (they will be fetched again)."""
        with self._lock:
            revoked, self._revoked = self._revoked, set()
            to_recover, self._to_recover = self._to_recover, set()
        changed = revoked | to_recover
        for tp in changed:  # unwritten records: the partition's next owner consumes them again
            self.batches.pop(tp, None)
        to_recover &= self.consumer.assignment()
        if to_recover:
            self._recover(to_recover)
        return changed

    def _recover(self, partitions: set[TopicPartition]) -> None:
        """Delete the partitions' incomplete writes and seek each past its last complete write or commit."""
        resume: dict[tuple[str, int], int] = {}
        for table in set(self.tables.values()):
            mine = {(tp.topic, tp.partition) for tp in partitions if self.tables[tp.topic] == table}
            if mine:
                resume.update(sink.recover(self.fs, self.root, table, mine))
        positions = {}
        for tp in sorted(partitions):
            committed = self.consumer.committed(tp)
            known = [offset for offset in (committed, resume.get((tp.topic, tp.partition))) if offset is not None]
            if known:
                self.consumer.seek(tp, max(known))
                positions[f"{tp.topic}[{tp.partition}]"] = max(known)
        self.consumer.resume(*partitions)
        log.info("partitions recovered", extra={"resume_at": positions})

    # The loop.

    def stop(self) -> None:
        """Ask `run` to return after writing and committing what it holds (safe from a signal handler)."""
        self._stop.set()

    def run(self) -> int:
        """Loop until `stop()`, then write and commit what is buffered; returns the records consumed."""
        consumed = 0
        while not self._stop.is_set():
            consumed += self.run_once()
        self.flush()
        return consumed

    def run_once(self) -> int:
        """One poll; writes and commits when a threshold is reached; returns the records taken."""
        polled = self.consumer.poll(timeout_ms=self.poll_timeout_ms, max_records=MAX_POLL_RECORDS)
        changed = self._handle_rebalance()
        owned = self.consumer.assignment()
        taken = 0
        for tp, records in polled.items():
            if tp in owned and tp not in changed:
                taken += self._buffer(tp, records)
        if self._due():
            self.flush()
        self._maybe_expire()
        return taken

    def _buffer(self, tp: TopicPartition, records: list[ConsumerRecord]) -> int:
        batch = self.batches.get(tp)
        if batch is None:
            batch = self.batches[tp] = PartitionBatch(tp.topic, tp.partition, self.tables[tp.topic])
        for record in records:
            try:
                batch.add(record)
            except UndecodableMessage as exc:
                batch.dead_letters.append(dead_letter(self.producer, record, str(exc), self.settings.dlq_topic))
                log.warning("dead-lettered", extra={"topic": record.topic, "partition": record.partition,
                                                    "offset": record.offset, "error": str(exc)})
        return len(records)

    def _due(self) -> bool:
        pending = [b for b in self.batches.values() if b.records]
        if not pending:
            return False
        if sum(b.rows for b in pending) >= self.settings.flush_rows:
            return True
        return time.monotonic() - min(b.since for b in pending) >= self.settings.flush_s

    def flush(self) -> None:
        """Write every buffered partition (one write each, all parts durable), then commit their offsets."""
        pending = {tp: b for tp, b in self.batches.items() if b.records}
        self.batches.clear()
        if not pending:
            return
        started = time.perf_counter()
        offsets = {}
        for tp, batch in sorted(pending.items()):
            self._write(batch)
            offsets[tp] = OffsetAndMetadata(batch.last + 1, "", batch.leader_epoch)
        self._commit(offsets)
        metrics.FLUSH_SECONDS.observe(time.perf_counter() - started)
        for tp, offset in offsets.items():
            highwater = self.consumer.highwater(tp) if tp in self.consumer.assignment() else None
            if highwater is not None:
                metrics.LAG.labels(tp.topic, str(tp.partition)).set(max(0, highwater - offset.offset))

    def _write(self, batch: PartitionBatch) -> None:
        for future in batch.dead_letters:  # dead letters are durable before the offsets move past them
            future.get(timeout=_DEAD_LETTER_TIMEOUT_S)
        table = batch.table_name
        parts = sink.write(self.fs, self.root, table, batch.topic, batch.partition, batch.first, batch.last,
                           batch.to_table())
        self.records += batch.records
        self.rows += batch.rows
        self.dead_lettered += len(batch.dead_letters)
        self.files += len(parts)
        self.writes += 1 if parts else 0
        metrics.RECORDS.labels(batch.topic).inc(batch.records)
        metrics.DEAD_LETTERS.labels(batch.topic).inc(len(batch.dead_letters))
        metrics.ROWS.labels(table).inc(batch.rows)
        metrics.WRITES.labels(table).inc(1 if parts else 0)
        metrics.FILES.labels(table).inc(len(parts))
        metrics.BYTES.labels(table).inc(sum(p.bytes for p in parts))

    def _commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        started = time.perf_counter()
        try:
            self.consumer.commit(offsets)
        except KafkaError as exc:
            # The files are durable and complete: whoever owns the partitions next resumes after them.
            log.warning("offset commit failed; the log's files say where to resume", extra={"error": str(exc)})
            return
        metrics.COMMIT_SECONDS.observe(time.perf_counter() - started)

    def _maybe_expire(self) -> None:
        days = self.settings.retention_days
        if days <= 0 or time.monotonic() < self._next_retention:
            return
        self._next_retention = time.monotonic() + RETENTION_EVERY_S
        report = retention.expire(self.settings.uri, days)
        metrics.EXPIRED_FILES.inc(report.files)

    def close(self) -> None:
        """Leave the group (without committing: commits follow writes only) and release the connections."""
        try:
            self.consumer.close(autocommit=False)
        finally:
            self.producer.close(timeout=10)
