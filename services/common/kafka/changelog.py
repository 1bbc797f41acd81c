"""Follow the item catalogue's changelog: the items topic (ItemChange records keyed by item_id, compacted), read
from its beginning by every process that needs the catalogue's state, then followed as it grows.

No consumer group: each follower assigns itself every partition and keeps no committed offset, so a restart
rebuilds the whole state from the (compacted) topic and instances never split the partitions between them.
`caught_up` is set once the follower has read up to the end offsets it saw at start: until then the state may
lack changes made before the start. A follower whose `apply` is heavy work may be paced (`pace`, a DutyCycle) once
caught up, so that a burst of changes does not take the cores from serving.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from recsys.common.kafka import admin, clients, codec
from recsys.common.pacing import DutyCycle
from recsys.v1 import catalog_pb2

log = logging.getLogger("recsys.kafka.changelog")

#: Topic settings of the items topic: compacted (the latest change per item_id is kept forever).
ITEMS_TOPIC_CONFIG = {"cleanup.policy": "compact", "min.compaction.lag.ms": "60000"}


def is_available(item: catalog_pb2.Item) -> bool:
    """An item's availability (unset = available: producers writing the topic directly may omit it)."""
    return not item.HasField("available") or item.available


def item_key(change: catalog_pb2.ItemChange) -> str:
    """The record key of a change: its item's id (what compaction keeps the latest change of)."""
    return change.upsert.item_id if change.WhichOneof("change") == "upsert" else change.delete_item_id


def deciding(
    changes: Iterable[catalog_pb2.ItemChange], stamps: dict[str, int]
) -> Iterator[tuple[str, catalog_pb2.ItemChange]]:
    """(item_id, change) for each change that decides its item's state, in order: the latest per item wins, an
    older one (a changelog catching up on what came before a change already applied) is skipped. `stamps` (item
    -> time of its deciding change) is updated."""
    for change in changes:
        if change.WhichOneof("change") is None:
            continue
        item_id = item_key(change)
        if change.timestamp_ms < stamps.get(item_id, 0):
            continue
        stamps[item_id] = change.timestamp_ms
        yield item_id, change


class ItemChangeFollower:
    """Reads the items topic from its beginning on a thread and hands every batch of decoded changes to
    `apply(changes)` (in topic order per item). Undecodable records are skipped and logged."""

    def __init__(self, topic: str, apply: Callable[[list[catalog_pb2.ItemChange]], None],
                 bootstrap: str | None = None, poll_timeout_ms: int = 200, name: str = "items",
                 pace: DutyCycle | None = None) -> None:
        self.topic = topic
        self.apply = apply
        self.pace = pace  # once caught up, rest after each batch in proportion to the time apply took
        self.bootstrap = bootstrap
        self.poll_timeout_ms = poll_timeout_ms
        self.name = name
        self.applied = 0
        self.caught_up = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{name}-changelog", daemon=True)

    def start(self) -> ItemChangeFollower:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=timeout_s)

    def wait_caught_up(self, timeout_s: float) -> bool:
        """True once the state holds every change made before the follower started."""
        return self.caught_up.wait(timeout_s)

    def _connect(self) -> tuple[KafkaConsumer, dict[TopicPartition, int]]:
        # made here, compacted, before any metadata request could auto-create it with the broker's defaults
        admin.ensure_topics([self.topic], self.bootstrap, configs={self.topic: ITEMS_TOPIC_CONFIG}, timeout_s=10)
        consumer = KafkaConsumer(**clients.client_config(self.bootstrap), group_id=None, enable_auto_commit=False,
                                 auto_offset_reset="earliest", metrics_enabled=False)
        partitions = None
        deadline = time.monotonic() + 30
        while not partitions and time.monotonic() < deadline and not self._stop.is_set():
            partitions = consumer.partitions_for_topic(self.topic)
            if not partitions:
                time.sleep(0.5)
        if not partitions:
            consumer.close()
            raise KafkaError(f"topic {self.topic} has no partitions (not created?)")
        tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        return consumer, consumer.end_offsets(tps)

    def _run(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                consumer, targets = self._connect()
            except Exception as exc:  # noqa: BLE001 - broker down: retry, the state waits
                log.warning("items changelog unreachable; retrying", extra={"error": str(exc), "follower": self.name})
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            try:
                self._follow(consumer, targets)
                return
            except Exception:  # noqa: BLE001 - reconnect and re-read: apply() is idempotent per change
                log.exception("items changelog follower failed; reconnecting", extra={"follower": self.name})
                self._stop.wait(backoff)
            finally:
                consumer.close()

    def _follow(self, consumer: KafkaConsumer, targets: dict[TopicPartition, int]) -> None:
        remaining = {tp: end for tp, end in targets.items() if end > 0}
        if not remaining:
            self.caught_up.set()
        while not self._stop.is_set():
            batches = consumer.poll(timeout_ms=self.poll_timeout_ms)
            changes: list[catalog_pb2.ItemChange] = []
            for tp, records in batches.items():
                for record in records:
                    try:
                        changes.append(codec.decode(catalog_pb2.ItemChange, record.value))
                    except codec.UndecodableMessage as exc:
                        log.warning("undecodable item change skipped", extra={"offset": record.offset,
                                                                               "partition": tp.partition,
                                                                               "error": str(exc)})
                if records and tp in remaining and records[-1].offset + 1 >= remaining[tp]:
                    del remaining[tp]
            if changes:
                started = time.monotonic()
                self.apply(changes)
                self.applied += len(changes)
                if self.pace is not None and self.caught_up.is_set():
                    self.pace.rest(time.monotonic() - started, self._stop)
            if not remaining and not self.caught_up.is_set():
                self.caught_up.set()
                log.info("items changelog caught up", extra={"follower": self.name, "changes": self.applied})
