"""Kafka helpers on kafka-python: producer and consumer factories, idempotent topic creation, protobuf
(de)serialisation, a dead-letter path, and an at-least-once consumer loop.

Messages on every topic are serialized `recsys.v1` protobufs keyed by the UTF-8 user id, so one user's
events stay ordered within a partition.

Every client made here (producer, consumer, admin) gets the security settings of RECSYS_KAFKA_SECURITY_PROTOCOL
and friends (`security_config`): SASL (SCRAM-SHA-512 by default) and / or TLS; plaintext by default. Code that
builds kafka-python clients itself should pass `**client_config()`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

from google.protobuf.message import DecodeError, Message
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, OffsetAndMetadata, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import CommitFailedError, KafkaError
from kafka.serializer import Serializer

from recsys.common import config as settings
from recsys.common.config import KAFKA_BOOTSTRAP, KAFKA_DLQ_TOPIC, ConfigError
from recsys.v1 import events_pb2

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)

#: The message types that travel on Kafka, by name.
MESSAGE_TYPES: dict[str, type[Message]] = {
    "Event": events_pb2.Event,
    "Impression": events_pb2.Impression,
    "PredictionLog": events_pb2.PredictionLog,
}

#: Headers a dead-lettered record carries besides its original headers.
DLQ_HEADERS = ("dlq.topic", "dlq.partition", "dlq.offset", "dlq.error")

_TOPIC_ALREADY_EXISTS = 36

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")


class UndecodableMessage(ValueError):
    """A record's value is not a valid serialized message of the expected type."""


def servers(bootstrap: str | None = None) -> list[str]:
    """Bootstrap servers as a list: `bootstrap` or RECSYS_KAFKA_BOOTSTRAP, comma separated."""
    raw = bootstrap if bootstrap is not None else KAFKA_BOOTSTRAP.str()
    return [part.strip() for part in raw.split(",") if part.strip()]


def security_config() -> dict[str, object]:
    """kafka-python security settings from RECSYS_KAFKA_SECURITY_PROTOCOL, RECSYS_KAFKA_SASL_* and
    RECSYS_KAFKA_SSL_*; raises ConfigError for an unknown protocol or mechanism, or missing SASL credentials."""
    protocol = settings.KAFKA_SECURITY_PROTOCOL.str().strip().upper() or "PLAINTEXT"
    if protocol not in SECURITY_PROTOCOLS:
        raise ConfigError(f"RECSYS_KAFKA_SECURITY_PROTOCOL={protocol!r}: one of {', '.join(SECURITY_PROTOCOLS)}")
    out: dict[str, object] = {"security_protocol": protocol}
    if protocol.startswith("SASL_"):
        mechanism = settings.KAFKA_SASL_MECHANISM.str().strip().upper()
        if mechanism not in SASL_MECHANISMS:
            raise ConfigError(f"RECSYS_KAFKA_SASL_MECHANISM={mechanism!r}: one of {', '.join(SASL_MECHANISMS)}")
        username, password = settings.KAFKA_SASL_USERNAME.str(), settings.KAFKA_SASL_PASSWORD.str()
        if not username or not password:
            raise ConfigError(f"{protocol} needs RECSYS_KAFKA_SASL_USERNAME and RECSYS_KAFKA_SASL_PASSWORD")
        out.update(sasl_mechanism=mechanism, sasl_plain_username=username, sasl_plain_password=password)
    if protocol in ("SSL", "SASL_SSL"):
        certfile, keyfile = settings.KAFKA_SSL_CERTFILE.str().strip(), settings.KAFKA_SSL_KEYFILE.str().strip()
        if bool(certfile) != bool(keyfile):
            raise ConfigError("RECSYS_KAFKA_SSL_CERTFILE and RECSYS_KAFKA_SSL_KEYFILE must be set together")
        out.update(
            ssl_cafile=settings.KAFKA_SSL_CAFILE.str().strip() or None,
            ssl_certfile=certfile or None,
            ssl_keyfile=keyfile or None,
            ssl_check_hostname=settings.KAFKA_SSL_CHECK_HOSTNAME.bool(),
        )
    return out


