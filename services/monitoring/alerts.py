"""Alerts: stored, logged, and POSTed as JSON to a webhook by a background thread.

`AlertSink.fire` never blocks the caller on the network: the POST happens on the sender thread with a
short timeout, and when the queue is full the webhook delivery is dropped (the alert is still stored,
logged and counted).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import urllib.request
import uuid
from dataclasses import asdict

from prometheus_client import Counter

from recsys.monitoring.store import AlertRecord, MonitoringStore, now_ms

log = logging.getLogger("recsys.monitoring.alerts")

ALERTS = Counter("recsys_monitoring_alerts_total", "Alerts raised", ["kind"])
WEBHOOK_FAILURES = Counter("recsys_monitoring_webhook_failures_total", "Alert webhook deliveries that failed")
WEBHOOK_DROPPED = Counter("recsys_monitoring_webhook_dropped_total", "Alert webhook deliveries dropped (queue full)")


class AlertSink:
    """Raise alerts: persist, log, and deliver to the webhook asynchronously."""

    def __init__(self, store: MonitoringStore, webhook_url: str = "", timeout_s: float = 2.0, queue_size: int = 1000):
        self.store = store
        self.webhook_url = webhook_url
        self.timeout_s = timeout_s
        self._queue: queue.Queue[AlertRecord | None] = queue.Queue(maxsize=queue_size)
        self._sender: threading.Thread | None = None
        if webhook_url:
            self._sender = threading.Thread(target=self._send_loop, name="alert-webhook", daemon=True)
            self._sender.start()

    def fire(self, kind: str, message: str, report_id: str = "") -> AlertRecord:
        """Record an alert and queue its webhook delivery; returns the alert."""
        alert = AlertRecord(uuid.uuid4().hex, now_ms(), kind, message, report_id)
        self.store.add_alert(alert)
        ALERTS.labels(kind).inc()
        log.warning("alert", extra={"kind": kind, "alert": message, "report_id": report_id})
        if self._sender is not None:
            try:
                self._queue.put_nowait(alert)
            except queue.Full:
                WEBHOOK_DROPPED.inc()
        return alert

    def close(self, timeout_s: float = 5.0) -> None:
        """Deliver what is queued (up to `timeout_s`) and stop the sender."""
        if self._sender is None:
            return
        try:
            self._queue.put(None, timeout=timeout_s)
        except queue.Full:
            return
        self._sender.join(timeout_s)

    def _send_loop(self) -> None:
        while True:
            alert = self._queue.get()
            if alert is None:
                return
            self._post(alert)

    def _post(self, alert: AlertRecord) -> None:
        body = json.dumps({"source": "recsys-monitoring", **asdict(alert)}).encode()
        request = urllib.request.Request(
            self.webhook_url, data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                response.read()
        except Exception as exc:  # any network failure: count, log, go on
            WEBHOOK_FAILURES.inc()
            log.warning("alert webhook failed", extra={"url": self.webhook_url, "error": str(exc)})
