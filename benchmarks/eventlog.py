"""Event log benchmark: write throughput while the writer is killed, exactly-once against Kafka, `dataset build`.

1. Starts a private Kafka broker (deploy/local/kafka.sh via recsys.stack.broker, free loopback ports, temporary
   state; stopped at the end) unless --bootstrap is given, and makes fresh topics (3 partitions each).
2. Produces --events Kafka records (default 1,000,000), in a thread: 20% served lists of 10 items (10 impression
   rows each), 80% clicks / views / purchases, over 6 hours of event time, so writes split by hour now and then.
3. Once half is produced (a backlog, so the writer runs at full speed rather than at the producer's pace) runs
   the writer as its own process (`python -m recsys.eventlog`, default flush thresholds) while the rest is
   produced, and SIGKILLs it --kills times (at least 5) during the run, every other time just after a new file
   appeared (mid-flush: some partitions written, none committed), restarting it each time, until its log holds
   every record Kafka holds. `events_per_s` = records / the wall time from the writer's first start, restarts
   included.
4. Counts against Kafka: every offset of every partition (beginning..end offsets) must be in the log once, an
   impression with one row per item: `lost` = records missing (or with rows missing), `duplicated` = records
   with more rows than they have items.
5. Baselines on the same topics, with nothing else running: the writer again without kills (fresh group and
   folder), and Kafka's own consumer performance tool (org.apache.kafka.tools.ConsumerPerformance; its jar is
   resolved with Maven next to the broker's when missing), and our ratio to it.
6. Times `recsys dataset build --log <log> --base <a generated 20k-interaction dataset> --out <tmp>`; where that
   command does not exist, reading both tables with layout.read_table instead (the lines say which).

Prints figures, then one JSON object on the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pyarrow.dataset as pads
from kafka_perf import consumer_perf

from recsys.common import children
from recsys.eventlog import layout

REPO = Path(__file__).resolve().parents[1]
ITEMS_PER_LIST = 10
EVENT_HOURS = 6
BAD_VALUE = b"\xff\xfe not a protobuf"


class Writer:
    """The log writer process; killed, restarted and stopped by its PID."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.kills = 0

    def start(self) -> None:
        with self.log_path.open("a") as log:
            self.proc = children.spawn([sys.executable, "-m", "recsys.eventlog"], env=self.env, stdout=log,
                                         stderr=log)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if not self.alive():
            raise RuntimeError(f"the writer died:\n{self.log_path.read_text()[-3000:]}")
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.kills += 1

    def stop(self) -> int:
        """SIGTERM (the writer writes what it holds), SIGKILL after two minutes; returns the exit code."""
        if self.proc is None:
            return -1
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout=30)


def writer_env(bootstrap: str, topics: dict[str, str], uri: str, group: str) -> dict[str, str]:
    return {
        **os.environ,
        "RECSYS_KAFKA_BOOTSTRAP": bootstrap,
        "RECSYS_KAFKA_EVENTS_TOPIC": topics["events"],
        "RECSYS_KAFKA_IMPRESSIONS_TOPIC": topics["impressions"],
        "RECSYS_KAFKA_DLQ_TOPIC": topics["dlq"],
        "RECSYS_EVENTLOG_URI": uri,
        "RECSYS_EVENTLOG_GROUP": group,
        "RECSYS_EVENTLOG_INSTANCE_ID": "bench-writer",
        "RECSYS_EVENTLOG_RETENTION_DAYS": "0",
        "RECSYS_METRICS_PORT": "0",
    }