def client_config(bootstrap: str | None = None) -> dict[str, object]:
    """bootstrap_servers plus the security settings: the common arguments of every kafka-python client."""
    return {"bootstrap_servers": servers(bootstrap), **security_config()}


def encode(message: Message) -> bytes:
    """Serialize a protobuf message."""
    return message.SerializeToString()


def decode(message_type: type[M], data: bytes | None) -> M:
    """Parse `data` as `message_type`; raises UndecodableMessage on a null value or corrupt bytes."""
    if data is None:
        raise UndecodableMessage(f"null value where a {message_type.DESCRIPTOR.full_name} was expected")
    message = message_type()
    try:
        message.ParseFromString(data)
    except DecodeError as exc:
        raise UndecodableMessage(f"not a {message_type.DESCRIPTOR.full_name}: {exc}") from exc
    return message


def decoder(message_type: type[M]) -> Callable[[bytes | None], M]:
    """A one-argument decoder for `message_type`, for ConsumerLoop."""
    return lambda data: decode(message_type, data)


class KeySerializer(Serializer):
    """str keys (user ids) as UTF-8; bytes and None pass through."""

    def serialize(self, topic, headers, data: str | bytes | None) -> bytes | None:
        return data.encode("utf-8") if isinstance(data, str) else data


class ProtobufSerializer(Serializer):
    """Protobuf messages serialized; bytes and None (tombstones, dead letters) pass through."""

    def serialize(self, topic, headers, data: Message | bytes | None) -> bytes | None:
        return encode(data) if isinstance(data, Message) else data


def make_producer(bootstrap: str | None = None, *, linger_ms: int = 5, **overrides) -> KafkaProducer:
    """A producer with acks=all, idempotence and a short linger; retries (idempotent, so no duplicates)
    until delivery_timeout_ms. Values may be protobufs or bytes, keys str or bytes."""
    config = dict(
        **client_config(bootstrap),
        acks="all",
        enable_idempotence=True,
        retry_backoff_ms=200,
        linger_ms=linger_ms,
        delivery_timeout_ms=60_000,
        metrics_enabled=False,  # kafka-python's own sensors: CPU on every send, and nothing here reads them
        key_serializer=KeySerializer(),
        value_serializer=ProtobufSerializer(),
    )
    config.update(overrides)
    return KafkaProducer(**config)


def publish(producer: KafkaProducer, topic: str, message: Message):
    """Send `message` keyed by its user_id; returns the send future."""
    return producer.send(topic, key=getattr(message, "user_id", "") or None, value=message)


BATCHED_FETCH_MIN_BYTES = 1024 * 1024


def batched_fetch(wait_ms: int) -> dict[str, int]:
    """Consumer settings for fewer, larger fetches: the broker holds a fetch until 1 MiB is there or `wait_ms`
    passed. A consumer whose every batch has a fixed cost (a store commit, an offset commit) then pays it a few
    times a second instead of once per record at low rates. wait_ms <= 0: Kafka's default (answer at once)."""
    if wait_ms <= 0:
        return {"fetch_min_bytes": 1}
    return {"fetch_min_bytes": BATCHED_FETCH_MIN_BYTES, "fetch_max_wait_ms": int(wait_ms)}


CONSUMER_METADATA_MAX_AGE_MS = 5000


def make_consumer(
    group_id: str, topics: Iterable[str], bootstrap: str | None = None, **overrides
) -> KafkaConsumer:
    """A group consumer that never auto-commits (commit after processing), starts at the earliest
    offset when the group has none, and notices dead members within seconds."""
    config = dict(
        **client_config(bootstrap),
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=6000,
        heartbeat_interval_ms=2000,
        max_poll_records=500,
        # kafka-python 3.0 drops a topic-set change whose metadata request races one already in flight (the old
        # response clears the update flag), so a fresh group leader can assign nothing and wait for the next
        # periodic refresh: 5 min by default, 5 s here (one small request per refresh)
        metadata_max_age_ms=CONSUMER_METADATA_MAX_AGE_MS,
        metrics_enabled=False,  # kafka-python's own sensors: CPU on every fetch, and nothing here reads them
    )
    config.update(overrides)
    consumer = KafkaConsumer(**config)
    topics = list(topics)
    if topics:  # callers with a listener of their own subscribe themselves
        consumer.subscribe(topics, listener=_AssignmentLog(group_id))
    return consumer


