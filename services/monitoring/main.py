"""The monitoring process: store, Kafka consumer thread, drift worker process and the gRPC server, until
SIGTERM / SIGINT (`python -m recsys.monitoring`, `recsys monitoring serve`)."""

from __future__ import annotations

import logging
import threading

from recsys.common import config
from recsys.common.kafka import admin as kafka_admin
from recsys.common.logs import configure_logging
from recsys.common.server import GrpcServer, ServerOptions, run_forever
from recsys.monitoring.actions import DriftActions, build_trigger
from recsys.monitoring.alerts import AlertSink
from recsys.monitoring.consumer import MonitoringConsumer
from recsys.monitoring.dashboard.app import create_app
from recsys.monitoring.dashboard.scrape import SELF, MetricsScraper, parse_targets
from recsys.monitoring.dashboard.server import DashboardServer
from recsys.monitoring.dashboard.views import DashboardData
from recsys.monitoring.drift_process import DriftProcess
from recsys.monitoring.server import create_server
from recsys.monitoring.service import MonitoringService
from recsys.monitoring.settings import PORT, MonitoringSettings
from recsys.monitoring.store import MonitoringStore

log = logging.getLogger("recsys.monitoring")


class MonitoringApp:
    """Everything one monitoring service runs."""

    def __init__(self, settings: MonitoringSettings, options: ServerOptions) -> None:
        self.settings = settings
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        self.store = MonitoringStore(settings.db_path)
        self.drift = DriftProcess(settings, self.store)
        kafka_admin.ensure_topics([*settings.topics, settings.dlq_topic], settings.bootstrap)
        self.consumer = MonitoringConsumer(settings, self.store, on_window_closed=self.drift.notify)
        self.server: GrpcServer = create_server(MonitoringService(self.store, settings), options)
        self._consumer_thread = threading.Thread(target=self._consume, name="monitoring-consumer", daemon=True)
        self.alerts = AlertSink(self.store, settings.webhook_url, settings.webhook_timeout_s)
        self.actions = DriftActions(self.store, self.alerts, build_trigger(settings), settings)
        self.dashboard = self._dashboard(options) if settings.dashboard_port else None
        self.failed = False

    def _dashboard(self, options: ServerOptions) -> DashboardServer | None:
        """The web dashboard on its own port; a port already taken costs the dashboard, not the service."""
        s = self.settings
        targets = parse_targets(s.dashboard_targets) or {SELF: ""}
        tls = options.tls if options.tls is not None and options.tls.server_enabled else None
        self.scraper = MetricsScraper(targets, interval_s=s.dashboard_scrape_s,
                                      scheme="http")  # /metrics is plain HTTP on every process
        data = DashboardData(self.store, s, self.scraper, served_models=lambda: dict(self.consumer.served_models),
                             alert_open_s=s.dashboard_alert_open_s)
        app = create_app(data, options.auth, secure_cookie=tls is not None, refresh_s=min(5.0, s.dashboard_scrape_s))
        try:
            return DashboardServer(app, options.host, s.dashboard_port, tls)
        except OSError as exc:
            log.error("dashboard not started", extra={"port": s.dashboard_port, "error": str(exc)})
            return None

    def _consume(self) -> None:
        try:
            self.consumer.run()
        except Exception:
            log.exception("consumer failed; stopping the service")
            self.failed = True
            threading.Thread(target=self.server.stop, daemon=True).start()

    def start_background(self) -> None:
        """Start the drift process and the consumer thread (the gRPC server is started separately)."""
        self.drift.start()
        self._consumer_thread.start()
        self.actions.start()
        if self.dashboard is not None:
            self.scraper.start()
            self.dashboard.start()

    def stop(self) -> None:
        """Finish the batch in flight, then stop the drift process and close the store."""
        if self.dashboard is not None:
            self.dashboard.stop()
            self.scraper.stop()
        self.actions.stop()
        self.consumer.stop()
        self._consumer_thread.join(timeout=60)
        self.consumer.close()
        self.drift.stop()
        self.alerts.close()
        self.store.close()


def main(port: int | None = None) -> int:
    """Run the monitoring service until SIGTERM / SIGINT; exit code 1 if the consumer failed."""
    configure_logging("monitoring", config.LOG_LEVEL.str())
    logging.getLogger("kafka").setLevel(max(logging.WARNING, logging.getLogger().level))  # per-connection chatter
    settings = MonitoringSettings.from_env()
    app = MonitoringApp(settings, ServerOptions.from_env(PORT.int() if port is None else port))
    app.start_background()
    try:
        run_forever(app.server)
    finally:
        app.stop()
    return 1 if app.failed else 0
