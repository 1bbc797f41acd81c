"""The dead-letter path: a record that cannot be processed goes, raw, to the dead-letter topic."""

from __future__ import annotations

from kafka import KafkaProducer
from kafka.consumer.fetcher import ConsumerRecord

from recsys.common.config import KAFKA_DLQ_TOPIC

#: Headers a dead-lettered record carries besides its original headers.
DLQ_HEADERS = ("dlq.topic", "dlq.partition", "dlq.offset", "dlq.error")


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
