"""Client configuration and the producer and consumer factories.

Every client made here (and by `admin.make_admin`) gets the security settings of RECSYS_KAFKA_SECURITY_PROTOCOL
and friends (`security_config`): SASL (SCRAM-SHA-512 by default) and / or TLS; plaintext by default. Code that
builds kafka-python clients itself should pass `**client_config()`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from google.protobuf.message import Message
from kafka import KafkaConsumer, KafkaProducer
from kafka.consumer.subscription_state import ConsumerRebalanceListener

from recsys.common import config as settings
from recsys.common.config import KAFKA_BOOTSTRAP, ConfigError
from recsys.common.kafka.codec import KeySerializer, ProtobufSerializer

log = logging.getLogger(__name__)

RECONNECT_BACKOFF_MAX_MS = 2000
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")


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
    # after a broker outage every client is connected again within 2 s of the broker's return (kafka-python's
    # default backoff grows to 30 s: the candidate service's changelog follower then missed deletes for that long)
    return {"bootstrap_servers": servers(bootstrap), "reconnect_backoff_max_ms": RECONNECT_BACKOFF_MAX_MS,
            **security_config()}


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
        # a metadata update dropped in kafka-python 3.0's race (see make_consumer) is retried within 5 s, not 5 min
        metadata_max_age_ms=CONSUMER_METADATA_MAX_AGE_MS,
        key_serializer=KeySerializer(),
        value_serializer=ProtobufSerializer(),
    )
    config.update(overrides)
    return KafkaProducer(**config)


def publish(producer: KafkaProducer, topic: str, message: Message, key: str | None = None):
    """Send `message` keyed by `key` (default: its user_id); returns the send future."""
    return producer.send(topic, key=key if key is not None else getattr(message, "user_id", "") or None, value=message)


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