def produce(bootstrap: str, topics: dict[str, str], n_records: int, out: dict, halfway: threading.Event,
            seed: int = 0) -> None:
    """Produce `n_records` records in event-time order over EVENT_HOURS hours, setting `halfway` after half of
    them; fills `out` with the counts."""
    from kafka import KafkaProducer

    from recsys.v1 import events_pb2

    rng = random.Random(seed)
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=20, batch_size=1024 * 1024,
                             metrics_enabled=False)
    started = time.perf_counter()
    start_ms = int(time.time() * 1000) - EVENT_HOURS * 3_600_000
    step_ms = EVENT_HOURS * 3_600_000 / n_records
    kinds = (events_pb2.EVENT_TYPE_CLICK, events_pb2.EVENT_TYPE_VIEW, events_pb2.EVENT_TYPE_VIEW,
             events_pb2.EVENT_TYPE_PURCHASE)
    counts = {"impressions": 0, "events": 0}
    for i in range(n_records):
        if i == n_records // 2:
            producer.flush(timeout=120)
            halfway.set()
        ts = start_ms + int(i * step_ms) - rng.randrange(60_000)
        user = f"u{rng.randrange(100_000)}"
        if i % 5 == 0:
            items = [events_pb2.ImpressionItem(item_id=f"i{rng.randrange(50_000)}", position=k, score=rng.random(),
                                               source="ann") for k in range(ITEMS_PER_LIST)]
            value = events_pb2.Impression(event_id=f"imp-{i}", request_id=f"req-{i}", user_id=user,
                                          variant="control", model="lightgbm", model_version="v7", timestamp_ms=ts,
                                          items=items).SerializeToString()
            producer.send(topics["impressions"], key=user.encode(), value=value)
            counts["impressions"] += 1
        else:
            value = events_pb2.Event(event_id=f"ev-{i}", type=kinds[i % 4], user_id=user,
                                     item_id=f"i{rng.randrange(50_000)}", request_id=f"req-{i - i % 5}",
                                     position=rng.randrange(ITEMS_PER_LIST), model="lightgbm", variant="control",
                                     timestamp_ms=ts, value=1.0).SerializeToString()
            producer.send(topics["events"], key=user.encode(), value=value)
            counts["events"] += 1
    producer.flush(timeout=120)
    producer.close(timeout=30)
    out.update(counts, seconds=time.perf_counter() - started)


