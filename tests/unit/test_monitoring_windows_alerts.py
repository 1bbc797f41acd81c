"""Drift windows, CTR drift, window frames, the alert sink and the CLI registration, without a broker."""

from __future__ import annotations

import argparse
import math
import socket
import time

import numpy as np
import pandas as pd
import pytest

from recsys.monitoring.aggregates import BatchDelta, bucket_of
from recsys.monitoring.alerts import AlertSink
from recsys.monitoring.drift import SCORE, DriftWorker, Reference, ctr_drift, window_frame
from recsys.monitoring.store import DriftBatch, MonitoringStore
from recsys.monitoring.windows import WindowTracker
from recsys.v1 import events_pb2


def pred(request_id: str, rows: int, ts: int = 1_000, names=("a", "b")) -> events_pb2.PredictionLog:
    return events_pb2.PredictionLog(
        request_id=request_id,
        timestamp_ms=ts,
        feature_names=list(names),
        features=[float(i) for i in range(rows * len(names))],
        scores=[0.5] * rows,
    )


def _add(tracker: WindowTracker, store: MonitoringStore, msgs: list, now_ms: int) -> list[int]:
    batch = DriftBatch()
    for m in msgs:
        tracker.add(m, m.request_id, m.SerializeToString(), batch, now_ms)
    closed = tracker.flush(batch, now_ms)
    store.commit_batch(BatchDelta(), {}, batch, None)
    return closed


def test_windows_close_by_count_and_by_time_and_resume_after_restart(tmp_path):
    store = MonitoringStore(tmp_path / "m.sqlite")
    tracker = WindowTracker(store, max_rows=100, max_age_s=60, min_rows=10)
    assert _add(tracker, store, [pred(f"r{i}", 10) for i in range(6)], now_ms=0) == []
    # A new process resumes the open window with its 60 rows.
    tracker = WindowTracker(store, max_rows=100, max_age_s=60, min_rows=10)
    assert (tracker.window_id, tracker.rows) == (1, 60)
    assert _add(tracker, store, [pred(f"s{i}", 10) for i in range(5)], now_ms=1_000) == [1]  # full at 100
    assert store.drift_windows("closed")[0][5] == 100 and len(store.drift_rows(1)) == 10
    assert (tracker.window_id, tracker.rows) == (2, 10)  # the 11th message opened window 2
    assert _add(tracker, store, [], now_ms=30_000) == []
    assert _add(tracker, store, [], now_ms=62_000) == [2]  # a minute after its first row
    assert [w[0] for w in store.drift_windows("closed")] == [1, 2]
    assert _add(tracker, store, [], now_ms=200_000) == []  # an empty window never closes
    store.close()


def test_ctr_drift_is_a_two_sided_z_test():
    drifted, p = ctr_drift(clicks=100, impressions=1000, reference_ctr=0.1, alpha=0.001)
    assert not drifted and p == pytest.approx(1.0)
    drifted, p = ctr_drift(clicks=150, impressions=1000, reference_ctr=0.1, alpha=0.001)
    z = 0.05 / math.sqrt(0.09 / 1000)
    assert drifted and p == pytest.approx(math.erfc(z / math.sqrt(2)))
    assert ctr_drift(50, 1000, None, 0.001) == (False, pytest.approx(math.nan, nan_ok=True))
    assert ctr_drift(0, 0, 0.1, 0.001)[0] is False


def test_ctr_drift_over_time_against_the_window_history(tmp_path):
    store = MonitoringStore(tmp_path / "m.sqlite")
    worker = DriftWorker(store, None, AlertSink(store), bucket_s=60, ctr_alpha=0.001)
    t0 = 1_700_000_000_000  # long ago: every bucket is mature
    delta = BatchDelta()
    delta.cell(bucket_of(t0, 60), "control", 0)[:2] = [1000, 100]  # CTR 0.10
    delta.cell(bucket_of(t0 + 600_000, 60), "control", 0)[:2] = [1000, 300]  # CTR 0.30
    windows = [(1, 0, 0, t0, t0 + 1000, 10, "closed"), (2, 0, 0, t0 + 600_000, t0 + 601_000, 10, "closed")]
    batch = DriftBatch(windows=windows)
    store.commit_batch(delta, {}, batch, None)
    first, second = worker.process_closed()
    assert (first.ctr, first.impressions, first.ctr_drift) == (0.1, 1000, False)  # no history yet
    assert (second.ctr, second.ctr_drift) == (0.3, True) and second.ctr_p < 1e-6
    assert [(a.kind, a.report_id) for a in store.alerts()] == [("ctr_drift", "drift-000002")]
    assert store.drift_windows("closed") == []
    assert [r.report_id for r in store.reports()] == ["drift-000001", "drift-000002"]
    store.close()


def test_window_frame_and_reference():
    frame = window_frame([pred("r1", 2).SerializeToString(), pred("r2", 3, names=("a", "c")).SerializeToString()])
    assert len(frame) == 5 and set(frame.columns) == {"a", "b", "c", SCORE}
    assert frame["a"].tolist() == [0.0, 2.0, 0.0, 2.0, 4.0]
    ref = Reference.from_frame(pd.DataFrame({"a": np.arange(50.0), "label": [0, 1] * 25, "name": ["x"] * 50}), 20)
    assert len(ref.frame) == 20 and ref.features == ["a"] and ref.ctr == pytest.approx(0.5)


def test_alerts_are_stored_and_a_hanging_webhook_never_blocks(tmp_path):
    store = MonitoringStore(tmp_path / "m.sqlite")
    with socket.socket() as hanging:  # accepts connections (backlog) and never answers
        hanging.bind(("127.0.0.1", 0))
        hanging.listen(16)
        sink = AlertSink(store, f"http://127.0.0.1:{hanging.getsockname()[1]}/hook", timeout_s=0.3)
        started = time.perf_counter()
        for i in range(5):
            sink.fire("data_drift", f"column drift {i}", "drift-000001")
        assert time.perf_counter() - started < 0.5
        sink.close(timeout_s=5)
    alerts = store.alerts()
    assert [a.message for a in alerts] == [f"column drift {i}" for i in reversed(range(5))]
    assert store.alerts(limit=2)[0].kind == "data_drift" and len(store.alerts(limit=2)) == 2
    store.close()


def test_cli_registers_monitoring_serve():
    from recsys.monitoring import commands

    parser = argparse.ArgumentParser()
    commands.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["monitoring", "serve", "--port", "0"])
    assert args.port == 0 and callable(args.func)
