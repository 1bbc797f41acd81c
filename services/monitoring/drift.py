"""Drift detection with Evidently (0.7 API) on each closed window of served rows.

Each window of served features and scores (PredictionLog rows) is compared with the reference frame (the
training features): per-column drift scores and decisions, the dataset-level decision (share of drifted
feature columns >= drift_share), prediction drift (the `score` column), and CTR (target) drift of the
window's impressions against the reference CTR. Results go to the store (history), Prometheus gauges
and alerts.

The verdict runs Evidently's per-column drift tests only (the ones `DataDriftPreset` picks), which takes a
fraction of a second; the preset's charts cost several times that, so the window's Evidently HTML report
is drawn afterwards (`render_pending`; in the service by a lower-priority thread of the drift process) from
the compared window kept next to it, and its path is stored with the report once written.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from prometheus_client import Gauge, Histogram

from recsys.monitoring.aggregates import bucket_of
from recsys.monitoring.alerts import AlertSink
from recsys.monitoring.store import DriftReportRecord, MonitoringStore, now_ms
from recsys.v1 import events_pb2

log = logging.getLogger("recsys.monitoring.drift")

SCORE = "score"  # the prediction column
LABEL = "label"  # optional reference target column: its mean is the reference CTR
_BASELINE_KEY = "score_baseline"  # first window's scores, when the reference has no score column

COLUMN_SCORE = Gauge("recsys_monitoring_column_drift_score", "Latest drift score per column", ["column"])
COLUMN_DRIFTED = Gauge("recsys_monitoring_column_drifted", "1 when the column drifted in the latest window", ["column"])
DATASET_DRIFT = Gauge("recsys_monitoring_dataset_drift", "1 when the latest window drifted (dataset level)")
DRIFTED_SHARE = Gauge("recsys_monitoring_drifted_share", "Share of drifted feature columns in the latest window")
PREDICTION_DRIFT = Gauge("recsys_monitoring_prediction_drift", "1 when served scores drifted in the latest window")
WINDOW_CTR = Gauge("recsys_monitoring_window_ctr", "CTR of the latest drift window's impressions")
CTR_DRIFT = Gauge("recsys_monitoring_ctr_drift", "1 when the latest window's CTR drifted from the reference")
REPORT_SECONDS = Histogram(
    "recsys_monitoring_drift_report_seconds",
    "Time to compute and store one window's drift verdict",
    buckets=(0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0),
)
HTML_SECONDS = Histogram(
    "recsys_monitoring_drift_html_seconds",
    "Time to draw one window's Evidently HTML report (after its verdict is stored)",
    buckets=(0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0),
)
WINDOW_SUFFIX = ".window.parquet"  # a reported window whose HTML is still to be drawn


@dataclass
class Reference:
    """The drift reference: feature columns, optional scores (`score`) and optional CTR (`label` mean)."""

    frame: pd.DataFrame
    ctr: float | None = None

    @classmethod
    def load(cls, path: Path | str, max_rows: int = 20_000, seed: int = 0) -> Reference:
        """Numeric columns of a parquet file, sampled to `max_rows` with a fixed seed."""
        return cls.from_frame(pd.read_parquet(path), max_rows, seed)

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, max_rows: int = 20_000, seed: int = 0) -> Reference:
        frame = frame.select_dtypes(include=["number", "bool"])
        ctr = float(frame[LABEL].mean()) if LABEL in frame.columns and len(frame) else None
        if len(frame) > max_rows:
            frame = frame.sample(n=max_rows, random_state=seed)
        frame = frame.drop(columns=[LABEL], errors="ignore").astype("float64").reset_index(drop=True)
        return cls(frame, ctr)

    @property
    def features(self) -> list[str]:
        return [c for c in self.frame.columns if c != SCORE]


def window_frame(payloads: list[bytes]) -> pd.DataFrame:
    """Served rows of serialized PredictionLog messages: one row per scored item, feature columns + score."""
    groups: dict[tuple[str, ...], list[events_pb2.PredictionLog]] = defaultdict(list)
    for payload in payloads:
        pred = events_pb2.PredictionLog.FromString(payload)
        groups[tuple(pred.feature_names)].append(pred)
    frames = []
    for names, preds in groups.items():
        features = np.concatenate([np.asarray(p.features, dtype=np.float64) for p in preds])
        scores = np.concatenate([np.asarray(p.scores, dtype=np.float64) for p in preds])
        frame = pd.DataFrame(features.reshape(len(scores), len(names)) if names else None, columns=list(names))
        frame[SCORE] = scores
        frames.append(frame)
    if not frames:
        return pd.DataFrame({SCORE: np.array([], dtype=np.float64)})
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


@dataclass
class DriftResult:
    columns: list[dict]  # {column, score, method, drifted}
    dataset_drift: bool
    drifted_share: float
    prediction_drift: bool
    prediction_score: float


def ctr_drift(clicks: int, impressions: int, reference_ctr: float | None, alpha: float) -> tuple[bool, float]:
    """Two-sided one-sample z-test of the window's CTR against the reference CTR: (drifted, p-value)."""
    if reference_ctr is None or impressions <= 0 or not 0 < reference_ctr < 1:
        return False, math.nan
    p = clicks / impressions
    z = (p - reference_ctr) / math.sqrt(reference_ctr * (1 - reference_ctr) / impressions)
    p_value = math.erfc(abs(z) / math.sqrt(2))
    return p_value < alpha, p_value


