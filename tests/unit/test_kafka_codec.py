"""Protobuf serde, dead-letter headers and the consumer loop's commit discipline, without a broker."""

from __future__ import annotations

import time

import pytest
from kafka import OffsetAndMetadata, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from recsys.common import kafka as rk
from recsys.v1 import catalog_pb2, events_pb2


def _record(topic: str, partition: int, offset: int, value: bytes | None, key: bytes = b"u1") -> ConsumerRecord:
    return ConsumerRecord(
        topic=topic, partition=partition, leader_epoch=0, offset=offset, timestamp=0, timestamp_type=0,
        key=key, value=value, headers=[("trace", b"abc")], checksum=None,
        serialized_key_size=len(key), serialized_value_size=len(value or b""), serialized_header_size=8,
    )


def test_round_trip_every_message_type():
    samples = {
        "Event": events_pb2.Event(event_id="e1", type=events_pb2.EVENT_TYPE_RATING, user_id="u1", value=4.5),
        "Impression": events_pb2.Impression(
            event_id="e2", user_id="u1", items=[events_pb2.ImpressionItem(item_id="i1", position=0, score=0.5)]
        ),
        "PredictionLog": events_pb2.PredictionLog(
            request_id="r1", feature_names=["a", "b"], features=[1.0, 2.0], scores=[0.25], item_ids=["i1"]
        ),
        "ItemChange": catalog_pb2.ItemChange(change_id="c1", timestamp_ms=5, upsert=catalog_pb2.Item(
            item_id="i1", genres=["drama"], attributes={"year": "1999"}, available=False)),
    }
    assert set(samples) == set(rk.MESSAGE_TYPES)
    for name, message in samples.items():
        cls = rk.MESSAGE_TYPES[name]
        assert rk.decode(cls, rk.encode(message)) == message
        assert rk.decoder(cls)(rk.ProtobufSerializer().serialize("t", [], message)) == message


@pytest.mark.parametrize("data", [b"\xff\xfegarbage", b"not a protobuf", b"\x00", None])
def test_undecodable_values_raise(data):
    with pytest.raises(rk.UndecodableMessage, match="recsys.v1.Event"):
        rk.decode(events_pb2.Event, data)


def test_serializers_and_servers(monkeypatch):
    assert rk.KeySerializer().serialize("t", [], "user-é") == "user-é".encode()
    assert rk.KeySerializer().serialize("t", [], b"raw") == b"raw"
    assert rk.KeySerializer().serialize("t", [], None) is None
    assert rk.ProtobufSerializer().serialize("t", [], b"raw") == b"raw"
    assert rk.servers("a:1, b:2,") == ["a:1", "b:2"]
    monkeypatch.setenv("RECSYS_KAFKA_BOOTSTRAP", "h:9")
    assert rk.servers() == ["h:9"]


class FakeFuture:
    def get(self, timeout=None):
        return None


class FakeProducer:
    def __init__(self):
        self.sent = []

    def send(self, topic, key=None, value=None, headers=None):
        self.sent.append((topic, key, value, headers))
        return FakeFuture()


class FakeConsumer:
    """Serves pre-built poll results and records commits and seeks."""

    def __init__(self, polls, assigned=True):
        self.polls = list(polls)
        self.commits = []
        self.seeks = []
        self.assigned = assigned

    def assignment(self):
        return {TopicPartition("events", 0)} if self.assigned else set()

    def subscription(self):
        return {"events"}

    def poll(self, timeout_ms=0):
        return self.polls.pop(0) if self.polls else {}

    def commit(self, offsets):
        self.commits.append(offsets)

    def seek(self, tp, offset):
        self.seeks.append((tp, offset))


def test_dead_letter_headers_keep_origin():
    producer = FakeProducer()
    rk.dead_letter(producer, _record("events", 2, 41, b"junk"), "bad bytes", topic="dlq")
    topic, key, value, headers = producer.sent[0]
    assert (topic, key, value) == ("dlq", b"u1", b"junk")
    assert headers == [
        ("trace", b"abc"), ("dlq.topic", b"events"), ("dlq.partition", b"2"), ("dlq.offset", b"41"),
        ("dlq.error", b"bad bytes"),
    ]


