"""The log writer as its own process on a real Kafka broker, killed (SIGKILL) at random moments while records are
produced: every record Kafka holds is in the log exactly once, with the content that was produced; undecodable
ones are dead-lettered instead; no incomplete write or temporary file is left once it stopped cleanly."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import pyarrow.dataset as pads
import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from recsys.common import kafka as rk
from recsys.eventlog import layout
from recsys.eventlog.layout import EVENTS, IMPRESSIONS
from recsys.v1 import events_pb2

pytestmark = pytest.mark.integration

KILLS = 5
KINDS = (events_pb2.EVENT_TYPE_CLICK, events_pb2.EVENT_TYPE_VIEW, events_pb2.EVENT_TYPE_PURCHASE)


class Writer:
    """`python -m recsys.eventlog` on its own topics, group and log folder; killed and stopped by PID."""

    def __init__(self, tmp: Path, bootstrap: str, topics: dict[str, str]) -> None:
        self.uri = str(tmp / "log")
        self.log_path = tmp / "writer.log"
        self.env = {
            **os.environ,
            "RECSYS_KAFKA_BOOTSTRAP": bootstrap,
            "RECSYS_KAFKA_EVENTS_TOPIC": topics["events"],
            "RECSYS_KAFKA_IMPRESSIONS_TOPIC": topics["impressions"],
            "RECSYS_KAFKA_DLQ_TOPIC": topics["dlq"],
            "RECSYS_EVENTLOG_URI": self.uri,
            "RECSYS_EVENTLOG_GROUP": f"eventlog-{topics['events']}",
            "RECSYS_EVENTLOG_INSTANCE_ID": "writer-1",  # a restart takes the partitions back at once
            "RECSYS_EVENTLOG_FLUSH_ROWS": "3000",
            "RECSYS_EVENTLOG_FLUSH_S": "0.3",
            "RECSYS_EVENTLOG_RETENTION_DAYS": "0",
            "RECSYS_METRICS_PORT": "0",
        }
        self.proc: subprocess.Popen | None = None
        self.kills = 0
        self._recovered_before = 0

    def start(self) -> None:
        self._recovered_before = self.recoveries()
        with self.log_path.open("a") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "recsys.eventlog"], env=self.env, stdout=log,
                                         stderr=log)

    def kill(self) -> None:
        """SIGKILL: no chance to finish a write or commit anything."""
        assert self.proc is not None and self.proc.poll() is None, f"the writer died:\n{self.log_tail()}"
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.kills += 1

    def kill_mid_flush(self, timeout_s: float = 5.0) -> None:
        """SIGKILL as soon as a new log file appears: the writer is in the middle of a flush, with some
        partitions' writes durable, others not yet started, and no offset committed."""
        before = self.files()
        deadline = time.monotonic() + timeout_s
        while self.files() == before and time.monotonic() < deadline:
            time.sleep(0.005)
        self.kill()

    def files(self) -> int:
        return sum(1 for _ in Path(self.uri).rglob("*.parquet"))

    def stop(self) -> int:
        """SIGTERM, and SIGKILL only when it has not exited within a minute; returns its exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)  # ignored by a process that already exited
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout=30)

    def wait_recovered(self, timeout_s: float = 60) -> None:
        """Wait until the running writer owns its partitions (a start logs one recovery once assigned)."""
        deadline = time.monotonic() + timeout_s
        while self.recoveries() <= self._recovered_before:
            assert self.proc is not None and self.proc.poll() is None, f"the writer died:\n{self.log_tail()}"
            assert time.monotonic() < deadline, f"no partition assigned:\n{self.log_tail()}"
            time.sleep(0.2)

    def recoveries(self) -> int:
        if not self.log_path.exists():
            return 0
        return self.log_path.read_text(errors="replace").count('"msg": "partitions recovered"')

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


def produce(bootstrap: str, topics: dict[str, str], seconds: float, seed: int = 7) -> dict[str, int]:
    """Impressions (0-6 items), clicks / views / purchases and a few undecodable records, paced over `seconds`."""
    rng = random.Random(seed)
    producer = rk.make_producer(bootstrap)
    counts = Counter()
    now = int(time.time() * 1000)
    deadline = time.monotonic() + seconds
    try:
        for step in range(60):
            for n in range(300):
                i = step * 300 + n
                ts = now - rng.randrange(3 * 3_600_000)  # three hours of event time: writes split by hour
                if i % 4 == 0:
                    items = [events_pb2.ImpressionItem(item_id=f"i{rng.randrange(500)}", position=k,
                                                       score=rng.random(), source="ann")
                             for k in range(rng.randrange(7))]
                    rk.publish(producer, topics["impressions"], events_pb2.Impression(
                        event_id=f"imp-{i}", request_id=f"req-{i}", user_id=f"u{i % 211}", variant="control",
                        model="lightgbm", model_version="v3", timestamp_ms=ts, items=items))
                    counts["impressions"] += 1
                else:
                    rk.publish(producer, topics["events"], events_pb2.Event(
                        event_id=f"ev-{i}", type=KINDS[i % 3], user_id=f"u{i % 211}", item_id=f"i{i % 500}",
                        request_id=f"req-{i - i % 4}", position=i % 10, timestamp_ms=ts, value=float(i % 5)))
                    counts["events"] += 1
                if i % 1000 == 999:
                    producer.send(topics["events"], key=b"bad", value=b"\xff\xfe not a protobuf")
                    counts["undecodable"] += 1
            producer.flush(timeout=60)
            time.sleep(max(0.0, (deadline - time.monotonic()) / (60 - step)))
    finally:
        producer.close(timeout=10)
    return dict(counts)


def kafka_records(bootstrap: str, topics: list[str]) -> dict[tuple[str, int, int], ConsumerRecord]:
    """Every record of `topics`, by (topic, partition, offset)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t))]
        consumer.assign(partitions)
        consumer.seek_to_beginning()
        ends = consumer.end_offsets(partitions)
        out: dict[tuple[str, int, int], ConsumerRecord] = {}
        deadline = time.monotonic() + 60
        while any(consumer.position(tp) < ends[tp] for tp in partitions) and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                for r in records:
                    out[(r.topic, r.partition, r.offset)] = r
        assert sum(ends.values()) == len(out), "read every record Kafka holds"
        return out
    finally:
        consumer.close()


