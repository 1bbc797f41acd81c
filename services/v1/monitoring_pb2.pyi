from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetOnlineMetricsRequest(_message.Message):
    __slots__ = ("window_seconds", "variant")
    WINDOW_SECONDS_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    window_seconds: int
    variant: str
    def __init__(self, window_seconds: _Optional[int] = ..., variant: _Optional[str] = ...) -> None: ...

class VariantMetrics(_message.Message):
    __slots__ = ("variant", "impressions", "clicks", "ctr", "revenue_per_impression", "ctr_lift", "ctr_lift_ci_low", "ctr_lift_ci_high", "revenue_lift")
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    IMPRESSIONS_FIELD_NUMBER: _ClassVar[int]
    CLICKS_FIELD_NUMBER: _ClassVar[int]
    CTR_FIELD_NUMBER: _ClassVar[int]
    REVENUE_PER_IMPRESSION_FIELD_NUMBER: _ClassVar[int]
    CTR_LIFT_FIELD_NUMBER: _ClassVar[int]
    CTR_LIFT_CI_LOW_FIELD_NUMBER: _ClassVar[int]
    CTR_LIFT_CI_HIGH_FIELD_NUMBER: _ClassVar[int]
    REVENUE_LIFT_FIELD_NUMBER: _ClassVar[int]
    variant: str
    impressions: int
    clicks: int
    ctr: float
    revenue_per_impression: float
    ctr_lift: float
    ctr_lift_ci_low: float
    ctr_lift_ci_high: float
    revenue_lift: float
    def __init__(self, variant: _Optional[str] = ..., impressions: _Optional[int] = ..., clicks: _Optional[int] = ..., ctr: _Optional[float] = ..., revenue_per_impression: _Optional[float] = ..., ctr_lift: _Optional[float] = ..., ctr_lift_ci_low: _Optional[float] = ..., ctr_lift_ci_high: _Optional[float] = ..., revenue_lift: _Optional[float] = ...) -> None: ...

class PositionMetrics(_message.Message):
    __slots__ = ("position", "impressions", "clicks", "ctr")
    POSITION_FIELD_NUMBER: _ClassVar[int]
    IMPRESSIONS_FIELD_NUMBER: _ClassVar[int]
    CLICKS_FIELD_NUMBER: _ClassVar[int]
    CTR_FIELD_NUMBER: _ClassVar[int]
    position: int
    impressions: int
    clicks: int
    ctr: float
    def __init__(self, position: _Optional[int] = ..., impressions: _Optional[int] = ..., clicks: _Optional[int] = ..., ctr: _Optional[float] = ...) -> None: ...

class OnlineMetrics(_message.Message):
    __slots__ = ("window_seconds", "impressions", "clicks", "ctr", "revenue_per_impression", "catalogue_coverage", "variants", "positions", "score_quantiles")
    WINDOW_SECONDS_FIELD_NUMBER: _ClassVar[int]
    IMPRESSIONS_FIELD_NUMBER: _ClassVar[int]
    CLICKS_FIELD_NUMBER: _ClassVar[int]
    CTR_FIELD_NUMBER: _ClassVar[int]
    REVENUE_PER_IMPRESSION_FIELD_NUMBER: _ClassVar[int]
    CATALOGUE_COVERAGE_FIELD_NUMBER: _ClassVar[int]
    VARIANTS_FIELD_NUMBER: _ClassVar[int]
    POSITIONS_FIELD_NUMBER: _ClassVar[int]
    SCORE_QUANTILES_FIELD_NUMBER: _ClassVar[int]
    window_seconds: int
    impressions: int
    clicks: int
    ctr: float
    revenue_per_impression: float
    catalogue_coverage: float
    variants: _containers.RepeatedCompositeFieldContainer[VariantMetrics]
    positions: _containers.RepeatedCompositeFieldContainer[PositionMetrics]
    score_quantiles: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, window_seconds: _Optional[int] = ..., impressions: _Optional[int] = ..., clicks: _Optional[int] = ..., ctr: _Optional[float] = ..., revenue_per_impression: _Optional[float] = ..., catalogue_coverage: _Optional[float] = ..., variants: _Optional[_Iterable[_Union[VariantMetrics, _Mapping]]] = ..., positions: _Optional[_Iterable[_Union[PositionMetrics, _Mapping]]] = ..., score_quantiles: _Optional[_Iterable[float]] = ...) -> None: ...

class GetDriftReportRequest(_message.Message):
    __slots__ = ("report_id",)
    REPORT_ID_FIELD_NUMBER: _ClassVar[int]
    report_id: str
    def __init__(self, report_id: _Optional[str] = ...) -> None: ...

class ColumnDrift(_message.Message):
    __slots__ = ("column", "score", "method", "drifted")
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    DRIFTED_FIELD_NUMBER: _ClassVar[int]
    column: str
    score: float
    method: str
    drifted: bool
    def __init__(self, column: _Optional[str] = ..., score: _Optional[float] = ..., method: _Optional[str] = ..., drifted: _Optional[bool] = ...) -> None: ...

class DriftReport(_message.Message):
    __slots__ = ("report_id", "window_start_ms", "window_end_ms", "rows", "dataset_drift", "drifted_share", "columns", "prediction_drift", "ctr", "report_path")
    REPORT_ID_FIELD_NUMBER: _ClassVar[int]
    WINDOW_START_MS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_END_MS_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    DATASET_DRIFT_FIELD_NUMBER: _ClassVar[int]
    DRIFTED_SHARE_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_DRIFT_FIELD_NUMBER: _ClassVar[int]
    CTR_FIELD_NUMBER: _ClassVar[int]
    REPORT_PATH_FIELD_NUMBER: _ClassVar[int]
    report_id: str
    window_start_ms: int
    window_end_ms: int
    rows: int
    dataset_drift: bool
    drifted_share: float
    columns: _containers.RepeatedCompositeFieldContainer[ColumnDrift]
    prediction_drift: bool
    ctr: float
    report_path: str
    def __init__(self, report_id: _Optional[str] = ..., window_start_ms: _Optional[int] = ..., window_end_ms: _Optional[int] = ..., rows: _Optional[int] = ..., dataset_drift: _Optional[bool] = ..., drifted_share: _Optional[float] = ..., columns: _Optional[_Iterable[_Union[ColumnDrift, _Mapping]]] = ..., prediction_drift: _Optional[bool] = ..., ctr: _Optional[float] = ..., report_path: _Optional[str] = ...) -> None: ...

class ListAlertsRequest(_message.Message):
    __slots__ = ("limit",)
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    limit: int
    def __init__(self, limit: _Optional[int] = ...) -> None: ...

class Alert(_message.Message):
    __slots__ = ("alert_id", "created_ms", "kind", "message", "report_id")
    ALERT_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_MS_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    REPORT_ID_FIELD_NUMBER: _ClassVar[int]
    alert_id: str
    created_ms: int
    kind: str
    message: str
    report_id: str
    def __init__(self, alert_id: _Optional[str] = ..., created_ms: _Optional[int] = ..., kind: _Optional[str] = ..., message: _Optional[str] = ..., report_id: _Optional[str] = ...) -> None: ...

class ListAlertsResponse(_message.Message):
    __slots__ = ("alerts",)
    ALERTS_FIELD_NUMBER: _ClassVar[int]
    alerts: _containers.RepeatedCompositeFieldContainer[Alert]
    def __init__(self, alerts: _Optional[_Iterable[_Union[Alert, _Mapping]]] = ...) -> None: ...
