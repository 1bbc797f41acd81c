"""The drift worker in its own process, so Evidently never competes with ingestion for the GIL.

The child process opens the same SQLite store, reports on closed windows (Evidently drift verdicts,
history) and raises the alerts (stored, logged, POSTed); a lower-priority thread then draws each reported
window's Evidently HTML report. It exits by itself when its parent disappears. The parent
wakes it when a window closes, restarts it if it dies, and keeps the Prometheus drift gauges and alert
counters of its own /metrics endpoint current by watching the store.

The parent wakes and stops the child with bytes on a pipe it never blocks on, not a multiprocessing.Event:
a child killed while waiting on an Event leaves the Event's condition counting a sleeper that never wakes,
and the parent's next `set()` then blocks forever (measured: the ingest thread's notify hung).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import tempfile
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path

from recsys.common import config
from recsys.common.logs import configure_logging
from recsys.monitoring.alerts import ALERTS, AlertSink
from recsys.monitoring.drift import DriftDetector, DriftWorker, Reference, publish_gauges
from recsys.monitoring.settings import MonitoringSettings
from recsys.monitoring.store import MonitoringStore

log = logging.getLogger("recsys.monitoring.drift")

# The thread drawing the HTML reports runs at the lowest CPU priority (on Linux a thread's scheduling policy and
# niceness are its own): Linux's SCHED_IDLE, which runs only on a core nothing else wants, else niceness 19. An
# HTML report takes ~2.7 s of CPU per window (the verdict 0.1 s) and must not take it from the request path;
# the verdicts keep the normal priority.
HTML_NICENESS = 19


def _lowest_priority() -> str:
    """Put the calling thread at idle priority; returns what it got."""
    if hasattr(os, "SCHED_IDLE"):
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
            return "idle"
        except OSError:
            pass
    try:
        os.nice(HTML_NICENESS)
        return f"nice {HTML_NICENESS}"
    except OSError:
        log.warning("could not lower the HTML thread's priority")
        return "normal"


def load_reference(settings: MonitoringSettings) -> Reference | None:
    """The configured reference parquet, or the one taken from the first window, or None."""
    for path in (settings.reference_path, settings.fallback_reference_path):
        if path.exists():
            log.info("drift reference", extra={"path": str(path)})
            return Reference.load(path, settings.reference_max_rows)
    log.warning(
        "no drift reference yet: the first closed window becomes the reference",
        extra={"expected": str(settings.reference_path)},
    )
    return None


def build_worker(
    settings: MonitoringSettings, store: MonitoringStore, alerts: AlertSink, publish: bool = True
) -> DriftWorker:
    """A drift worker over `store` with the configured reference, thresholds and reports folder."""
    reference = load_reference(settings)
    reports_dir = settings.reports_dir if settings.save_html else None
    detector = DriftDetector(reference, settings.drift_share) if reference is not None else None
    return DriftWorker(
        store,
        detector,
        alerts,
        settings.bucket_s,
        settings.ctr_drift_p,
        drift_share=settings.drift_share,
        reports_dir=reports_dir,
        fallback_reference_path=settings.fallback_reference_path,
        publish_gauges=publish,
        ctr_maturity_s=settings.ctr_maturity_s,
    )


_WAKE, _STOP = b"w", b"s"


def _child(settings: MonitoringSettings, signals: Connection, parent_pid: int) -> None:
    # A stop signal sent to the whole process group (a supervisor, Ctrl-C) is the parent's to act on: it sends
    # _STOP, so a report in progress is finished and the parent's watcher does not take this exit for a
    # crash. Without a parent the loop below ends by itself.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    configure_logging("monitoring-drift", config.LOG_LEVEL.str())
    logging.getLogger("kafka").setLevel(logging.WARNING)
    store = MonitoringStore(settings.db_path)
    alerts = AlertSink(store, settings.webhook_url, settings.webhook_timeout_s)
    worker = build_worker(settings, store, alerts, publish=False)
    started = time.process_time()
    if worker.detector is not None:
        worker.detector.warm_up()
    else:  # no reference yet: at least the import
        from evidently.legacy.calculations.stattests import get_stattest  # noqa: F401
    log.info("drift worker warmed up", extra={"cpu_s": round(time.process_time() - started, 2)})
    html_due, finished = threading.Event(), threading.Event()
    html = threading.Thread(target=_draw_html, args=(worker, html_due, finished), name="drift-html", daemon=True)
    html.start()
    html_due.set()  # windows reported before a restart whose HTML was not drawn yet
    try:
        stopping = False
        while not stopping and os.getppid() == parent_pid:
            try:
                if worker.process_closed():
                    html_due.set()
            except Exception:
                log.exception("drift report failed; retrying")
            if signals.poll(1.0):
                received = os.read(signals.fileno(), 4096)
                stopping = not received or _STOP in received  # b"": the parent closed its end
    finally:
        finished.set()
        html_due.set()
        html.join(30)
        alerts.close()
        store.close()


def _draw_html(worker: DriftWorker, due: threading.Event, finished: threading.Event) -> None:
    """Draw the HTML reports of reported windows, at the lowest priority, until `finished`."""
    log.info("drift HTML thread", extra={"priority": _lowest_priority()})
    if worker.detector is not None and worker.reports_dir is not None:
        try:
            with tempfile.TemporaryDirectory() as scratch:
                worker.detector.warm_up(html_dir=Path(scratch))
        except Exception:
            log.exception("drawing the warm-up HTML report failed")
    while not finished.is_set():
        due.wait()
        due.clear()
        try:
            worker.render_pending(finished.is_set)
        except Exception:
            log.exception("drift HTML reports failed; retrying on the next window")


class DriftProcess:
    """Parent-side handle of the drift worker process."""

    def __init__(self, settings: MonitoringSettings, store: MonitoringStore, watch_interval_s: float = 1.0) -> None:
        self.settings = settings
        self.store = store
        self.watch_interval_s = watch_interval_s
        self._ctx = multiprocessing.get_context("spawn")
        self._signals: Connection | None = None  # the parent's end of the current child's pipe
        self._stopping = threading.Event()
        self._proc: multiprocessing.process.BaseProcess | None = None
        self._watcher = threading.Thread(target=self._watch, name="drift-watch", daemon=True)
        latest = store.report()
        self._last_report = latest.report_id if latest else ""
        self._last_alert_rowid = store.last_alert_rowid()

    def start(self) -> DriftProcess:
        self._spawn()
        self._watcher.start()
        return self

    def _spawn(self) -> None:
        """Start a child with a fresh pipe (a dead child's pipe is dropped with it)."""
        receiver, sender = self._ctx.Pipe(duplex=False)
        os.set_blocking(sender.fileno(), False)
        previous, self._signals = self._signals, sender
        if previous is not None:
            previous.close()
        self._proc = self._ctx.Process(
            target=_child,
            args=(self.settings, receiver, os.getpid()),
            name="recsys-monitoring-drift",
            daemon=True,
        )
        self._proc.start()
        receiver.close()
        self._send(_WAKE)  # windows closed before a restart

    def _send(self, signal_byte: bytes) -> None:
        """One byte to the child; never blocks (a full pipe already holds a wake-up; a dead child is restarted)."""
        sender = self._signals
        if sender is None:
            return
        try:
            os.write(sender.fileno(), signal_byte)
        except (OSError, ValueError):  # full, or closed by a restart or the child's exit
            pass

    def notify(self, _windows: list[int] | None = None) -> None:
        """Windows closed: wake the worker."""
        self._send(_WAKE)

    def stop(self, timeout_s: float = 30.0) -> None:
        self._stopping.set()
        self._send(_STOP)
        if self._proc is not None:
            self._proc.join(timeout_s)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join(5)
        self._watcher.join(timeout_s)
        if self._signals is not None:
            self._signals.close()
        self._sync()

    def _watch(self) -> None:
        while not self._stopping.wait(self.watch_interval_s):
            try:
                self._sync()
                if self._proc is not None and not self._proc.is_alive() and not self._stopping.is_set():
                    log.error("drift process exited; restarting it", extra={"exitcode": self._proc.exitcode})
                    self._spawn()
            except Exception:
                log.exception("drift watcher failed")

    def _sync(self) -> None:
        """Gauges from the latest report, alert counters from newly stored alerts."""
        latest = self.store.report()
        if latest is not None and latest.report_id != self._last_report:
            publish_gauges(latest)
            self._last_report = latest.report_id
        for rowid, kind in self.store.alerts_after(self._last_alert_rowid):
            ALERTS.labels(kind).inc()
            self._last_alert_rowid = rowid
