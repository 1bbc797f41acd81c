"""The monitoring service's environment variables, read once into a `MonitoringSettings`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from recsys.common import config

SCOPE = "monitoring"

PORT = config.declare("RECSYS_MONITORING_PORT", 50055, "MonitoringService gRPC port", SCOPE)
GROUP = config.declare("RECSYS_MONITORING_GROUP", "recsys-monitoring", "Kafka consumer group", SCOPE)
STATE_DIR = config.declare(
    "RECSYS_MONITORING_STATE_DIR", "", "SQLite state and drift reports (empty = <RECSYS_VAR_DIR>/monitoring)", SCOPE
)
REFERENCE = config.declare(
    "RECSYS_MONITORING_REFERENCE",
    "",
    "Drift reference parquet: the training features (+ optional `score`, `label`); "
    "empty = <RECSYS_VAR_DIR>/monitoring/reference.parquet",
    SCOPE,
)
REFERENCE_MAX_ROWS = config.declare(
    "RECSYS_MONITORING_REFERENCE_MAX_ROWS", 20_000, "Reference rows kept (a fixed-seed sample)", SCOPE
)
BUCKET_S = config.declare("RECSYS_MONITORING_BUCKET_S", 60, "Seconds per online-metrics time bucket", SCOPE)
JOIN_WINDOW_S = config.declare(
    "RECSYS_MONITORING_JOIN_WINDOW_S", 1800, "Clicks/purchases join their impression within this many seconds", SCOPE
)
DEDUPE_WINDOW_S = config.declare(
    "RECSYS_MONITORING_DEDUPE_WINDOW_S", 3600, "Seconds (event time) an event_id is kept to drop duplicates", SCOPE
)
RETENTION_S = config.declare(
    "RECSYS_MONITORING_RETENTION_S", 7 * 86_400, "Seconds of online-metrics history kept (the largest window)", SCOPE
)
CONTROL_VARIANT = config.declare(
    "RECSYS_MONITORING_CONTROL_VARIANT", "control", "Variant the lift of the others is measured against", SCOPE
)
CATALOGUE_SIZE = config.declare(
    "RECSYS_MONITORING_CATALOGUE_SIZE", 0, "Items in the catalogue (0 = items ever served) for coverage", SCOPE
)
DRIFT_WINDOW_ROWS = config.declare(
    "RECSYS_MONITORING_DRIFT_WINDOW_ROWS", 5000, "A drift window closes at this many served rows", SCOPE
)
DRIFT_WINDOW_S = config.declare(
    "RECSYS_MONITORING_DRIFT_WINDOW_S", 300, "... or this many seconds after it opened (with >= min rows)", SCOPE
)
DRIFT_MIN_ROWS = config.declare(
    "RECSYS_MONITORING_DRIFT_MIN_ROWS", 200, "Rows a time-closed drift window needs at least", SCOPE
)
DRIFT_SHARE = config.declare(
    "RECSYS_MONITORING_DRIFT_SHARE", 0.5, "Share of drifted columns that makes the dataset drifted", SCOPE
)
CTR_MATURITY_S = config.declare(
    "RECSYS_MONITORING_CTR_MATURITY_S",
    60,
    "A window's CTR counts only time buckets that ended this long before the report (clicks arrive late)",
    SCOPE,
)
CTR_DRIFT_P = config.declare(
    "RECSYS_MONITORING_CTR_DRIFT_P", 0.001, "p-value under which a window's CTR counts as drifted", SCOPE
)
SAVE_HTML = config.declare("RECSYS_MONITORING_SAVE_HTML", True, "Save an Evidently HTML report per window", SCOPE)
WEBHOOK_URL = config.declare("RECSYS_MONITORING_WEBHOOK_URL", "", "Alerts are POSTed here as JSON (empty = off)", SCOPE)
WEBHOOK_TIMEOUT_S = config.declare("RECSYS_MONITORING_WEBHOOK_TIMEOUT_S", 2.0, "Webhook POST timeout", SCOPE)
MAX_POLL_RECORDS = config.declare(
    "RECSYS_MONITORING_MAX_POLL_RECORDS", 10_000, "Records per Kafka poll (one persisted batch)", SCOPE
)
RETRAIN_TRIGGER = config.declare(
    "RECSYS_MONITORING_RETRAIN_TRIGGER",
    "file",
    "How drift starts a retrain: file (a request in <RECSYS_MODELS_DIR> that `recsys serve`'s lifecycle loop runs), "
    "kubernetes (a Job from the retrain CronJob's template, RECSYS_MONITORING_RETRAIN_CRONJOB) or off",
    SCOPE,
)
RETRAIN_ON = config.declare(
    "RECSYS_MONITORING_RETRAIN_ON",
    "data_drift,ctr_drop",
    "What starts a retrain, comma-separated: data_drift (a window with dataset drift), prediction_drift, ctr_drift "
    "(a window's CTR off the reference), ctr_drop (a variant's CTR below its own recent baseline)",
    SCOPE,
)
RETRAIN_MIN_INTERVAL_S = config.declare(
    "RECSYS_MONITORING_RETRAIN_MIN_INTERVAL_S", 1800.0, "Least time between two retrains that drift starts", SCOPE
)
RETRAIN_CRONJOB = config.declare(
    "RECSYS_MONITORING_RETRAIN_CRONJOB", "", "kubernetes trigger: the retrain CronJob whose template makes the Job",
    SCOPE,
)
NAMESPACE = config.declare(
    "RECSYS_MONITORING_NAMESPACE", "", "kubernetes trigger: the namespace (empty = the pod's own)", SCOPE
)
CTR_DROP_RECENT_S = config.declare(
    "RECSYS_MONITORING_CTR_DROP_RECENT_S", 600, "CTR drop: the recent span compared with the baseline", SCOPE
)
CTR_DROP_BASELINE_S = config.declare(
    "RECSYS_MONITORING_CTR_DROP_BASELINE_S", 3600, "CTR drop: the variant's baseline span, just before the recent one",
    SCOPE,
)
CTR_DROP_MIN_RELATIVE = config.declare(
    "RECSYS_MONITORING_CTR_DROP_MIN_RELATIVE", 0.15,
    "CTR drop: the least relative fall (recent below baseline) that counts, besides being significant", SCOPE,
)
CTR_DROP_P = config.declare(
    "RECSYS_MONITORING_CTR_DROP_P", 0.001, "CTR drop: p-value of the one-sided two-proportion z-test", SCOPE
)
CTR_DROP_MIN_IMPRESSIONS = config.declare(
    "RECSYS_MONITORING_CTR_DROP_MIN_IMPRESSIONS", 2000, "CTR drop: impressions each span needs before it is tested",
    SCOPE,
)
ACTIONS_CHECK_S = config.declare(
    "RECSYS_MONITORING_ACTIONS_CHECK_S", 10.0, "Seconds between checks for drift that starts a retrain", SCOPE
)
FETCH_WAIT_MS = config.declare(
    "RECSYS_MONITORING_FETCH_WAIT_MS",
    200,
    "How long the broker may hold a fetch to fill it (each fetched batch costs one SQLite commit and one offset "
    "commit: at a few events per fetch that fixed cost dominates; 0 = answer at once)",
    SCOPE,
)
CHECK_CRCS = config.declare(
    "RECSYS_MONITORING_CHECK_CRCS",
    True,
    "Verify each record's CRC-32C on fetch (fast: the pinned `crc32c` package computes it in C)",
    SCOPE,
)
DASHBOARD_PORT = config.declare(
    "RECSYS_MONITORING_DASHBOARD_PORT", 8080, "Web dashboard HTTP port (HTTPS with RECSYS_TLS_CERT/KEY; 0 = off)", SCOPE
)
DASHBOARD_TARGETS = config.declare(
    "RECSYS_MONITORING_DASHBOARD_TARGETS",
    "",
    "Processes whose /metrics the dashboard's overview scrapes, name=host:port,... (empty = this process only; "
    "`recsys serve` sets every process of the local stack)",
    SCOPE,
)
DASHBOARD_SCRAPE_S = config.declare(
    "RECSYS_MONITORING_DASHBOARD_SCRAPE_S", 5.0, "Seconds between the dashboard's scrapes (15 min are kept)", SCOPE
)
DASHBOARD_ALERT_OPEN_S = config.declare(
    "RECSYS_MONITORING_DASHBOARD_ALERT_OPEN_S", 1800.0, "The dashboard shows an alert as open this long", SCOPE
)


@dataclass
class MonitoringSettings:
    """Everything the service needs, with defaults suited to tests; `from_env` reads the variables."""

    state_dir: Path
    reference_path: Path
    bootstrap: str = "127.0.0.1:9092"
    group: str = "recsys-monitoring"
    events_topic: str = "recsys.events"
    impressions_topic: str = "recsys.impressions"
    predictions_topic: str = "recsys.predictions"
    dlq_topic: str = "recsys.dead-letter"
    reference_max_rows: int = 20_000
    bucket_s: int = 60
    join_window_s: int = 1800
    dedupe_window_s: int = 3600
    retention_s: int = 7 * 86_400
    control_variant: str = "control"
    catalogue_size: int = 0
    drift_window_rows: int = 5000
    drift_window_s: float = 300.0
    drift_min_rows: int = 200
    drift_share: float = 0.5
    ctr_drift_p: float = 0.001
    ctr_maturity_s: int = 60
    save_html: bool = True
    webhook_url: str = ""
    webhook_timeout_s: float = 2.0
    max_poll_records: int = 10_000
    check_crcs: bool = False
    fetch_wait_ms: int = 200
    retrain_trigger: str = "off"
    retrain_on: tuple[str, ...] = ("data_drift", "ctr_drop")
    retrain_min_interval_s: float = 1800.0
    retrain_cronjob: str = ""
    namespace: str = ""
    models_dir: Path = Path("var/models")
    ctr_drop_recent_s: int = 600
    ctr_drop_baseline_s: int = 3600
    ctr_drop_min_relative: float = 0.15
    ctr_drop_p: float = 0.001
    ctr_drop_min_impressions: int = 2000
    actions_check_s: float = 10.0
    dashboard_port: int = 0
    dashboard_targets: str = ""
    dashboard_scrape_s: float = 5.0
    dashboard_alert_open_s: float = 1800.0

    @property
    def db_path(self) -> Path:
        return self.state_dir / "monitoring.sqlite"

    @property
    def fallback_reference_path(self) -> Path:
        """Where the first closed window is kept as the reference when none is configured."""
        return self.state_dir / "reference.first-window.parquet"

    @property
    def reports_dir(self) -> Path:
        return self.state_dir / "reports"

    @property
    def topics(self) -> list[str]:
        return [self.events_topic, self.impressions_topic, self.predictions_topic]

    @classmethod
    def from_env(cls) -> MonitoringSettings:
        var_dir = Path(config.VAR_DIR.str())
        state_dir = Path(STATE_DIR.str()) if STATE_DIR.str() else var_dir / "monitoring"
        reference = Path(REFERENCE.str()) if REFERENCE.str() else var_dir / "monitoring" / "reference.parquet"
        return cls(
            state_dir=state_dir,
            reference_path=reference,
            bootstrap=config.KAFKA_BOOTSTRAP.str(),
            group=GROUP.str(),
            events_topic=config.KAFKA_EVENTS_TOPIC.str(),
            impressions_topic=config.KAFKA_IMPRESSIONS_TOPIC.str(),
            predictions_topic=config.KAFKA_PREDICTIONS_TOPIC.str(),
            dlq_topic=config.KAFKA_DLQ_TOPIC.str(),
            reference_max_rows=REFERENCE_MAX_ROWS.int(),
            bucket_s=BUCKET_S.int(),
            join_window_s=JOIN_WINDOW_S.int(),
            dedupe_window_s=DEDUPE_WINDOW_S.int(),
            retention_s=RETENTION_S.int(),
            control_variant=CONTROL_VARIANT.str(),
            catalogue_size=CATALOGUE_SIZE.int(),
            drift_window_rows=DRIFT_WINDOW_ROWS.int(),
            drift_window_s=DRIFT_WINDOW_S.float(),
            drift_min_rows=DRIFT_MIN_ROWS.int(),
            drift_share=DRIFT_SHARE.float(),
            ctr_drift_p=CTR_DRIFT_P.float(),
            ctr_maturity_s=CTR_MATURITY_S.int(),
            save_html=SAVE_HTML.bool(),
            webhook_url=WEBHOOK_URL.str(),
            webhook_timeout_s=WEBHOOK_TIMEOUT_S.float(),
            max_poll_records=MAX_POLL_RECORDS.int(),
            check_crcs=CHECK_CRCS.bool(),
            fetch_wait_ms=FETCH_WAIT_MS.int(),
            retrain_trigger=RETRAIN_TRIGGER.str().strip().lower(),
            retrain_on=tuple(k.strip() for k in RETRAIN_ON.str().split(",") if k.strip()),
            retrain_min_interval_s=RETRAIN_MIN_INTERVAL_S.float(),
            retrain_cronjob=RETRAIN_CRONJOB.str(),
            namespace=NAMESPACE.str(),
            models_dir=Path(config.MODELS_DIR.str()),
            ctr_drop_recent_s=CTR_DROP_RECENT_S.int(),
            ctr_drop_baseline_s=CTR_DROP_BASELINE_S.int(),
            ctr_drop_min_relative=CTR_DROP_MIN_RELATIVE.float(),
            ctr_drop_p=CTR_DROP_P.float(),
            ctr_drop_min_impressions=CTR_DROP_MIN_IMPRESSIONS.int(),
            actions_check_s=ACTIONS_CHECK_S.float(),
            dashboard_port=DASHBOARD_PORT.int(),
            dashboard_targets=DASHBOARD_TARGETS.str(),
            dashboard_scrape_s=DASHBOARD_SCRAPE_S.float(),
            dashboard_alert_open_s=DASHBOARD_ALERT_OPEN_S.float(),
        )
