"""SQLite persistence of the monitoring state.

One transaction per consumed batch holds everything the batch changed (metric increments, join state,
seen event ids, drift-window rows) together with the Kafka offsets it reached, so the state and the
position in the topics never disagree: on restart the consumer seeks to the offsets stored here.
Drift reports, their history and alerts live here too. WAL mode: the gRPC threads read while the
consumer writes; one writer connection behind a lock, one reader connection per thread.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from recsys.monitoring.aggregates import BatchDelta, encode_request_log
from recsys.monitoring.coverage import union_count

SCHEMA = """
CREATE TABLE IF NOT EXISTS offsets(
  topic TEXT, partition INTEGER, next_offset INTEGER, PRIMARY KEY(topic, partition)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS seen(key TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS request_log(batch INTEGER PRIMARY KEY, seq_max INTEGER, entries BLOB);
CREATE TABLE IF NOT EXISTS clicked(seq INTEGER, item_id TEXT, PRIMARY KEY(seq, item_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pending(key TEXT PRIMARY KEY, request_id TEXT, ts_ms INTEGER, event BLOB) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS cells(
  bucket INTEGER, variant TEXT, position INTEGER,
  impressions INTEGER NOT NULL DEFAULT 0, clicks INTEGER NOT NULL DEFAULT 0,
  purchases INTEGER NOT NULL DEFAULT 0, revenue REAL NOT NULL DEFAULT 0,
  PRIMARY KEY(bucket, variant, position)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS items(idx INTEGER PRIMARY KEY, item_id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS coverage(
  bucket INTEGER, variant TEXT, bitmap BLOB, PRIMARY KEY(bucket, variant)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS score_bins(
  bucket INTEGER, variant TEXT, bin INTEGER, n INTEGER NOT NULL, PRIMARY KEY(bucket, variant, bin)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS variants(variant TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS counters(name TEXT PRIMARY KEY, value REAL NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS drift_windows(
  window_id INTEGER PRIMARY KEY, opened_ms INTEGER, closed_ms INTEGER, start_ms INTEGER, end_ms INTEGER,
  rows INTEGER, status TEXT);
CREATE TABLE IF NOT EXISTS drift_rows(
  window_id INTEGER, key TEXT, ts_ms INTEGER, payload BLOB, PRIMARY KEY(window_id, key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS drift_reports(
  report_id TEXT PRIMARY KEY, window_id INTEGER UNIQUE, created_ms INTEGER, window_start_ms INTEGER,
  window_end_ms INTEGER, rows INTEGER, dataset_drift INTEGER, drifted_share REAL, prediction_drift INTEGER,
  prediction_score REAL, ctr REAL, impressions INTEGER, ctr_drift INTEGER, ctr_p REAL, report_path TEXT,
  columns TEXT);
CREATE TABLE IF NOT EXISTS alerts(
  alert_id TEXT PRIMARY KEY, created_ms INTEGER, kind TEXT, message TEXT, report_id TEXT);
CREATE INDEX IF NOT EXISTS alerts_by_time ON alerts(created_ms);
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value BLOB);
"""

# A drift_windows row: (window_id, opened_ms, closed_ms, start_ms, end_ms, rows, status).
WindowRow = tuple[int, int, int, int, int, int, str]


@dataclass
class DriftBatch:
    """Drift-window changes of one batch: new rows and the window rows to upsert."""

    rows: list[tuple[int, str, int, bytes]] = field(default_factory=list)  # window_id, key, ts_ms, payload
    windows: list[WindowRow] = field(default_factory=list)


@dataclass
class Prune:
    """Old state to drop with a batch (0 = nothing)."""

    seen_before_key: str = ""
    requests_before_seq: int = 0
    buckets_before: int = 0


@dataclass
class DriftReportRecord:
    """One stored drift report (what GetDriftReport returns)."""

    report_id: str
    window_id: int
    created_ms: int
    window_start_ms: int
    window_end_ms: int
    rows: int
    dataset_drift: bool
    drifted_share: float
    prediction_drift: bool
    prediction_score: float
    ctr: float
    impressions: int
    ctr_drift: bool
    ctr_p: float
    report_path: str
    columns: list[dict]  # {column, score, method, drifted}

    def as_row(self) -> tuple:
        return (
            self.report_id,
            self.window_id,
            self.created_ms,
            self.window_start_ms,
            self.window_end_ms,
            self.rows,
            int(self.dataset_drift),
            self.drifted_share,
            int(self.prediction_drift),
            self.prediction_score,
            self.ctr,
            self.impressions,
            int(self.ctr_drift),
            self.ctr_p,
            self.report_path,
            json.dumps(self.columns),
        )

    @classmethod
    def from_row(cls, row: tuple) -> DriftReportRecord:
        values = list(row)
        for i in (6, 8, 12):
            values[i] = bool(values[i])
        values[15] = json.loads(values[15])
        return cls(*values)


@dataclass
class AlertRecord:
    alert_id: str
    created_ms: int
    kind: str
    message: str
    report_id: str


_REPORT_COLUMNS = (
    "report_id, window_id, created_ms, window_start_ms, window_end_ms, rows, dataset_drift, drifted_share, "
    "prediction_drift, prediction_score, ctr, impressions, ctr_drift, ctr_p, report_path, columns"
)


class MonitoringStore:
    """The service's SQLite database."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._local = threading.local()
        self._writer = self._connect()
        self._writer.executescript(SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across process crashes
        conn.execute("PRAGMA cache_size=-65536")  # 64 MiB: the seen-keys index stays in memory
        return conn

    def _reader(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        return conn

    def close(self) -> None:
        with self._lock:
            self._writer.close()

    # -- the consumer's batch transaction ----------------------------------------------------------

    def commit_batch(
        self,
        delta: BatchDelta,
        offsets: dict[tuple[str, int], int],
        drift: DriftBatch | None = None,
        prune: Prune | None = None,
    ) -> None:
        """Apply one batch atomically: increments, join state, seen ids, drift rows and offsets."""
        with self._lock:
            c = self._writer
            c.execute("BEGIN IMMEDIATE")
            try:
                self._apply(c, delta, offsets, drift, prune)
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise

    @staticmethod
    def _apply(c: sqlite3.Connection, delta: BatchDelta, offsets, drift, prune) -> None:
        if delta.seen:
            c.executemany("INSERT OR IGNORE INTO seen(key) VALUES (?)", ((k,) for k in delta.seen))
        if delta.requests:
            seq_max = max(seq for seq, _ in delta.requests)
            c.execute(
                "INSERT INTO request_log(seq_max, entries) VALUES (?, ?)", (seq_max, encode_request_log(delta.requests))
            )
        if delta.clicked:
            c.executemany("INSERT OR IGNORE INTO clicked VALUES (?, ?)", delta.clicked)
        if delta.pending_add:
            c.executemany("INSERT OR IGNORE INTO pending VALUES (?, ?, ?, ?)", delta.pending_add)
        if delta.pending_del:
            c.executemany("DELETE FROM pending WHERE key = ?", ((k,) for k in delta.pending_del))
        if delta.cells:
            c.executemany(
                "INSERT INTO cells VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(bucket, variant, position) DO UPDATE SET "
                "impressions = impressions + excluded.impressions, clicks = clicks + excluded.clicks, "
                "purchases = purchases + excluded.purchases, revenue = revenue + excluded.revenue",
                ((*key, *row) for key, row in delta.cells.items()),
            )
        if delta.cells:
            c.executemany("INSERT OR IGNORE INTO variants VALUES (?)", ((v,) for v in {k[1] for k in delta.cells}))
        if delta.new_items:
            c.executemany("INSERT OR IGNORE INTO items VALUES (?, ?)", delta.new_items)
        if delta.coverage_rows:
            c.executemany("INSERT OR REPLACE INTO coverage VALUES (?, ?, ?)", delta.coverage_rows)
        if delta.score_bins:
            c.executemany(
                "INSERT INTO score_bins VALUES (?, ?, ?, ?) ON CONFLICT(bucket, variant, bin) "
                "DO UPDATE SET n = n + excluded.n",
                ((*key, n) for key, n in delta.score_bins.items()),
            )
        if delta.counters:
            c.executemany(
                "INSERT INTO counters VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                delta.counters.items(),
            )
        if drift is not None:
            if drift.rows:
                c.executemany("INSERT OR IGNORE INTO drift_rows VALUES (?, ?, ?, ?)", drift.rows)
            if drift.windows:
                c.executemany("INSERT OR REPLACE INTO drift_windows VALUES (?, ?, ?, ?, ?, ?, ?)", drift.windows)
        if offsets:
            c.executemany(
                "INSERT OR REPLACE INTO offsets VALUES (?, ?, ?)",
                ((topic, partition, offset) for (topic, partition), offset in offsets.items()),
            )
        if prune is not None:
            if prune.seen_before_key:
                c.execute("DELETE FROM seen WHERE key < ?", (prune.seen_before_key,))
            if prune.requests_before_seq:
                c.execute("DELETE FROM request_log WHERE seq_max < ?", (prune.requests_before_seq,))
                c.execute("DELETE FROM clicked WHERE seq < ?", (prune.requests_before_seq,))
            if prune.buckets_before:
                for table in ("cells", "coverage", "score_bins"):
                    c.execute(f"DELETE FROM {table} WHERE bucket < ?", (prune.buckets_before,))

    # -- consumer start-up and de-duplication ------------------------------------------------------

    def offsets(self) -> dict[tuple[str, int], int]:
        """The next offset to read per (topic, partition), as of the last committed batch."""
        rows = self._reader().execute("SELECT topic, partition, next_offset FROM offsets").fetchall()
        return {(topic, partition): offset for topic, partition, offset in rows}

    def already_seen(self, keys: Iterable[str]) -> set[str]:
        """Which of `keys` earlier batches already processed."""
        keys = list(keys)
        if not keys:
            return set()
        rows = (
            self._reader()
            .execute("SELECT key FROM seen WHERE key IN (SELECT value FROM json_each(?))", (json.dumps(keys),))
            .fetchall()
        )
        return {row[0] for row in rows}

    def join_state(self) -> tuple[list[bytes], list[tuple[int, str]], list[tuple]]:
        """The stored request log blobs (in order), clicked items and pending events, for restore."""
        r = self._reader()
        log = [row[0] for row in r.execute("SELECT entries FROM request_log ORDER BY batch").fetchall()]
        clicked = r.execute("SELECT seq, item_id FROM clicked").fetchall()
        pending = r.execute("SELECT key, request_id, ts_ms, event FROM pending ORDER BY ts_ms").fetchall()
        return log, clicked, pending

    def known_items(self) -> list[tuple[int, str]]:
        """(index, item_id) of every item ever served (the coverage bitmaps' index)."""
        return self._reader().execute("SELECT idx, item_id FROM items").fetchall()

    def coverage_bitmap(self, cell: tuple[int, str]) -> bytes | None:
        row = self._reader().execute("SELECT bitmap FROM coverage WHERE bucket = ? AND variant = ?", cell).fetchone()
        return row[0] if row else None

    def counters(self) -> dict[str, float]:
        return dict(self._reader().execute("SELECT name, value FROM counters").fetchall())

    # -- online metrics queries --------------------------------------------------------------------

    def window_cells(self, min_bucket: int) -> list[tuple[str, int, int, int, int, float]]:
        """(variant, position, impressions, clicks, purchases, revenue) summed over buckets >= min_bucket."""
        return (
            self._reader()
            .execute(
                "SELECT variant, position, SUM(impressions), SUM(clicks), SUM(purchases), SUM(revenue) FROM cells "
                "WHERE bucket >= ? GROUP BY variant, position",
                (min_bucket,),
            )
            .fetchall()
        )

    def bucket_totals(self, min_bucket: int, max_bucket: int) -> tuple[int, int]:
        """(impressions, clicks) over buckets in [min_bucket, max_bucket]."""
        row = (
            self._reader()
            .execute(
                "SELECT COALESCE(SUM(impressions), 0), COALESCE(SUM(clicks), 0) FROM cells "
                "WHERE bucket BETWEEN ? AND ?",
                (min_bucket, max_bucket),
            )
            .fetchone()
        )
        return int(row[0]), int(row[1])

    def variant_totals(self, min_bucket: int, max_bucket: int) -> dict[str, tuple[int, int]]:
        """Per variant: (impressions, clicks) over buckets in [min_bucket, max_bucket]."""
        rows = self._reader().execute(
            "SELECT variant, SUM(impressions), SUM(clicks) FROM cells WHERE bucket BETWEEN ? AND ? GROUP BY variant",
            (min_bucket, max_bucket),
        ).fetchall()
        return {variant: (int(n), int(c)) for variant, n, c in rows}

    def variant_series(self, min_bucket: int) -> list[tuple[int, str, int, int]]:
        """(bucket, variant, impressions, clicks) for every bucket >= min_bucket, oldest first."""
        rows = self._reader().execute(
            "SELECT bucket, variant, SUM(impressions), SUM(clicks) FROM cells WHERE bucket >= ? "
            "GROUP BY bucket, variant ORDER BY bucket", (min_bucket,),
        ).fetchall()
        return [(int(b), v, int(n), int(c)) for b, v, n, c in rows]

    def served_items(self, min_bucket: int, variant: str = "") -> int:
        """Distinct items served in buckets >= min_bucket (by one variant when given)."""
        sql = "SELECT bitmap FROM coverage WHERE bucket >= ?"
        args: tuple = (min_bucket,)
        if variant:
            sql, args = sql + " AND variant = ?", (min_bucket, variant)
        return union_count(row[0] for row in self._reader().execute(sql, args))

    def items_ever_served(self) -> int:
        return int(self._reader().execute("SELECT COUNT(*) FROM items").fetchone()[0])

    def score_histogram(self, min_bucket: int, variant: str = "") -> dict[int, int]:
        sql = "SELECT bin, SUM(n) FROM score_bins WHERE bucket >= ?"
        args: tuple = (min_bucket,)
        if variant:
            sql, args = sql + " AND variant = ?", (min_bucket, variant)
        return dict(self._reader().execute(sql + " GROUP BY bin", args).fetchall())

    def variants(self) -> set[str]:
        return {row[0] for row in self._reader().execute("SELECT variant FROM variants").fetchall()}

    # -- drift windows and reports -----------------------------------------------------------------

    def drift_windows(self, status: str) -> list[WindowRow]:
        return (
            self._reader()
            .execute(
                "SELECT window_id, opened_ms, closed_ms, start_ms, end_ms, rows, status FROM drift_windows "
                "WHERE status = ? ORDER BY window_id",
                (status,),
            )
            .fetchall()
        )

    def last_window_id(self) -> int:
        row = self._reader().execute("SELECT MAX(window_id) FROM drift_windows").fetchone()
        return int(row[0] or 0)

    def drift_rows(self, window_id: int) -> list[tuple[str, bytes]]:
        return (
            self._reader()
            .execute("SELECT key, payload FROM drift_rows WHERE window_id = ? ORDER BY ts_ms, key", (window_id,))
            .fetchall()
        )

    def save_report(self, report: DriftReportRecord) -> bool:
        """Store a window's report, mark the window reported and drop its rows, atomically; False (and
        nothing stored) when the window is not waiting for a report any more."""
        with self._lock:
            c = self._writer
            c.execute("BEGIN IMMEDIATE")
            try:
                marked = c.execute(
                    "UPDATE drift_windows SET status = 'reported' WHERE window_id = ? AND status = 'closed'",
                    (report.window_id,),
                ).rowcount
                if marked:
                    c.execute(
                        f"INSERT OR REPLACE INTO drift_reports({_REPORT_COLUMNS}) VALUES ({','.join('?' * 16)})",
                        report.as_row(),
                    )
                    c.execute("DELETE FROM drift_rows WHERE window_id = ?", (report.window_id,))
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise
        return bool(marked)

    def set_report_path(self, report_id: str, path: str) -> None:
        """Record where a report's HTML was written."""
        with self._lock:
            self._writer.execute("UPDATE drift_reports SET report_path = ? WHERE report_id = ?", (path, report_id))

    def report(self, report_id: str = "") -> DriftReportRecord | None:
        """The report `report_id`, or the latest when empty; None when there is none."""
        r = self._reader()
        if report_id:
            row = r.execute(f"SELECT {_REPORT_COLUMNS} FROM drift_reports WHERE report_id = ?", (report_id,)).fetchone()
        else:
            row = r.execute(f"SELECT {_REPORT_COLUMNS} FROM drift_reports ORDER BY window_id DESC LIMIT 1").fetchone()
        return DriftReportRecord.from_row(row) if row else None

    def reports(self, limit: int = 100) -> list[DriftReportRecord]:
        """The latest `limit` reports, oldest first (the drift history)."""
        rows = (
            self._reader()
            .execute(f"SELECT {_REPORT_COLUMNS} FROM drift_reports ORDER BY window_id DESC LIMIT ?", (limit,))
            .fetchall()
        )
        return [DriftReportRecord.from_row(row) for row in reversed(rows)]

    # -- alerts and metadata -----------------------------------------------------------------------

    def add_alert(self, alert: AlertRecord) -> None:
        with self._lock:
            self._writer.execute(
                "INSERT OR IGNORE INTO alerts VALUES (?, ?, ?, ?, ?)",
                (alert.alert_id, alert.created_ms, alert.kind, alert.message, alert.report_id),
            )

    def alerts(self, limit: int = 100) -> list[AlertRecord]:
        """The latest `limit` alerts, newest first."""
        rows = (
            self._reader()
            .execute(
                "SELECT alert_id, created_ms, kind, message, report_id FROM alerts "
                "ORDER BY created_ms DESC, rowid DESC LIMIT ?",
                (limit,),
            )
            .fetchall()
        )
        return [AlertRecord(*row) for row in rows]

    def alerts_after(self, rowid: int) -> list[tuple[int, str]]:
        """(rowid, kind) of the alerts stored after `rowid`, oldest first."""
        sql = "SELECT rowid, kind FROM alerts WHERE rowid > ? ORDER BY rowid"
        return self._reader().execute(sql, (rowid,)).fetchall()

    def last_alert_rowid(self) -> int:
        return int(self._reader().execute("SELECT COALESCE(MAX(rowid), 0) FROM alerts").fetchone()[0])

    def get_meta(self, key: str) -> bytes | None:
        row = self._reader().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: bytes) -> None:
        with self._lock:
            self._writer.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))


def now_ms() -> int:
    return int(time.time() * 1000)
