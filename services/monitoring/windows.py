"""Drift windows: sampled served rows (PredictionLog messages) gathered by count or by time.

The open window's rows are persisted with every batch (so a restart resumes it exactly); a window closes
when it holds `max_rows` served rows, or when `max_age_s` passed since its first row and it holds at least
`min_rows`. A closed window waits in the store until the drift worker reports on it.
"""

from __future__ import annotations

from recsys.monitoring.store import DriftBatch, MonitoringStore, WindowRow
from recsys.v1 import events_pb2


class WindowTracker:
    """The open drift window; owned by the consumer thread."""

    def __init__(self, store: MonitoringStore, max_rows: int, max_age_s: float, min_rows: int) -> None:
        self.max_rows = max_rows
        self.max_age_ms = int(max_age_s * 1000)
        self.min_rows = min_rows
        open_windows = store.drift_windows("open")
        if open_windows:
            window_id, opened, _closed, start, end, rows, _status = open_windows[-1]
            self._set(window_id, opened, start, end, rows)
        else:
            self._set(store.last_window_id() + 1, 0, 0, 0, 0)
        self.dirty = False
        self.closed: list[int] = []

    def _set(self, window_id: int, opened_ms: int, start_ms: int, end_ms: int, rows: int) -> None:
        self.window_id = window_id
        self.opened_ms = opened_ms  # wall clock of the first row (0 = empty)
        self.start_ms = start_ms  # event-time span of its rows
        self.end_ms = end_ms
        self.rows = rows

    def add(self, pred: events_pb2.PredictionLog, key: str, payload: bytes, batch: DriftBatch, now_ms: int) -> None:
        """Add one (de-duplicated) PredictionLog to the open window; closes the window when full."""
        ts = pred.timestamp_ms or now_ms
        if self.rows == 0:
            self.opened_ms, self.start_ms, self.end_ms = now_ms, ts, ts
        self.start_ms = min(self.start_ms, ts)
        self.end_ms = max(self.end_ms, ts)
        self.rows += len(pred.scores)
        batch.rows.append((self.window_id, key, ts, payload))
        self.dirty = True
        if self.rows >= self.max_rows:  # full: close now, the next row opens the next window
            self._close(batch, now_ms)

    def row(self, status: str = "open", closed_ms: int = 0) -> WindowRow:
        return (self.window_id, self.opened_ms, closed_ms, self.start_ms, self.end_ms, self.rows, status)

    def _close(self, batch: DriftBatch, now_ms: int) -> None:
        batch.windows.append(self.row("closed", now_ms))
        self.closed.append(self.window_id)
        self._set(self.window_id + 1, 0, 0, 0, 0)
        self.dirty = True

    def flush(self, batch: DriftBatch, now_ms: int) -> list[int]:
        """Close the window when its time is up, add the open window's row to `batch`, and return the ids
        of the windows this batch closed."""
        if self.rows >= max(self.min_rows, 1) and now_ms - self.opened_ms >= self.max_age_ms:
            self._close(batch, now_ms)
        if self.dirty:
            batch.windows.append(self.row())
            self.dirty = False
        closed, self.closed = self.closed, []
        return closed