def column_drift(name: str, reference: pd.Series, current: pd.Series) -> dict:
    """Evidently's drift test of one numeric column, chosen and thresholded as `ValueDrift` and the
    `DataDriftPreset` do by default (Wasserstein distance above 1,000 reference rows, K-S below, Jensen-Shannon
    / chi-square / Z for few distinct values), without the charts those metrics draw."""
    from evidently.legacy.calculations.stattests import get_stattest
    from evidently.legacy.core import ColumnType

    reference = reference.replace([np.inf, -np.inf], np.nan).dropna()
    current = current.replace([np.inf, -np.inf], np.nan).dropna()
    if reference.empty or current.empty:
        raise ValueError(f"column {name!r} has no finite value in the {'reference' if reference.empty else 'window'}")
    test = get_stattest(reference, current, ColumnType.Numerical, None)
    result = test(reference, current, ColumnType.Numerical, None)
    return {
        "column": name,
        "score": float(result.drift_score),
        "method": test.display_name,
        "drifted": bool(result.drifted),
    }


class DriftDetector:
    """Drift verdicts of a window against the reference, and the Evidently HTML report drawn afterwards."""

    def __init__(self, reference: Reference, drift_share: float = 0.5) -> None:
        self.reference = reference
        self.drift_share = drift_share

    def frames(
        self, current: pd.DataFrame, score_reference: np.ndarray | None = None
    ) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
        """(reference, current, features) aligned on the compared columns; `score` is in both when the
        reference has scores or `score_reference` stands in for them (resampled to the reference length)."""
        features = [c for c in self.reference.features if c in current.columns]
        if not features:
            raise ValueError(
                f"no served feature matches the reference columns (served: {sorted(current.columns)[:10]}, "
                f"reference: {self.reference.features[:10]})"
            )
        ref = self.reference.frame[features].copy()
        cur = current[features].astype("float64")
        scored = SCORE in current.columns and (SCORE in self.reference.frame.columns or score_reference is not None)
        if scored:
            if SCORE in self.reference.frame.columns:
                ref[SCORE] = self.reference.frame[SCORE].to_numpy()
            else:
                rng = np.random.default_rng(0)
                ref[SCORE] = rng.choice(np.asarray(score_reference, dtype=np.float64), size=len(ref))
            cur = cur.assign(**{SCORE: current[SCORE].to_numpy(dtype=np.float64)})
        return ref, cur.reset_index(drop=True), features

    def warm_up(self, rows: int = 500, html_dir: Path | None = None) -> None:
        """Run the verdict once on a slice of the reference (and draw its HTML report into `html_dir`, then
        delete it): Evidently's imports and first runs cost ~3-5 s of CPU each, which belongs at start-up, not
        in the first window's report under load."""
        sample = self.reference.frame.head(rows)
        scores = sample[SCORE].to_numpy() if SCORE in sample.columns else None
        if html_dir is None:
            self.run(sample, scores)
            return
        path = html_dir / "warm-up.html"
        self.render_html(self.frames(sample, scores)[1], path, scores)
        path.unlink(missing_ok=True)

    def run(self, current: pd.DataFrame, score_reference: np.ndarray | None = None) -> tuple[DriftResult, pd.DataFrame]:
        """Per-column drift of `current` (features + `score`) against the reference; returns the verdict and
        the compared window (what `render_html` draws later)."""
        ref, cur, features = self.frames(current, score_reference)
        columns = [column_drift(name, ref[name], cur[name]) for name in features]
        prediction = column_drift(SCORE, ref[SCORE], cur[SCORE]) if SCORE in cur.columns else None
        share = sum(c["drifted"] for c in columns) / len(columns)
        result = DriftResult(
            columns=columns,
            dataset_drift=share >= self.drift_share,
            drifted_share=share,
            prediction_drift=bool(prediction and prediction["drifted"]),
            prediction_score=prediction["score"] if prediction else math.nan,
        )
        return result, cur

    def render_html(self, window: pd.DataFrame, path: Path, score_reference: np.ndarray | None = None) -> None:
        """The Evidently report (data drift preset with its charts, plus score drift) of a compared window,
        written to `path` atomically."""
        from evidently import DataDefinition, Dataset, Report
        from evidently.metrics import ValueDrift
        from evidently.presets import DataDriftPreset

        ref, cur, features = self.frames(window, score_reference)
        definition = DataDefinition(numerical_columns=list(cur.columns))
        metrics: list = [DataDriftPreset(columns=features, drift_share=self.drift_share)]
        if SCORE in cur.columns:
            metrics.append(ValueDrift(column=SCORE))
        snapshot = Report(metrics, include_tests=True).run(
            reference_data=Dataset.from_pandas(ref, data_definition=definition),
            current_data=Dataset.from_pandas(cur, data_definition=definition),
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        snapshot.save_html(str(partial))
        os.replace(partial, path)


def report_id_of(window_id: int) -> str:
    return f"drift-{window_id:06d}"


class DriftWorker:
    """Reports on closed windows in the background: Evidently, CTR drift, history, gauges, alerts.

    A window's rows are deleted only in the transaction that stores its report, so a crash in between
    re-reports the window after restart."""

    def __init__(
        self,
        store: MonitoringStore,
        detector: DriftDetector | None,
        alerts: AlertSink,
        bucket_s: int,
        ctr_alpha: float = 0.001,
        *,
        drift_share: float = 0.5,
        reports_dir: Path | None = None,
        fallback_reference_path: Path | None = None,
        publish_gauges: bool = True,
        ctr_maturity_s: int = 60,
    ) -> None:
        self.ctr_maturity_s = ctr_maturity_s
        self.store = store
        self.publish_gauges = publish_gauges
        self.detector = detector
        self.alerts = alerts
        self.bucket_s = bucket_s
        self.ctr_alpha = ctr_alpha
        self.drift_share = drift_share
        self.reports_dir = reports_dir
        self.fallback_reference_path = fallback_reference_path
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> DriftWorker:
        self._thread = threading.Thread(target=self._loop, name="drift-worker", daemon=True)
        self._thread.start()
        return self

    def notify(self) -> None:
        """A window closed."""
        self._wake.set()

    def stop(self, timeout_s: float = 30.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                self.process_closed()
                self.render_pending(self._wake.is_set)
            except Exception:
                log.exception("drift report failed; retrying on the next window")
            self._wake.wait(5.0)

    def process_closed(self) -> list[DriftReportRecord]:
        """Report on every closed window not yet reported; returns the new reports."""
        done = []
        for window in self.store.drift_windows("closed"):
            if self._stop.is_set():
                break
            done.append(self.report_window(window))
        return done

    def report_window(self, window: tuple) -> DriftReportRecord:
        window_id, _opened, _closed, start_ms, end_ms, rows, _status = window
        report_id = report_id_of(window_id)
        started = time.perf_counter()
        current = window_frame([payload for _, payload in self.store.drift_rows(window_id)])
        impressions, clicks = self.store.bucket_totals(*self._mature_buckets(start_ms, end_ms))
        ctr = clicks / impressions if impressions else 0.0
        reference_ctr = self._reference_ctr()
        drifted_ctr, ctr_p = ctr_drift(clicks, impressions, reference_ctr, self.ctr_alpha)
        try:
            result = self._evidently(current, report_id)
        except Exception as exc:  # a window that cannot be compared must not hold back the next ones
            log.exception("drift computation failed", extra={"report_id": report_id})
            self.alerts.fire("drift_error", f"drift report {report_id} failed: {exc}", report_id)
            result = DriftResult([], False, 0.0, False, math.nan)
        record = DriftReportRecord(
            report_id=report_id,
            window_id=window_id,
            created_ms=now_ms(),
            window_start_ms=start_ms,
            window_end_ms=end_ms,
            rows=len(current),
            dataset_drift=result.dataset_drift,
            drifted_share=result.drifted_share,
            prediction_drift=result.prediction_drift,
            prediction_score=result.prediction_score,
            ctr=ctr,
            impressions=impressions,
            ctr_drift=drifted_ctr,
            ctr_p=ctr_p,
            report_path="",  # set once the HTML report is drawn (render_pending)
            columns=result.columns,
        )
        if not self.store.save_report(record):
            log.warning("window already reported by another worker", extra={"report_id": report_id})
            return record
        REPORT_SECONDS.observe(time.perf_counter() - started)
        self._publish(record, reference_ctr)
        log.info(
            "drift report",
            extra={
                "report_id": report_id,
                "rows": len(current),
                "dataset_drift": record.dataset_drift,
                "drifted": [c["column"] for c in record.columns if c["drifted"]],
                "ctr": ctr,
                "seconds": round(time.perf_counter() - started, 3),
            },
        )
        return record

    def _mature_buckets(self, start_ms: int, end_ms: int) -> tuple[int, int]:
        """First and last bucket of the window's span whose clicks have had `ctr_maturity_s` to arrive."""
        last_mature = bucket_of(now_ms() - self.ctr_maturity_s * 1000, self.bucket_s) - self.bucket_s
        return bucket_of(start_ms, self.bucket_s), min(bucket_of(end_ms, self.bucket_s), last_mature)

    def _evidently(self, current: pd.DataFrame, report_id: str) -> DriftResult:
        """The window's verdict; with a reports folder, the compared window is kept there until its HTML
        report is drawn (`render_pending`), so a restart in between still draws it."""
        if current.empty:
            return DriftResult([], False, 0.0, False, math.nan)
        if self.detector is None:
            if self.fallback_reference_path is None:
                return DriftResult([], False, 0.0, False, math.nan)
            # No training reference configured: this first window becomes the reference.
            current.to_parquet(self.fallback_reference_path, index=False)
            log.warning("first window kept as the drift reference", extra={"path": str(self.fallback_reference_path)})
            self.detector = DriftDetector(Reference.from_frame(current), self.drift_share)
        score_reference = None
        if SCORE not in self.detector.reference.frame.columns and SCORE in current.columns:
            score_reference = self._score_baseline()
            if score_reference is None:  # the first window's scores become the prediction-drift baseline
                baseline = current[SCORE].to_numpy(dtype=np.float64)[:20_000]
                self.store.set_meta(_BASELINE_KEY, baseline.tobytes())
        result, compared = self.detector.run(current, score_reference)
        if self.reports_dir is not None:
            self.reports_dir.mkdir(parents=True, exist_ok=True)
            compared.to_parquet(self.reports_dir / f"{report_id}{WINDOW_SUFFIX}", index=False)
        return result

    def _score_baseline(self) -> np.ndarray | None:
        stored = self.store.get_meta(_BASELINE_KEY)
        return None if stored is None else np.frombuffer(stored, dtype=np.float64)

    def render_pending(self, should_yield: Callable[[], bool] = lambda: False) -> list[str]:
        """Draw the Evidently HTML report of every reported window still waiting for one, oldest first, and
        store its path; returns the report ids drawn. Stops early when `should_yield()` (a window closed:
        verdicts come first)."""
        if self.reports_dir is None or self.detector is None or not self.reports_dir.is_dir():
            return []
        drawn = []
        for kept in sorted(self.reports_dir.glob(f"*{WINDOW_SUFFIX}")):
            if self._stop.is_set() or should_yield():
                break
            report_id = kept.name.removesuffix(WINDOW_SUFFIX)
            if self.store.report(report_id) is None:  # its verdict is not stored yet
                continue
            started = time.perf_counter()
            path = self.reports_dir / f"{report_id}.html"
            try:
                self.detector.render_html(pd.read_parquet(kept), path, self._score_baseline())
            except Exception:
                log.exception("drift HTML report failed; the verdict stays stored", extra={"report_id": report_id})
            else:
                self.store.set_report_path(report_id, str(path))
                HTML_SECONDS.observe(time.perf_counter() - started)
                drawn.append(report_id)
            kept.unlink()
        return drawn

    def _reference_ctr(self) -> float | None:
        if self.detector is not None and self.detector.reference.ctr is not None:
            return self.detector.reference.ctr
        history = [r for r in self.store.reports(10) if r.impressions > 0]
        impressions = sum(r.impressions for r in history)
        return sum(r.ctr * r.impressions for r in history) / impressions if impressions else None

    def _publish(self, record: DriftReportRecord, reference_ctr: float | None) -> None:
        if self.publish_gauges:
            publish_gauges(record)
        drifted = [c for c in record.columns if c["drifted"]]
        if drifted:
            names = ", ".join(f"{c['column']} ({c['method']} {c['score']:.3f})" for c in drifted)
            level = "dataset drift" if record.dataset_drift else "column drift"
            self.alerts.fire(
                "data_drift",
                f"{level} in window {record.report_id}: {len(drifted)}/{len(record.columns)} columns drifted: {names}",
                record.report_id,
            )
        if record.prediction_drift:
            self.alerts.fire(
                "prediction_drift",
                f"served scores drifted in window {record.report_id} (score {record.prediction_score:.3f})",
                record.report_id,
            )
        if record.ctr_drift:
            self.alerts.fire(
                "ctr_drift",
                f"CTR {record.ctr:.4f} over {record.impressions} impressions in window {record.report_id} differs "
                f"from the reference {reference_ctr:.4f} (p={record.ctr_p:.2g})",
                record.report_id,
            )


def publish_gauges(record: DriftReportRecord) -> None:
    """Set the drift gauges from a window's report."""
    for column in record.columns:
        COLUMN_SCORE.labels(column["column"]).set(column["score"])
        COLUMN_DRIFTED.labels(column["column"]).set(1.0 if column["drifted"] else 0.0)
    DATASET_DRIFT.set(1.0 if record.dataset_drift else 0.0)
    DRIFTED_SHARE.set(record.drifted_share)
    PREDICTION_DRIFT.set(1.0 if record.prediction_drift else 0.0)
    WINDOW_CTR.set(record.ctr)
    CTR_DRIFT.set(1.0 if record.ctr_drift else 0.0)
