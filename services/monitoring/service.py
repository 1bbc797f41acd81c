"""The logic behind MonitoringService's RPCs: online metrics, drift reports and alerts from the store."""

from __future__ import annotations

import math

from recsys.common.errors import InvalidArgument, NotFound
from recsys.monitoring.aggregates import bucket_of, summarize
from recsys.monitoring.settings import MonitoringSettings
from recsys.monitoring.store import DriftReportRecord, MonitoringStore, now_ms
from recsys.v1 import monitoring_pb2

MAX_ALERTS = 1000


class MonitoringService:
    """Reads what the consumer and the drift worker persisted."""

    def __init__(self, store: MonitoringStore, settings: MonitoringSettings) -> None:
        self.store = store
        self.settings = settings

    def online_metrics(self, request: monitoring_pb2.GetOnlineMetricsRequest) -> monitoring_pb2.OnlineMetrics:
        """CTR, revenue, coverage, per-variant lift and position CTR over the requested window."""
        s = self.settings
        window = request.window_seconds
        if window < 0:
            raise InvalidArgument("window_seconds", "must be >= 0 (0 = since start)")
        if 0 < window < s.bucket_s:
            raise InvalidArgument("window_seconds", f"must be 0 or at least the bucket size ({s.bucket_s} s)")
        if window > s.retention_s:
            raise InvalidArgument("window_seconds", f"must be at most the retention ({s.retention_s} s)")
        if request.variant and request.variant not in self.store.variants():
            raise NotFound(f"variant {request.variant!r} has no impressions in the retained history")
        min_bucket = bucket_of(now_ms() - window * 1000, s.bucket_s) if window else 0
        catalogue = s.catalogue_size or self.store.items_ever_served()
        summary = summarize(
            self.store.window_cells(min_bucket),
            self.store.served_items(min_bucket, request.variant),
            catalogue,
            self.store.score_histogram(min_bucket, request.variant),
            s.control_variant,
            request.variant,
        )
        return monitoring_pb2.OnlineMetrics(
            window_seconds=window,
            impressions=summary.totals.impressions,
            clicks=summary.totals.clicks,
            ctr=summary.totals.ctr,
            revenue_per_impression=summary.totals.revenue_per_impression,
            catalogue_coverage=summary.catalogue_coverage,
            variants=[
                monitoring_pb2.VariantMetrics(
                    variant=v.variant,
                    impressions=v.totals.impressions,
                    clicks=v.totals.clicks,
                    ctr=v.totals.ctr,
                    revenue_per_impression=v.totals.revenue_per_impression,
                    ctr_lift=v.lift.ctr_lift,
                    ctr_lift_ci_low=v.lift.ctr_low,
                    ctr_lift_ci_high=v.lift.ctr_high,
                    revenue_lift=v.lift.revenue_lift,
                )
                for v in summary.variants
            ],
            positions=[
                monitoring_pb2.PositionMetrics(position=pos, impressions=t.impressions, clicks=t.clicks, ctr=t.ctr)
                for pos, t in summary.positions
            ],
            score_quantiles=summary.score_quantiles,
        )

    def drift_report(self, request: monitoring_pb2.GetDriftReportRequest) -> monitoring_pb2.DriftReport:
        """One drift report (the latest when no id is given)."""
        record = self.store.report(request.report_id)
        if record is None:
            if request.report_id:
                raise NotFound(f"drift report {request.report_id!r} not found")
            raise NotFound("no drift report yet: no window of served rows has closed")
        return drift_report_proto(record)

    def alerts(self, request: monitoring_pb2.ListAlertsRequest) -> monitoring_pb2.ListAlertsResponse:
        """The most recent alerts, newest first."""
        if request.limit < 0:
            raise InvalidArgument("limit", "must be >= 0 (0 = 100)")
        limit = min(request.limit or 100, MAX_ALERTS)
        return monitoring_pb2.ListAlertsResponse(
            alerts=[
                monitoring_pb2.Alert(
                    alert_id=a.alert_id, created_ms=a.created_ms, kind=a.kind, message=a.message, report_id=a.report_id
                )
                for a in self.store.alerts(limit)
            ]
        )


def drift_report_proto(record: DriftReportRecord) -> monitoring_pb2.DriftReport:
    """A stored drift report as its protobuf message."""
    return monitoring_pb2.DriftReport(
        report_id=record.report_id,
        window_start_ms=record.window_start_ms,
        window_end_ms=record.window_end_ms,
        rows=record.rows,
        dataset_drift=record.dataset_drift,
        drifted_share=record.drifted_share,
        columns=[
            monitoring_pb2.ColumnDrift(
                column=c["column"],
                score=c["score"] if not math.isnan(c["score"]) else 0.0,
                method=c["method"],
                drifted=c["drifted"],
            )
            for c in record.columns
        ],
        prediction_drift=record.prediction_drift,
        ctr=record.ctr,
        report_path=record.report_path,
    )
