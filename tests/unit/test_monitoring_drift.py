"""Drift verdicts (Evidently's per-column tests) and the HTML reports drawn after them, without a broker."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.monitoring.aggregates import BatchDelta
from recsys.monitoring.alerts import AlertSink
from recsys.monitoring.drift import SCORE, WINDOW_SUFFIX, DriftDetector, DriftWorker, Reference
from recsys.monitoring.store import DriftBatch, MonitoringStore
from recsys.v1 import events_pb2

FEATURES = ["age", "clicked_before", "price"]


def rows(rng: np.random.Generator, n: int, shift: bool = False) -> pd.DataFrame:
    """`age` (shifted when asked), a binary column (Evidently tests it with Jensen-Shannon), `price`, `score`."""
    return pd.DataFrame(
        {
            "age": rng.normal(35 + (15 if shift else 0), 10, n),
            "clicked_before": (rng.random(n) < 0.5).astype(float),
            "price": rng.gamma(2.0, 10.0, n),
            SCORE: rng.beta(2, 5, n),
        }
    )


def test_verdict_equals_evidently_value_drift():
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    rng = np.random.default_rng(3)
    reference = rows(rng, 5000)
    current = rows(rng, 2000, shift=True)
    current.loc[0, "price"] = np.inf  # non-finite values are dropped, as Evidently does
    result, compared = DriftDetector(Reference.from_frame(reference)).run(current)

    definition = DataDefinition(numerical_columns=[*FEATURES, SCORE])
    snapshot = Report([ValueDrift(column=c) for c in [*FEATURES, SCORE]], include_tests=True).run(
        reference_data=Dataset.from_pandas(reference, data_definition=definition),
        current_data=Dataset.from_pandas(current, data_definition=definition),
    )
    summary = snapshot.dict()
    expected = {m["config"]["column"]: (m["value"], m["config"]["method"]) for m in summary["metrics"]}
    failed = {t["metric_config"]["params"]["column"] for t in summary["tests"] if str(t["status"]).endswith("FAIL")}
    assert [c["column"] for c in result.columns] == FEATURES
    for column in result.columns:
        assert (column["score"], column["method"]) == (
            pytest.approx(expected[column["column"]][0]),
            expected[column["column"]][1],
        )
    assert {c["column"] for c in result.columns if c["drifted"]} == failed == {"age"}
    assert result.drifted_share == pytest.approx(1 / 3) and not result.dataset_drift
    assert not result.prediction_drift and result.prediction_score == pytest.approx(expected[SCORE][0])
    assert list(compared.columns) == [*FEATURES, SCORE] and len(compared) == 2000


def _closed_window(store: MonitoringStore, rng: np.random.Generator, window_id: int, shift: bool) -> tuple:
    frame = rows(rng, 400, shift)
    batch = DriftBatch()
    for i in range(0, len(frame), 10):
        chunk = frame.iloc[i : i + 10]
        pred = events_pb2.PredictionLog(
            request_id=f"w{window_id}-{i}",
            timestamp_ms=1_000,
            feature_names=FEATURES,
            features=chunk[FEATURES].to_numpy().ravel().tolist(),
            scores=chunk[SCORE].tolist(),
        )
        batch.rows.append((window_id, pred.request_id, 1_000, pred.SerializeToString()))
    window = (window_id, 0, 0, 1_000, 1_000, len(frame), "closed")
    batch.windows.append(window)
    store.commit_batch(BatchDelta(), {}, batch, None)
    return window


def test_html_reports_are_drawn_after_the_verdicts(tmp_path):
    rng = np.random.default_rng(5)
    store = MonitoringStore(tmp_path / "m.sqlite")
    reports = tmp_path / "reports"
    detector = DriftDetector(Reference.from_frame(rows(rng, 3000)))
    worker = DriftWorker(store, detector, AlertSink(store), bucket_s=60, reports_dir=reports)
    _closed_window(store, rng, 1, shift=False)
    _closed_window(store, rng, 2, shift=True)
    first, second = worker.process_closed()
    # Verdicts and alerts are stored at once; the HTML is still to be drawn.
    assert [c["column"] for c in second.columns if c["drifted"]] == ["age"]
    assert [(a.kind, a.report_id) for a in store.alerts()] == [("data_drift", "drift-000002")]
    assert store.report("drift-000001").report_path == "" and store.drift_windows("closed") == []
    assert sorted(p.name for p in reports.iterdir()) == [f"drift-00000{i}{WINDOW_SUFFIX}" for i in (1, 2)]

    assert worker.render_pending(should_yield=lambda: True) == []  # a verdict waiting comes first
    assert worker.render_pending() == ["drift-000001", "drift-000002"]
    for report_id in ("drift-000001", "drift-000002"):
        path = Path(store.report(report_id).report_path)
        assert path == reports / f"{report_id}.html" and "age" in path.read_text()
    assert sorted(p.name for p in reports.iterdir()) == ["drift-000001.html", "drift-000002.html"]
    assert worker.render_pending() == []
    store.close()


@pytest.mark.parametrize("with_score", [True, False])
def test_warm_up_runs_the_verdict_on_the_reference_itself(with_score, monkeypatch):
    import recsys.monitoring.drift as drift

    reference = rows(np.random.default_rng(5), 3000)
    if not with_score:
        reference = reference.drop(columns=[SCORE])
    tested = []
    real = drift.column_drift
    monkeypatch.setattr(drift, "column_drift", lambda name, ref, cur: tested.append(name) or real(name, ref, cur))
    DriftDetector(Reference.from_frame(reference)).warm_up(rows=200)
    assert tested == FEATURES + ([SCORE] if with_score else [])  # every column's test ran once


def test_html_warm_up_draws_a_report_and_leaves_nothing_behind(tmp_path):
    drawn = []
    detector = DriftDetector(Reference.from_frame(rows(np.random.default_rng(6), 2000)))
    real = detector.render_html

    def render_and_measure(window, path, scores=None):
        real(window, path, scores)
        drawn.append(path.stat().st_size)  # written before warm_up deletes it

    detector.render_html = render_and_measure
    detector.warm_up(rows=100, html_dir=tmp_path)
    assert drawn and drawn[0] > 10_000  # a real Evidently page was written
    assert list(tmp_path.iterdir()) == []