def kafka_offsets(bootstrap: str, topics: list[str]) -> dict[tuple[str, int], tuple[int, int]]:
    """(beginning, end) offsets of every partition of `topics`: what Kafka holds."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        parts = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t))]
        begin, end = consumer.beginning_offsets(parts), consumer.end_offsets(parts)
        return {(tp.topic, tp.partition): (begin[tp], end[tp]) for tp in parts}
    finally:
        consumer.close()


def caught_up(uri: str, held: dict[tuple[str, int], tuple[int, int]]) -> bool:
    """True when the log's complete writes reach Kafka's end offset on every partition."""
    fs, root = layout.open_root(uri)
    reached = {}
    for table in layout.TABLES:
        reached.update(layout.next_offsets(layout.list_files(fs, root, table)))
    return all(reached.get(key, begin) >= end for key, (begin, end) in held.items())


def run_with_kills(writer: Writer, bootstrap: str, topics: dict[str, str], args, uri: str) -> dict:
    """Produce; from halfway on, run the writer (a backlog: it works at full speed, the producer still going)
    and kill it; returns timings once the log holds everything."""
    produced: dict = {}
    halfway = threading.Event()
    producing = threading.Thread(target=produce, args=(bootstrap, topics, args.events, produced, halfway),
                                 daemon=True)
    rng = random.Random(args.seed)
    producing.start()
    while not halfway.wait(timeout=1.0):
        if not producing.is_alive():
            raise SystemExit("the producer failed (see its traceback above)")
    started = time.perf_counter()
    writer.start()
    next_kill = time.monotonic() + rng.uniform(args.kill_every_s / 2, args.kill_every_s * 1.5)
    deadline = time.monotonic() + args.timeout_s
    held = None
    while time.monotonic() < deadline:
        time.sleep(0.25)
        if writer.kills < args.kills and time.monotonic() >= next_kill:
            kill(writer, mid_flush=writer.kills % 2 == 1, uri=uri)
            writer.start()
            next_kill = time.monotonic() + rng.uniform(args.kill_every_s / 2, args.kill_every_s * 1.5)
            print(f"  kill {writer.kills} at {time.perf_counter() - started:.1f} s", flush=True)
        if producing.is_alive():
            continue
        if not produced:
            raise SystemExit("the producer failed (see its traceback above)")
        held = held or kafka_offsets(bootstrap, [topics["events"], topics["impressions"]])
        if writer.kills >= args.kills and caught_up(uri, held):
            break
    else:
        raise SystemExit(f"the log did not catch up within {args.timeout_s} s")
    elapsed = time.perf_counter() - started
    return {"elapsed_s": elapsed, "produced": produced, "held": held}


def kill(writer: Writer, mid_flush: bool, uri: str, timeout_s: float = 10.0) -> None:
    """SIGKILL now, or (mid_flush) as soon as a new log file appears."""
    if mid_flush:
        before = count_files(uri)
        deadline = time.monotonic() + timeout_s
        while count_files(uri) == before and time.monotonic() < deadline:
            time.sleep(0.005)
    writer.kill()


def count_files(uri: str) -> int:
    return sum(1 for _ in Path(uri).rglob("*.parquet"))


def count_against_kafka(uri: str, held: dict[tuple[str, int], tuple[int, int]], topics: dict[str, str]) -> dict:
    """Lost and duplicated records of the log at `uri` against every offset Kafka holds."""
    fs, root = layout.open_root(uri)
    lost = duplicated = unexpected = rows = files = 0
    for table, topic, per_record in ((layout.EVENTS, topics["events"], 1),
                                     (layout.IMPRESSIONS, topics["impressions"], ITEMS_PER_LIST)):
        done, partial = layout.complete(layout.list_files(fs, root, table))
        files += len(done)
        data = pads.dataset([f.path for f in done], format="parquet", filesystem=fs).to_table(
            columns=["topic", "partition", "offset"]) if done else None
        rows += data.num_rows if data is not None else 0
        for (t, partition), (begin, end) in held.items():
            if t != topic:
                continue
            offsets = _offsets_of(data, topic, partition)
            present, per_offset = np.unique(offsets, return_counts=True)
            inside = (present >= begin) & (present < end)
            lost += (end - begin) - int(np.count_nonzero(inside & (per_offset >= per_record)))
            duplicated += int(np.count_nonzero(per_offset > per_record))
            unexpected += int(np.count_nonzero(~inside))  # offsets Kafka does not hold
    return {"lost": lost, "duplicated": duplicated, "unexpected": unexpected, "rows": rows, "files": files}


def _offsets_of(data, topic: str, partition: int) -> np.ndarray:
    if data is None:
        return np.empty(0, dtype=np.int64)
    import pyarrow.compute as pc

    mask = pc.and_(pc.equal(data["topic"], topic), pc.equal(data["partition"], partition))
    return data.filter(mask)["offset"].to_numpy()


def clean_run(bootstrap: str, topics: dict[str, str], work: Path, held: dict, timeout_s: float) -> float:
    """The writer alone, no kills, draining the same topics into a fresh folder; records per second."""
    uri = str(work / "log-clean")
    writer = Writer(writer_env(bootstrap, topics, uri, f"bench-clean-{uuid.uuid4().hex[:6]}"), work / "clean.log")
    started = time.perf_counter()
    writer.start()
    deadline = time.monotonic() + timeout_s
    while not caught_up(uri, held) and time.monotonic() < deadline:
        time.sleep(0.25)
    elapsed = time.perf_counter() - started
    writer.stop()
    return sum(end - begin for begin, end in held.values()) / elapsed


def dataset_build(uri: str, work: Path) -> tuple[float, str]:
    """Seconds of `recsys dataset build` on the log (or of reading both tables where it does not exist)."""
    cli = [sys.executable, "-m", "recsys.cli"]
    probe = subprocess.run([*cli, "dataset", "build", "--help"], capture_output=True, text=True, timeout=120)
    if probe.returncode != 0:
        started = time.perf_counter()
        rows = sum(layout.read_table(uri, table).num_rows for table in layout.TABLES)
        return time.perf_counter() - started, f"NOTE: no `recsys dataset build` here; timed layout.read_table " \
                                              f"of both tables ({rows} rows) instead"
    base = work / "base"
    subprocess.run([*cli, "data", "generate", "--out", str(base), "--interactions", "20000"], check=True,
                   capture_output=True, timeout=600)
    started = time.perf_counter()
    done = subprocess.run([*cli, "dataset", "build", "--log", uri, "--base", str(base), "--out",
                           str(work / "built"), "--quiet"], capture_output=True, text=True, timeout=1800)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"recsys dataset build failed:\n{done.stderr[-3000:]}")
    return seconds, f"recsys dataset build: {done.stdout.strip().splitlines()[-1]}"


def run(bootstrap: str, args, work: Path) -> dict:
    from recsys.common.kafka import admin

    suffix = uuid.uuid4().hex[:8]
    topics = {kind: f"bench.eventlog.{kind}.{suffix}" for kind in ("events", "impressions", "dlq")}
    admin.ensure_topics({topics["events"]: 3, topics["impressions"]: 3, topics["dlq"]: 1}, bootstrap)
    uri = str(work / "log")
    writer = Writer(writer_env(bootstrap, topics, uri, f"bench-{suffix}"), work / "writer.log")
    print(f"producing {args.events} records while the writer runs; {args.kills} kills", flush=True)
    result = run_with_kills(writer, bootstrap, topics, args, uri)
    code = writer.stop()
    if code != 0:
        raise SystemExit(f"the writer exited {code} on SIGTERM:\n{(work / 'writer.log').read_text()[-3000:]}")
    produced, held = result["produced"], result["held"]
    records = sum(end - begin for begin, end in held.values())
    events_per_s = records / result["elapsed_s"]
    print(f"produced {records} records ({produced['impressions']} served lists of {ITEMS_PER_LIST}, "
          f"{produced['events']} events) in {produced['seconds']:.1f} s "
          f"({records / produced['seconds']:.0f}/s); logged all of them in {result['elapsed_s']:.1f} s with "
          f"{writer.kills} kills from the writer's first start: {events_per_s:.0f} records/s", flush=True)
    counted = count_against_kafka(uri, held, topics)
    print(f"against Kafka: lost {counted['lost']}, duplicated {counted['duplicated']}, not in Kafka "
          f"{counted['unexpected']}; {counted['rows']} rows in "
          f"{counted['files']} files", flush=True)

    clean = clean_run(bootstrap, topics, work, held, args.timeout_s)
    found = consumer_perf(bootstrap, [topics["events"], topics["impressions"]], records)
    perf, perf_note = found["records_per_s"], found["note"]
    ratio = clean / perf if perf else None
    print(f"without kills, nothing else running: {clean:.0f} records/s; Kafka's consumer perf tool: "
          f"{perf if perf is None else round(perf)} records/s ({perf_note}); ratio "
          f"{'n/a' if ratio is None else f'{ratio:.3f}'}", flush=True)

    build_s, build_note = dataset_build(uri, work)
    print(f"dataset build: {build_s:.1f} s ({build_note})", flush=True)
    return {
        "events": records,
        "events_per_s": round(events_per_s, 1),
        "lost": counted["lost"],
        "duplicated": counted["duplicated"],
        "unexpected": counted["unexpected"],
        "kills": writer.kills,
        "dataset_build_s": round(build_s, 2),
        "dataset_build": "recsys dataset build" if build_note.startswith("recsys") else "layout.read_table",
        "rows": counted["rows"],
        "files": counted["files"],
        "produce_s": round(produced["seconds"], 1),
        "log_s": round(result["elapsed_s"], 1),
        "events_per_s_no_kills": round(clean, 1),
        "kafka_perf_events_per_s": None if perf is None else round(perf, 1),
        "ratio_to_kafka_perf": None if ratio is None else round(ratio, 4),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="Kafka records to produce and log")
    parser.add_argument("--kills", type=int, default=6, help="SIGKILLs of the writer during the run (>= 5)")
    parser.add_argument("--kill-every-s", type=float, default=5.0, help="mean seconds between kills")
    parser.add_argument("--timeout-s", type=float, default=1800.0, help="give up when the log is not caught up")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bootstrap", default="", help="use this broker instead of starting one")
    args = parser.parse_args()
    if args.kills < 5:
        parser.error("--kills must be at least 5")
    with tempfile.TemporaryDirectory(prefix="bench-eventlog-") as tmp:
        work = Path(tmp)
        if args.bootstrap:
            result = run(args.bootstrap, args, work)
        else:
            from recsys.stack.broker import local_broker

            with local_broker(work / "kafka") as broker:
                result = run(broker.bootstrap, args, work)
    result["load_average_1m"] = round(os.getloadavg()[0], 2)  # other work on the same 2 cores skews wall time
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