class _AssignmentLog(ConsumerRebalanceListener):
    """Logs every change of a group consumer's partitions (joins, rebalances, slow rejoins show up)."""

    def __init__(self, group_id: str) -> None:
        self.group_id = group_id

    def on_partitions_revoked(self, revoked) -> None:
        log.info("kafka partitions revoked", extra={"group": self.group_id, "partitions": _names(revoked)})

    def on_partitions_assigned(self, assigned) -> None:
        log.info("kafka partitions assigned", extra={"group": self.group_id, "partitions": _names(assigned)})


def _names(partitions) -> list[str]:
    return sorted(f"{tp.topic}[{tp.partition}]" for tp in partitions)


def make_admin(bootstrap: str | None = None, **overrides) -> KafkaAdminClient:
    """An admin client with the security settings."""
    return KafkaAdminClient(**{**client_config(bootstrap), **overrides})


def ensure_topics(
    topics: Iterable[str] | dict[str, int],
    bootstrap: str | None = None,
    *,
    partitions: int = 3,
    replication_factor: int = 1,
    timeout_s: float = 30.0,
) -> list[str]:
    """Create the topics that do not exist yet (a dict gives partitions per topic); returns the created
    ones after every partition has a leader. Safe to call concurrently."""
    wanted = dict(topics) if isinstance(topics, dict) else {name: partitions for name in topics}
    admin = make_admin(bootstrap, request_timeout_ms=int(timeout_s * 1000))
    try:
        missing = {name: n for name, n in wanted.items() if name not in set(admin.list_topics())}
        created: list[str] = []
        if missing:
            spec = {name: {"num_partitions": n, "replication_factor": replication_factor}
                    for name, n in missing.items()}
            response = admin.create_topics(spec, timeout_ms=int(timeout_s * 1000), raise_errors=False)
            for result in response["topics"]:
                if result["error_code"] == 0:
                    created.append(result["name"])
                elif result["error_code"] != _TOPIC_ALREADY_EXISTS:
                    raise KafkaError(f"creating topic {result['name']}: {result['error_message']}")
        admin.wait_for_topics(list(wanted), timeout_ms=int(timeout_s * 1000))
        return created
    finally:
        admin.close()


def dead_letter(producer: KafkaProducer, record: ConsumerRecord, error: str, topic: str | None = None):
    """Send the raw record to the dead-letter topic with its origin and the error in headers; returns the
    send future."""
    headers = list(record.headers or []) + [
        ("dlq.topic", record.topic.encode()),
        ("dlq.partition", str(record.partition).encode()),
        ("dlq.offset", str(record.offset).encode()),
        ("dlq.error", error[:1000].encode()),
    ]
    return producer.send(topic or KAFKA_DLQ_TOPIC.str(), key=record.key, value=record.value, headers=headers)


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
    ) -> None:
        self.consumer = consumer
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


class IdleClock:
    """When a bounded consume loop should stop: no record for `idle_timeout_s` while owning partitions, or
    no partition at all for `join_timeout_s`. Time spent joining or rejoining the group is not idleness."""

    def __init__(self, consumer: KafkaConsumer, idle_timeout_s: float | None, join_timeout_s: float = 120.0) -> None:
        self.consumer = consumer
        self.idle_timeout_s = idle_timeout_s
        self.join_timeout_s = join_timeout_s
        self._idle_since = self._unassigned_since = time.monotonic()

    def expired(self, records: int) -> bool:
        """Record one loop turn that consumed `records`; True when the loop should stop."""
        if self.idle_timeout_s is None:
            return False
        now = time.monotonic()
        if records:
            self._idle_since = now
        if self.consumer.assignment():
            self._unassigned_since = now
        else:
            self._idle_since = now
            if now - self._unassigned_since >= self.join_timeout_s:
                log.warning("no partition assigned after %.0f s (subscription %s); giving up",
                            self.join_timeout_s, sorted(self.consumer.subscription() or ()))
                return True
        return now - self._idle_since >= self.idle_timeout_s
