"""The Kafka helper against a real broker: topics, at-least-once consumption across restarts, dead letters."""

from __future__ import annotations

import uuid

import pytest
from kafka import KafkaConsumer, TopicPartition

from recsys.common import kafka as rk
from recsys.v1 import events_pb2

pytestmark = pytest.mark.integration


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _events(n: int) -> list[events_pb2.Event]:
    return [
        events_pb2.Event(
            event_id=f"e{i}",
            type=events_pb2.EVENT_TYPE_CLICK,
            user_id=f"u{i % 97}",
            item_id=f"i{i % 1013}",
            position=i % 10,
            timestamp_ms=1_700_000_000_000 + i,
        )
        for i in range(n)
    ]


def _produce(bootstrap: str, topic: str, events: list[events_pb2.Event]) -> None:
    producer = rk.make_producer(bootstrap)
    try:
        for event in events:
            rk.publish(producer, topic, event)
        producer.flush(timeout=60)
    finally:
        producer.close(timeout=10)


def _loop(bootstrap: str, topic: str, group: str, handler, **kwargs) -> rk.ConsumerLoop:
    consumer = rk.make_consumer(group, [topic], bootstrap)
    return rk.ConsumerLoop(consumer, rk.decoder(events_pb2.Event), handler, **kwargs)


def test_ensure_topics_is_idempotent(kafka_bootstrap):
    topic = _name("topics")
    assert rk.ensure_topics({topic: 2}, kafka_bootstrap) == [topic]
    assert rk.ensure_topics([topic], kafka_bootstrap) == []
    consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap)
    try:
        assert consumer.partitions_for_topic(topic) == {0, 1}
    finally:
        consumer.close()


def test_restart_half_way_loses_nothing(kafka_bootstrap):
    topic, group = _name("events"), _name("group")
    rk.ensure_topics([topic], kafka_bootstrap, partitions=3)
    events = _events(10_000)
    _produce(kafka_bootstrap, topic, events)
    all_ids = {event.event_id for event in events}

    first: list[str] = []

    def handle_first(batch: list[events_pb2.Event]) -> None:
        first.extend(event.event_id for event in batch)
        if len(first) >= 5_000:
            loop.stop()

    loop = _loop(kafka_bootstrap, topic, group, handle_first)
    try:
        loop.run(idle_timeout_s=30)
    finally:
        loop.consumer.close()
    assert 5_000 <= len(first) < 10_000

    second: list[str] = []
    loop = _loop(kafka_bootstrap, topic, group, lambda batch: second.extend(e.event_id for e in batch))
    try:
        loop.run(max_records=10_000 - len(first), idle_timeout_s=30)
        loop.run(idle_timeout_s=1.5)  # nothing more may arrive
    finally:
        loop.consumer.close()

    assert set(first) | set(second) == all_ids
    assert len(second) == 10_000 - len(first)  # offsets were committed with every processed batch
    assert not set(first) & set(second)


def test_handler_crash_redelivers_only_the_uncommitted_batch(kafka_bootstrap):
    topic, group = _name("crash"), _name("group")
    rk.ensure_topics([topic], kafka_bootstrap, partitions=3)
    events = _events(2_000)
    _produce(kafka_bootstrap, topic, events)

    committed: list[str] = []
    crashed_batch: list[str] = []

    def handle_then_crash(batch: list[events_pb2.Event]) -> None:
        if len(committed) >= 600:
            crashed_batch.extend(event.event_id for event in batch)
            raise RuntimeError("handler crashed after processing")
        committed.extend(event.event_id for event in batch)

    loop = _loop(kafka_bootstrap, topic, group, handle_then_crash, poll_timeout_ms=500)
    try:
        with pytest.raises(RuntimeError, match="crashed"):
            loop.run(idle_timeout_s=30)
    finally:
        loop.consumer.close()
    assert crashed_batch

    after: list[str] = []
    loop = _loop(kafka_bootstrap, topic, group, lambda batch: after.extend(e.event_id for e in batch))
    try:
        loop.run(max_records=2_000 - len(committed), idle_timeout_s=30)
    finally:
        loop.consumer.close()

    assert set(after) == {event.event_id for event in events} - set(committed)
    assert len(after) == 2_000 - len(committed)
    assert set(crashed_batch) <= set(after)  # the uncommitted batch came back


def test_undecodable_record_goes_to_dead_letter_and_loop_goes_on(kafka_bootstrap):
    topic, dlq, group = _name("dirty"), _name("dlq"), _name("group")
    rk.ensure_topics({topic: 1, dlq: 1}, kafka_bootstrap)
    events = _events(10)
    producer = rk.make_producer(kafka_bootstrap)
    try:
        for event in events[:5]:
            rk.publish(producer, topic, event)
        producer.send(topic, key="u-bad", value=b"\xff\xfegarbage", headers=[("origin", b"test")])
        for event in events[5:]:
            rk.publish(producer, topic, event)
        producer.flush(timeout=30)

        seen: list[str] = []
        loop = _loop(
            kafka_bootstrap, topic, group, lambda batch: seen.extend(e.event_id for e in batch),
            dlq_producer=producer, dlq_topic=dlq,
        )
        try:
            loop.run(max_records=11, idle_timeout_s=30)
        finally:
            loop.consumer.close()
    finally:
        producer.close(timeout=10)

    assert seen == [event.event_id for event in events]
    assert loop.dead_lettered == 1 and loop.processed == 10

    reader = KafkaConsumer(bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest")
    try:
        reader.assign([TopicPartition(dlq, 0)])
        records = []
        for _ in range(20):
            records += [r for batch in reader.poll(timeout_ms=500).values() for r in batch]
            if records:
                break
    finally:
        reader.close()
    assert len(records) == 1
    record = records[0]
    headers = dict(record.headers)
    assert record.value == b"\xff\xfegarbage" and record.key == b"u-bad"
    assert headers["origin"] == b"test"
    assert headers["dlq.topic"] == topic.encode()
    assert headers["dlq.partition"] == b"0"
    assert headers["dlq.offset"] == b"5"
    assert b"recsys.v1.Event" in headers["dlq.error"]
