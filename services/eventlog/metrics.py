"""The log writer's Prometheus metrics (served on RECSYS_METRICS_PORT by `recsys eventlog run`)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECORDS = Counter("recsys_eventlog_records_total", "Kafka records written to the log (or dead-lettered)", ["topic"])
ROWS = Counter("recsys_eventlog_rows_total", "Rows written", ["table"])
WRITES = Counter("recsys_eventlog_writes_total", "Writes: one batch of one topic partition, all parts durable",
                 ["table"])
FILES = Counter("recsys_eventlog_files_total", "Parquet files (parts) written", ["table"])
BYTES = Counter("recsys_eventlog_bytes_total", "Parquet bytes written", ["table"])
DEAD_LETTERS = Counter("recsys_eventlog_dead_letters_total", "Undecodable records sent to the dead-letter topic",
                       ["topic"])
FLUSH_SECONDS = Histogram(
    "recsys_eventlog_flush_seconds",
    "Time to write every buffered partition durably and commit the offsets",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
COMMIT_SECONDS = Histogram(
    "recsys_eventlog_commit_seconds",
    "Synchronous offset commit after the files are durable",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
LAG = Gauge("recsys_eventlog_lag_records", "Records in Kafka after the last write (high watermark - next offset)",
            ["topic", "partition"])
EXPIRED_FILES = Counter("recsys_eventlog_expired_files_total", "Files deleted by retention")
