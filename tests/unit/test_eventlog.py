"""The event log without Kafka: batches become parts named per the layout, readable by the layout's reader and by
pyarrow's hive-partitioned datasets; incomplete writes are invisible and cleaned up; retention by age; URIs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from kafka.consumer.fetcher import ConsumerRecord

from recsys import cli
from recsys.common.config import ConfigError
from recsys.common.kafka.codec import UndecodableMessage, encode
from recsys.eventlog import layout, retention, sink
from recsys.eventlog.batch import PartitionBatch, split_by_hour
from recsys.eventlog.layout import EVENTS, IMPRESSIONS, ITEMS, FileName
from recsys.eventlog.settings import EventLogSettings
from recsys.eventlog.stats import table_stats
from recsys.v1 import events_pb2

HOUR_MS = 3_600_000
T0 = 1_700_000_000_000 - 1_700_000_000_000 % HOUR_MS  # the start of an hour (2023-11-14 22:00 UTC)


def record(topic: str, partition: int, offset: int, value: bytes | None) -> ConsumerRecord:
    return ConsumerRecord(topic, partition, 0, offset, 0, 0, None, value, [], None, 0, len(value or b""), 0)


def impression(i: int, ts: int, items: int = 3) -> events_pb2.Impression:
    return events_pb2.Impression(
        event_id=f"imp-{i}", request_id=f"req-{i}", user_id=f"u{i}", variant="control", model="lightgbm",
        model_version="v1", timestamp_ms=ts, degraded=i % 2 == 0,
        items=[events_pb2.ImpressionItem(item_id=f"i{i}-{k}", position=k, score=0.5 + k, source="ann")
               for k in range(items)],
    )


def event(i: int, ts: int, kind: int = events_pb2.EVENT_TYPE_CLICK) -> events_pb2.Event:
    return events_pb2.Event(event_id=f"ev-{i}", type=kind, user_id=f"u{i}", item_id=f"i{i}", request_id=f"req-{i}",
                            position=i % 10, model="lightgbm", variant="control", timestamp_ms=ts, value=i / 2)


def batch_of(topic: str, partition: int, table: str, messages: list, first: int = 0) -> PartitionBatch:
    batch = PartitionBatch(topic, partition, table)
    for offset, message in enumerate(messages, start=first):
        batch.add(record(topic, partition, offset, encode(message)))
    return batch


def write(root: str, batch: PartitionBatch, fs: pafs.FileSystem | None = None) -> list[sink.Part]:
    fs_, path = layout.open_root(root)
    return sink.write(fs or fs_, path, batch.table_name, batch.topic, batch.partition, batch.first, batch.last,
                      batch.to_table())


def test_impressions_are_flattened_split_by_hour_and_named_per_layout(tmp_path: Path):
    messages = [impression(0, T0 + 10), impression(1, T0 + HOUR_MS + 5, items=2), impression(2, T0 + 20, items=0)]
    batch = batch_of("imps", 1, IMPRESSIONS, messages, first=40)
    assert (batch.first, batch.last, batch.records, batch.rows) == (40, 42, 3, 3 + 2 + 1)

    parts = write(str(tmp_path), batch)

    names = [FileName.parse(Path(p.path).name) for p in parts]
    assert names == [FileName("imps", 1, 40, 42, 1, 2), FileName("imps", 1, 40, 42, 2, 2)]
    assert [Path(p.path).parent.relative_to(tmp_path).as_posix() for p in parts] == [
        "impressions/date=2023-11-14/hour=22", "impressions/date=2023-11-14/hour=23"]
    assert [p.rows for p in parts] == [4, 2] and all(p.bytes == os.path.getsize(p.path) for p in parts)
    assert not [n for n in os.listdir(Path(parts[0].path).parent) if n.startswith(".")], "no temporary file left"

    rows = layout.read_table(str(tmp_path), IMPRESSIONS).sort_by([("offset", "ascending"), ("position", "ascending")])
    assert rows.schema == layout.SCHEMAS[IMPRESSIONS]
    assert rows.column("offset").to_pylist() == [40, 40, 40, 41, 41, 42]
    assert rows.column("item_id").to_pylist() == ["i0-0", "i0-1", "i0-2", "i1-0", "i1-1", None]
    assert rows.column("request_id").to_pylist() == ["req-0"] * 3 + ["req-1"] * 2 + ["req-2"]
    assert rows.column("degraded").to_pylist() == [True] * 3 + [False] * 2 + [True]
    assert set(rows.column("topic").to_pylist()) == {"imps"} and set(rows.column("partition").to_pylist()) == {1}
    assert rows.column("score").to_pylist()[:3] == [0.5, 1.5, 2.5]

    hive = pads.dataset(str(tmp_path / IMPRESSIONS), format="parquet", partitioning=layout.PARTITIONING).to_table()
    by_hour = {(r["date"], r["hour"], r["offset"]) for r in hive.select(["date", "hour", "offset"]).to_pylist()}
    assert by_hour == {("2023-11-14", "22", 40), ("2023-11-14", "23", 41), ("2023-11-14", "22", 42)}


def test_events_keep_every_field_and_name_their_type(tmp_path: Path):
    kinds = [events_pb2.EVENT_TYPE_CLICK, events_pb2.EVENT_TYPE_PURCHASE, events_pb2.EVENT_TYPE_RATING,
             events_pb2.EVENT_TYPE_VIEW]
    batch = batch_of("evs", 0, EVENTS, [event(i, T0 + i, kinds[i % 4]) for i in range(8)])
    write(str(tmp_path), batch)
    rows = layout.read_table(str(tmp_path), EVENTS).sort_by("offset").to_pylist()
    assert [r["type"] for r in rows[:4]] == ["click", "purchase", "rating", "view"]
    assert rows[3] | {} == {"event_id": "ev-3", "type": "view", "user_id": "u3", "item_id": "i3", "request_id": "req-3",
                            "position": 3, "model": "lightgbm", "variant": "control", "timestamp_ms": T0 + 3,
                            "value": 1.5, "topic": "evs", "partition": 0, "offset": 3}
    assert layout.read_table(str(tmp_path), EVENTS, since_ms=T0 + 2, until_ms=T0 + 4).column("offset").to_pylist() \
        == [2, 3]


def test_an_undecodable_record_is_covered_but_adds_no_row():
    batch = batch_of("evs", 0, EVENTS, [event(0, T0)])
    with pytest.raises(UndecodableMessage):
        batch.add(record("evs", 0, 1, b"\xff\xff not a protobuf"))
    batch.add(record("evs", 0, 2, encode(event(2, T0))))
    assert (batch.first, batch.last, batch.records, batch.rows) == (0, 2, 3, 2)
    assert batch.to_table().column("offset").to_pylist() == [0, 2]
    with pytest.raises(ValueError, match="offset 2 after 2"):
        batch.add(record("evs", 0, 2, encode(event(2, T0))))


def test_a_batch_without_rows_writes_nothing(tmp_path: Path):
    batch = PartitionBatch("evs", 0, EVENTS)
    with pytest.raises(UndecodableMessage):
        batch.add(record("evs", 0, 5, None))
    assert write(str(tmp_path), batch) == [] and split_by_hour(batch.to_table()) == []
    assert layout.read_table(str(tmp_path), EVENTS).num_rows == 0


def _break(parts: list[sink.Part], keep: int) -> None:
    """What a writer killed mid-write leaves: the first `keep` parts, and a temporary file."""
    for part in parts[keep:]:
        os.remove(part.path)
    folder = Path(parts[-1].path).parent
    folder.mkdir(parents=True, exist_ok=True)
    (folder / sink.temp_name(Path(parts[-1].path).name)).write_bytes(b"half a parquet file")


def test_incomplete_writes_are_invisible_and_recovery_deletes_only_the_assigned_ones(tmp_path: Path):
    root = str(tmp_path)
    write(root, batch_of("evs", 0, EVENTS, [event(i, T0 + i) for i in range(10)]))  # complete: 0..9
    torn = write(root, batch_of("evs", 0, EVENTS, [event(i, T0 + i * HOUR_MS) for i in range(10, 13)], first=10))
    assert len(torn) == 3
    _break(torn, keep=1)  # killed after part 1 of 3 of offsets 10..12
    other = write(root, batch_of("evs", 1, EVENTS, [event(i, T0 + i * HOUR_MS) for i in range(2)]))
    _break(other, keep=1)  # partition 1: not assigned below, left alone

    assert layout.read_table(root, EVENTS).column("offset").to_pylist() == list(range(10))
    fs, path = layout.open_root(root)
    resume = sink.recover(fs, path, EVENTS, {("evs", 0)})
    assert resume == {("evs", 0): 10}
    left = {f.name for f in layout.list_files(fs, path, EVENTS)}
    assert {(n.partition, n.first, n.last) for n in left} == {(0, 0, 9), (1, 0, 1)}
    temps = [p for p in tmp_path.rglob(".*.tmp")]
    assert [sink.parse_temp(p.name).partition for p in temps] == [1], "partition 0's temporary file is gone"

    assert sink.recover(fs, path, EVENTS, {("evs", 1)}) == {}
    assert not list(tmp_path.rglob(".*.tmp"))
    assert layout.read_table(root, EVENTS).num_rows == 10


def test_temporary_names_are_never_log_files():
    name = str(FileName("recsys.events", 2, 100, 199, 1, 3))
    temp = sink.temp_name(name)
    assert temp.startswith(".") and FileName.parse(temp) is None
    assert sink.parse_temp(temp) == FileName("recsys.events", 2, 100, 199, 1, 3)
    assert sink.parse_temp(name) is None and sink.parse_temp(".other.tmp") is None


def test_retention_deletes_only_expired_hours(tmp_path: Path):
    root = str(tmp_path)
    now = T0 + 40 * 24 * HOUR_MS
    old, recent = T0, now - 2 * HOUR_MS
    write(root, batch_of("evs", 0, EVENTS, [event(0, old), event(1, old + 1)]))  # 0..1: all expired
    write(root, batch_of("evs", 0, EVENTS, [event(2, old + 5), event(3, recent)], first=2))  # 2..3: mixed
    write(root, batch_of("evs", 0, EVENTS, [event(4, now + 1)], first=4))  # 4: the current hour
    write(root, batch_of("imps", 0, IMPRESSIONS, [impression(0, old - HOUR_MS)]))  # another day, expired

    report = retention.expire(root, days=30, now_ms=now)

    assert (report.files, report.writes, report.kept_for_newer_parts) == (2, 2, 1)
    assert layout.read_table(root, EVENTS).column("offset").to_pylist() == [2, 3, 4]
    assert layout.read_table(root, IMPRESSIONS).num_rows == 0
    assert not (tmp_path / IMPRESSIONS / "date=2023-11-14").exists(), "empty hour and date folders removed"
    assert (tmp_path / EVENTS / "date=2023-11-14" / "hour=22").is_dir(), "the mixed write's part stays"
    assert retention.expire(root, days=30, now_ms=now).files == 0
    assert retention.expire(root, days=30, now_ms=now + 30 * 24 * HOUR_MS).files == 2  # the mixed write, whole
    assert layout.read_table(root, EVENTS).column("offset").to_pylist() == [4]


def test_file_uris_and_object_store_writes_go_through_pyarrow_filesystems(tmp_path: Path):
    uri = (tmp_path / "log").as_uri()
    assert uri.startswith("file://")
    write(uri, batch_of("evs", 0, EVENTS, [event(i, T0 + i) for i in range(3)]))
    # a filesystem that is not the local one takes the object-store path (one stream to the final name)
    store = pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem())
    parts = sink.write(store, "log", EVENTS, "evs", 0, 3, 4, batch_of("evs", 0, EVENTS, [event(3, T0), event(4, T0)],
                                                                     first=3).to_table())
    assert [p.path for p in parts] == ["log/events/date=2023-11-14/hour=22/evs+0+3-4+1of1.parquet"]
    assert pq.read_table(tmp_path / parts[0].path).num_rows == 2
    assert layout.read_table(uri, EVENTS).column("offset").to_pylist() == [0, 1, 2, 3, 4]
    stats = {t.table: t for t in table_stats(uri)}
    assert (stats[EVENTS].rows, stats[EVENTS].writes, stats[EVENTS].complete_files) == (5, 2, 2)
    assert stats[EVENTS].newest_hour == "2023-11-14 22:00" and stats[IMPRESSIONS].rows == 0


def test_settings_default_to_the_var_dir_and_refuse_one_topic_for_both(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("RECSYS_VAR_DIR", str(tmp_path))
    for name in ("RECSYS_EVENTLOG_URI", "RECSYS_KAFKA_EVENTS_TOPIC", "RECSYS_KAFKA_IMPRESSIONS_TOPIC",
                 "RECSYS_KAFKA_ITEMS_TOPIC"):
        monkeypatch.delenv(name, raising=False)
    settings = EventLogSettings.from_env()
    assert settings.uri == str(tmp_path / "eventlog") and settings.group == "recsys-eventlog"
    assert settings.tables == {"recsys.impressions": IMPRESSIONS, "recsys.events": EVENTS, "recsys.items": ITEMS}
    monkeypatch.setenv("RECSYS_KAFKA_IMPRESSIONS_TOPIC", "recsys.events")
    with pytest.raises(ConfigError, match="must differ"):
        EventLogSettings.from_env()
    monkeypatch.delenv("RECSYS_KAFKA_IMPRESSIONS_TOPIC")
    monkeypatch.setenv("RECSYS_EVENTLOG_FLUSH_S", "0")
    with pytest.raises(ConfigError, match="RECSYS_EVENTLOG_FLUSH_S"):
        EventLogSettings.from_env()


def test_cli_stats_and_retention(monkeypatch, tmp_path: Path, capsys):
    monkeypatch.setenv("RECSYS_EVENTLOG_URI", str(tmp_path))
    write(str(tmp_path), batch_of("evs", 0, EVENTS, [event(0, T0)]))
    assert cli.main(["eventlog", "stats", "--json"]) == 0
    tables = {t["table"]: t for t in json.loads(capsys.readouterr().out)["tables"]}
    assert tables[EVENTS]["rows"] == 1 and tables[EVENTS]["incomplete_files"] == 0
    assert cli.main(["eventlog", "retention", "--days", "1"]) == 0
    assert "deleted 1 files (1 writes)" in capsys.readouterr().out
    assert cli.main(["eventlog", "retention", "--days", "0"]) == 2
    args = cli.build_parser().parse_args(["eventlog", "run"])
    assert callable(args.func)


def test_rows_are_arrow_tables_in_the_layout_schema():
    table = batch_of("imps", 0, IMPRESSIONS, [impression(0, T0)]).to_table()
    assert isinstance(table, pa.Table) and table.schema == layout.SCHEMAS[IMPRESSIONS]
    assert PartitionBatch("imps", 0, IMPRESSIONS).to_table().schema == layout.SCHEMAS[IMPRESSIONS]


class FakeConsumer:
    """The part of KafkaConsumer the writer uses: a scripted poll, committed offsets, seeks and pauses."""

    def __init__(self, committed: dict | None = None) -> None:
        self.listener = None
        self.owned: set = set()
        self.paused_: set = set()
        self.committed_ = dict(committed or {})
        self.seeks: dict = {}
        self.polls: list = []
        self.commits: list = []
        self.fail_commit = False

    def subscribe(self, topics, listener) -> None:
        self.listener = listener

    def assign_(self, partitions) -> None:
        """What a rebalance does inside poll: revoke everything, then assign `partitions`."""
        self.listener.on_partitions_revoked(set(self.owned))
        self.owned = set(partitions)
        self.listener.on_partitions_assigned(set(partitions))

    def poll(self, timeout_ms=0, max_records=None):
        step = self.polls.pop(0) if self.polls else {}
        if callable(step):
            step = step()
        return {tp: records for tp, records in step.items() if tp not in self.paused_}

    def assignment(self):
        return set(self.owned)

    def pause(self, *partitions) -> None:
        self.paused_.update(partitions)

    def resume(self, *partitions) -> None:
        self.paused_.difference_update(partitions)

    def committed(self, tp):
        return self.committed_.get(tp)

    def seek(self, tp, offset) -> None:
        self.seeks[tp] = offset

    def commit(self, offsets) -> None:
        if self.fail_commit:
            from kafka.errors import CommitFailedError

            raise CommitFailedError("rebalanced")
        self.commits.append({tp: o.offset for tp, o in offsets.items()})
        self.committed_.update({tp: o.offset for tp, o in offsets.items()})

    def highwater(self, tp):
        return None

    def close(self, autocommit=True) -> None:
        pass


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list = []

    def send(self, topic, key=None, value=None, headers=None):
        self.sent.append((topic, value, dict(headers or [])))
        producer = self

        class Future:
            def get(self, timeout=None):
                producer.acked = len(producer.sent)

        return Future()

    def close(self, timeout=None) -> None:
        pass


def _writer(tmp_path: Path, consumer: FakeConsumer, producer: FakeProducer | None = None, **overrides):
    from recsys.eventlog.writer import EventLogWriter

    fields = dict(uri=str(tmp_path), group="g", instance_id="", bootstrap="unused", events_topic="evs",
                  impressions_topic="imps", dlq_topic="dlq", flush_rows=1000, flush_s=60.0, retention_days=0)
    fields.update(overrides)
    return EventLogWriter(EventLogSettings(**fields), consumer=consumer, producer=producer or FakeProducer())


def test_a_new_partition_resumes_after_its_log_or_its_commit_whichever_is_further(tmp_path: Path):
    from kafka import TopicPartition

    root = str(tmp_path)
    write(root, batch_of("evs", 0, EVENTS, [event(i, T0) for i in range(10)]))  # complete 0..9
    torn = write(root, batch_of("evs", 0, EVENTS, [event(i, T0 + (i - 10) * HOUR_MS) for i in range(10, 12)],
                                first=10))
    _break(torn, keep=1)
    write(root, batch_of("imps", 0, IMPRESSIONS, [impression(0, T0)]))  # complete 0..0
    evs, imps = TopicPartition("evs", 0), TopicPartition("imps", 0)
    consumer = FakeConsumer(committed={evs: 4, imps: 7})  # crashed after writing 0..9, before committing it
    writer = _writer(tmp_path, consumer)
    consumer.polls = [lambda: consumer.assign_([evs, imps]) or {evs: [record("evs", 0, 4, encode(event(4, T0)))]}]

    assert writer.run_once() == 0, "records fetched before the seek are not taken"
    assert consumer.seeks == {evs: 10, imps: 7} and consumer.paused_ == set()
    fs, path = layout.open_root(root)
    assert [f.name.first for f in layout.list_files(fs, path, EVENTS)] == [0], "the torn write is gone"
    assert not list(tmp_path.rglob(".*.tmp"))


def test_a_flush_writes_each_partition_then_commits_after_its_last_record(tmp_path: Path):
    from kafka import TopicPartition

    evs, imps = TopicPartition("evs", 1), TopicPartition("imps", 2)
    consumer, producer = FakeConsumer(), FakeProducer()
    writer = _writer(tmp_path, consumer, producer, flush_rows=7)
    consumer.polls = [
        lambda: consumer.assign_([evs, imps]) or {},
        {evs: [record("evs", 1, 20, encode(event(0, T0))), record("evs", 1, 21, b"\xff garbage")],
         imps: [record("imps", 2, 5, encode(impression(0, T0, items=3)))]},
        {evs: [record("evs", 1, 22, None)], imps: [record("imps", 2, 6, encode(impression(1, T0, items=3)))]},
    ]
    writer.run_once()
    writer.run_once()
    assert consumer.commits == [] and [tp.partition for tp in writer.batches] == [1, 2], "4 rows < 7: buffered"
    writer.run_once()

    assert consumer.commits == [{evs: 23, imps: 7}], "past the dead letters at 21 and 22"
    assert [(t, h["dlq.offset"]) for t, _, h in producer.sent] == [("dlq", b"21"), ("dlq", b"22")]
    assert producer.acked == 2 and writer.dead_lettered == 2 and writer.batches == {}
    fs, root = layout.open_root(str(tmp_path))
    names = sorted(f.name for t in (EVENTS, IMPRESSIONS) for f in layout.list_files(fs, root, t))
    assert names == [FileName("evs", 1, 20, 22, 1, 1), FileName("imps", 2, 5, 6, 1, 1)]
    assert (writer.records, writer.rows, writer.writes) == (5, 7, 2)


def test_a_revoked_partition_drops_its_batch_and_a_failed_commit_is_survived(tmp_path: Path):
    from kafka import TopicPartition

    evs = TopicPartition("evs", 0)
    consumer = FakeConsumer()
    writer = _writer(tmp_path, consumer)
    consumer.polls = [lambda: consumer.assign_([evs]) or {},
                      {evs: [record("evs", 0, 0, encode(event(0, T0)))]},
                      lambda: consumer.assign_([]) or {}]
    writer.run_once()
    writer.run_once()
    assert writer.batches[evs].records == 1
    writer.run_once()
    assert writer.batches == {}, "the next owner consumes it again"
    writer.flush()
    assert consumer.commits == [] and layout.read_table(str(tmp_path), EVENTS).num_rows == 0

    consumer.polls = [lambda: consumer.assign_([evs]) or {}, {evs: [record("evs", 0, 0, encode(event(0, T0)))]}]
    writer.run_once()
    writer.run_once()
    consumer.fail_commit = True
    writer.stop()
    writer.run()  # stops at once, writing what it holds; the commit fails, the files say where to resume
    assert layout.read_table(str(tmp_path), EVENTS).column("offset").to_pylist() == [0]
    assert consumer.commits == []


def test_item_changes_become_rows_of_the_items_table_which_retention_keeps():
    from recsys.eventlog.batch import PartitionBatch
    from recsys.eventlog.layout import KEPT_FOREVER
    from recsys.v1 import catalog_pb2

    batch = PartitionBatch("items", 0, ITEMS)
    up = catalog_pb2.ItemChange(change_id="c1", timestamp_ms=5, upsert=catalog_pb2.Item(
        item_id="i1", title="T", genres=["drama"], attributes={"year": "1999"}))
    gone = catalog_pb2.ItemChange(change_id="c2", timestamp_ms=6, delete_item_id="i2")
    for offset, change in enumerate((up, gone)):
        batch.add(record("items", 0, offset, change.SerializeToString()))
    rows = batch.to_table().to_pylist()
    assert [(r["op"], r["item_id"], r["available"]) for r in rows] == [("upsert", "i1", True), ("delete", "i2", False)]
    assert rows[0]["genres"] == ["drama"] and rows[0]["attributes"] == [("year", "1999")] and rows[1]["offset"] == 1
    assert ITEMS in KEPT_FOREVER