def test_loop_commits_after_handler_and_dead_letters_garbage():
    tp0, tp1 = TopicPartition("events", 0), TopicPartition("events", 1)
    good = [events_pb2.Event(event_id=f"e{i}", user_id="u1").SerializeToString() for i in range(3)]
    consumer = FakeConsumer([
        {tp0: [_record("events", 0, 10, good[0]), _record("events", 0, 11, b"\xff")],
         tp1: [_record("events", 1, 5, good[1])]},
        {tp1: [_record("events", 1, 6, good[2])]},
    ])
    producer = FakeProducer()
    handled = []

    def handler(batch):
        assert len(consumer.commits) == len(handled)  # nothing committed before the handler returns
        handled.append([event.event_id for event in batch])

    loop = rk.ConsumerLoop(consumer, rk.decoder(events_pb2.Event), handler, dlq_producer=producer, dlq_topic="dlq")
    assert loop.run(max_records=4, idle_timeout_s=2) == 4
    assert handled == [["e0", "e1"], ["e2"]]
    assert consumer.commits == [
        {tp0: OffsetAndMetadata(12, "", 0), tp1: OffsetAndMetadata(6, "", 0)},
        {tp1: OffsetAndMetadata(7, "", 0)},
    ]
    assert [sent[0] for sent in producer.sent] == ["dlq"]
    assert (loop.processed, loop.dead_lettered) == (3, 1)


def test_loop_seeks_back_and_does_not_commit_when_handler_fails():
    tp = TopicPartition("events", 0)
    value = events_pb2.Event(event_id="e1").SerializeToString()
    consumer = FakeConsumer([{tp: [_record("events", 0, 3, value), _record("events", 0, 4, value)]}])

    def handler(batch):
        raise RuntimeError("boom")

    loop = rk.ConsumerLoop(consumer, rk.decoder(events_pb2.Event), handler)
    with pytest.raises(RuntimeError, match="boom"):
        loop.run_once()
    assert consumer.commits == [] and consumer.seeks == [(tp, 3)]


def test_loop_without_dead_letter_producer_raises_on_garbage():
    tp = TopicPartition("events", 0)
    consumer = FakeConsumer([{tp: [_record("events", 0, 0, b"\xff")]}])
    loop = rk.ConsumerLoop(consumer, rk.decoder(events_pb2.Event), lambda batch: None)
    with pytest.raises(rk.UndecodableMessage):
        loop.run_once()
    assert consumer.commits == [] and consumer.seeks == [(tp, 0)]


def test_idle_clock_counts_only_while_partitions_are_owned():
    consumer = FakeConsumer([], assigned=False)
    clock = rk.IdleClock(consumer, idle_timeout_s=0.05, join_timeout_s=0.3)
    time.sleep(0.1)
    assert not clock.expired(0)  # still joining: not idle, and the join bound is not reached
    consumer.assigned = True
    assert not clock.expired(0)  # the idle clock starts now
    time.sleep(0.06)
    assert clock.expired(0)


def test_idle_clock_gives_up_on_a_consumer_that_never_gets_partitions():
    clock = rk.IdleClock(FakeConsumer([], assigned=False), idle_timeout_s=0.01, join_timeout_s=0.1)
    assert not clock.expired(0)
    time.sleep(0.12)
    assert clock.expired(0)
    assert not rk.IdleClock(FakeConsumer([], assigned=False), idle_timeout_s=None).expired(0)


def test_idle_clock_nudges_a_consumer_left_without_partitions_to_rejoin(monkeypatch):
    from types import SimpleNamespace

    from recsys.common.kafka import loop

    calls = []
    consumer = FakeConsumer([], assigned=False)
    consumer._client = SimpleNamespace(cluster=SimpleNamespace(request_update=lambda: calls.append("metadata")))
    consumer._coordinator = SimpleNamespace(request_rejoin=lambda: calls.append("rejoin"))
    monkeypatch.setattr(loop, "REJOIN_NUDGE_S", 0.05)
    clock = rk.IdleClock(consumer, idle_timeout_s=10, join_timeout_s=10)
    assert not clock.expired(0) and calls == []
    time.sleep(0.06)
    assert not clock.expired(0) and calls == ["metadata", "rejoin"]
    assert not clock.expired(0) and len(calls) == 2  # once per REJOIN_NUDGE_S, not every turn
    loop.nudge_rejoin(FakeConsumer([], assigned=False))  # a client without those internals: nothing, no error
