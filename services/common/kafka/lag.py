"""Consumer lag as a Prometheus gauge: records in Kafka after what a consumer has processed, per topic.

Computed without a network call: the high watermark each fetch response carries (`KafkaConsumer.highwater`)
minus the next offset after the last record processed, summed over the topic's partitions."""

from __future__ import annotations

from collections import defaultdict

from kafka import KafkaConsumer, TopicPartition
from prometheus_client import Gauge

LAG = Gauge(
    "recsys_kafka_consumer_lag_records",
    "Records in Kafka after the last one this consumer processed (high watermark - next offset), per topic",
    ["consumer", "topic"],
)


class LagGauge:
    """Tracks the next offset per partition of one consumer and sets its per-topic lag after each batch."""

    def __init__(self, consumer_name: str) -> None:
        self.consumer_name = consumer_name
        self.next_offsets: dict[TopicPartition, int] = {}

    def processed(self, batches: dict) -> None:
        """Remember how far a polled batch ({TopicPartition: [records]}) reached."""
        for tp, records in batches.items():
            if records:
                self.next_offsets[tp] = records[-1].offset + 1

    def update(self, consumer: KafkaConsumer) -> dict[str, int]:
        """Set the gauge from the consumer's cached high watermarks; returns the lag per topic."""
        lag: dict[str, int] = defaultdict(int)
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            nxt = self.next_offsets.get(tp)
            if highwater is None:
                continue
            lag[tp.topic] += max(0, highwater - nxt) if nxt is not None else 0
        for topic, value in lag.items():
            LAG.labels(self.consumer_name, topic).set(value)
        return dict(lag)