def logged(uri: str, table: str) -> list[dict]:
    return layout.read_table(uri, table).to_pylist()


def test_killing_the_writer_under_load_loses_and_duplicates_nothing(kafka_bootstrap, tmp_path: Path):
    suffix = uuid.uuid4().hex[:8]
    topics = {kind: f"eventlog-{kind}-{suffix}" for kind in ("events", "impressions", "dlq")}
    rk.ensure_topics(list(topics.values()), kafka_bootstrap, partitions=3)
    writer = Writer(tmp_path, kafka_bootstrap, topics)
    produced: dict[str, int] = {}
    producing = threading.Thread(target=lambda: produced.update(produce(kafka_bootstrap, topics, seconds=20)))
    rng = random.Random(11)
    writer.start()
    producing.start()
    try:
        while writer.kills < KILLS or producing.is_alive():  # at least KILLS kills, all of them under load
            time.sleep(rng.uniform(1.0, 3.0))
            if writer.kills % 2:  # at a random moment (starting, polling, writing, committing)
                writer.kill()
            else:  # within a flush: files written but not committed, and files not written yet
                writer.kill_mid_flush()
            writer.start()
            assert writer.kills <= 3 * KILLS, "the producer never finished"
        producing.join(timeout=60)
        writer.wait_recovered()

        held = {key: r.value for key, r in kafka_records(kafka_bootstrap, [topics["events"],
                                                                           topics["impressions"]]).items()}
        undecodable = {key for key, value in held.items() if value == b"\xff\xfe not a protobuf"}
        expected = set(held) - undecodable
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            in_log = {(r["topic"], r["partition"], r["offset"]) for t in (EVENTS, IMPRESSIONS)
                      for r in layout.read_table(writer.uri, t).select(["topic", "partition", "offset"]).to_pylist()}
            if expected <= in_log:
                break
            time.sleep(1)
    finally:
        code = writer.stop()
    assert code == 0, writer.log_tail()
    assert writer.kills >= KILLS
    assert len(held) == sum(produced.values())

    events = logged(writer.uri, EVENTS)
    impressions = logged(writer.uri, IMPRESSIONS)
    event_keys = Counter((r["topic"], r["partition"], r["offset"]) for r in events)
    impression_rows = Counter((r["topic"], r["partition"], r["offset"]) for r in impressions)
    in_log = set(event_keys) | set(impression_rows)
    assert expected - in_log == set(), "lost"
    assert in_log - expected == set(), "records that were never produced, or undecodable ones"
    assert [k for k, n in event_keys.items() if n != 1] == [], "duplicated events"
    for key, rows in impression_rows.items():  # one row per item (one for an empty list), once
        imp = rk.decode(events_pb2.Impression, held[key])
        assert rows == max(1, len(imp.items)), f"{key}: {rows} rows for {len(imp.items)} items"

    # Contents: what was produced, field by field.
    for r in rng.sample(events, 300):
        ev = rk.decode(events_pb2.Event, held[(r["topic"], r["partition"], r["offset"])])
        assert (r["event_id"], r["type"], r["user_id"], r["item_id"], r["request_id"], r["position"],
                r["timestamp_ms"], r["value"]) == (ev.event_id, events_pb2.EventType.Name(ev.type)[11:].lower(),
                                                   ev.user_id, ev.item_id, ev.request_id, ev.position,
                                                   ev.timestamp_ms, ev.value)
    for r in rng.sample([r for r in impressions if r["item_id"] is not None], 300):
        imp = rk.decode(events_pb2.Impression, held[(r["topic"], r["partition"], r["offset"])])
        item = imp.items[r["position"]]
        assert (r["event_id"], r["request_id"], r["user_id"], r["model_version"], r["timestamp_ms"], r["item_id"],
                r["source"]) == (imp.event_id, imp.request_id, imp.user_id, imp.model_version, imp.timestamp_ms,
                                 item.item_id, item.source)
        assert r["score"] == pytest.approx(item.score)

    # The files: every write complete, nothing temporary left, every row in the folder of its event hour.
    fs, root = layout.open_root(writer.uri)
    for table in (EVENTS, IMPRESSIONS):
        files = layout.list_files(fs, root, table)
        done, partial = layout.complete(files)
        assert partial == [] and len(done) == len(files) > 0
        hive = pads.dataset(f"{writer.uri}/{table}", format="parquet", partitioning=layout.PARTITIONING)
        placed = hive.to_table(columns=["timestamp_ms", "date", "hour"]).to_pylist()
        assert len(placed) == (len(events) if table == EVENTS else len(impressions))
        assert all(layout.hour_of(r["timestamp_ms"]) == (r["date"], r["hour"]) for r in placed)
    assert not list(Path(writer.uri).rglob(".*.tmp"))

    # Undecodable records went to the dead-letter topic (at least once: a kill may repeat a dead letter).
    assert len(undecodable) == produced["undecodable"] > 0
    dead = kafka_records(kafka_bootstrap, [topics["dlq"]]).values()
    origins = {(h["dlq.topic"].decode(), int(h["dlq.partition"]), int(h["dlq.offset"]))
               for h in (dict(r.headers) for r in dead)}
    assert origins == undecodable
    assert writer.recoveries() >= 2, "restarts resumed from the log"
