"""Drift acts: a drift alert, or a variant's CTR falling below its own recent baseline, starts a retrain.

`DriftActions` runs in the monitoring process beside the consumer. Every `check_s` it reads the alerts stored
since its last look (the drift worker raises them per window) and tests each variant for a CTR drop; when one of
the configured signals (`retrain_on`) is there, it asks its `RetrainTrigger` for one retrain: on the local stack a
request file the lifecycle loop of `recsys serve` runs, on Kubernetes a Job made from the retrain CronJob. What
happens next (the gate, the canary) is the retrain's business.

Debounced: at most one retrain per `min_interval_s` (the time of the last one is kept in the store, so a restart
does not forget it), and none while the trigger says one is still pending or running.

CTR drop: per variant, the CTR of the last `recent_s` against the CTR of the `baseline_s` before it, a one-sided
two-proportion z-test (p < `p`) that also needs a relative fall of at least `min_relative` and `min_impressions`
in each span. The baseline is the variant's own (not another variant's, not the training reference): a canary or
a variant with a weaker ranker is not a drop.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import Counter, Gauge

from recsys.common.config import ConfigError
from recsys.model import requests
from recsys.monitoring import metrics
from recsys.monitoring.aggregates import bucket_of
from recsys.monitoring.alerts import AlertSink
from recsys.monitoring.settings import MonitoringSettings
from recsys.monitoring.store import MonitoringStore

log = logging.getLogger("recsys.monitoring.actions")

RETRAINS = Counter("recsys_monitoring_retrains_started_total", "Retrains that drift started", ["reason"])
DEBOUNCED = Counter("recsys_monitoring_retrains_debounced_total",
                    "Drift signals that started no retrain (one pending or running, or too soon)", ["why"])
CTR_DROP = Gauge("recsys_monitoring_ctr_drop", "Relative CTR fall of a variant against its own baseline "
                 "(recent span vs the span before; 0 when not lower)", ["variant"])

_LAST_RETRAIN_KEY = "actions.last_retrain_s"
SIGNALS = ("data_drift", "prediction_drift", "ctr_drift", "ctr_drop")


class RetrainTrigger(Protocol):
    """Starts one retrain; returns its name, or None when one is already pending or running."""

    def trigger(self, reason: str) -> str | None: ...


class FileRetrainRequest:
    """The local stack's trigger: a request in the registry that the lifecycle loop of `recsys serve` runs."""

    def __init__(self, models_dir) -> None:
        self.models_dir = models_dir

    def trigger(self, reason: str) -> str | None:
        if requests.pending(self.models_dir):
            return None
        return str(requests.request_retrain(self.models_dir, reason))


@dataclass(frozen=True)
class CtrDrop:
    """A variant whose recent CTR is significantly below its own baseline."""

    variant: str
    baseline_ctr: float
    recent_ctr: float
    baseline_impressions: int
    recent_impressions: int
    p_value: float

    @property
    def relative(self) -> float:
        return 1.0 - self.recent_ctr / self.baseline_ctr if self.baseline_ctr > 0 else 0.0

    def describe(self) -> str:
        return (f"variant {self.variant}: CTR {self.recent_ctr:.4f} over {self.recent_impressions} impressions, "
                f"{self.relative:.0%} below its baseline {self.baseline_ctr:.4f} "
                f"({self.baseline_impressions} impressions, p={self.p_value:.2g})")


def one_sided_drop_p(base_clicks: int, base_n: int, recent_clicks: int, recent_n: int) -> float:
    """p-value of H0 "recent CTR >= baseline CTR" (pooled two-proportion z-test)."""
    if base_n <= 0 or recent_n <= 0:
        return 1.0
    pooled = (base_clicks + recent_clicks) / (base_n + recent_n)
    if not 0.0 < pooled < 1.0:
        return 1.0
    se = math.sqrt(pooled * (1 - pooled) * (1 / base_n + 1 / recent_n))
    z = (base_clicks / base_n - recent_clicks / recent_n) / se
    return 0.5 * math.erfc(z / math.sqrt(2))


def ctr_drops(store: MonitoringStore, settings: MonitoringSettings, now_s: float) -> list[CtrDrop]:
    """Every variant whose CTR dropped (see the module docstring); sets the CTR drop gauge of each."""
    bucket_s = settings.bucket_s
    # The bucket still filling and those whose clicks may still come are left out.
    last = bucket_of(int((now_s - settings.ctr_maturity_s) * 1000), bucket_s) - bucket_s
    recent_first = last - settings.ctr_drop_recent_s + bucket_s
    base_first = recent_first - settings.ctr_drop_baseline_s
    recent = store.variant_totals(recent_first, last)
    base = store.variant_totals(base_first, recent_first - bucket_s)
    covered = store.variant_totals(base_first, base_first)  # a baseline must span its whole length, not a
    drops = []  # service's first seconds (a fresh stack's CTR starts high: users' best items are not yet seen)
    for variant, (n, c) in recent.items():
        metrics.CTR.labels(variant).set(c / n if n else 0.0)
        bn, bc = base.get(variant, (0, 0))
        if min(n, bn) < settings.ctr_drop_min_impressions or bc == 0 or covered.get(variant, (0, 0))[0] == 0:
            CTR_DROP.labels(variant).set(0.0)
            continue
        drop = CtrDrop(variant, bc / bn, c / n, bn, n, one_sided_drop_p(bc, bn, c, n))
        CTR_DROP.labels(variant).set(max(0.0, drop.relative))
        if drop.p_value < settings.ctr_drop_p and drop.relative >= settings.ctr_drop_min_relative:
            drops.append(drop)
    return drops


class DriftActions:
    """Turns drift signals into (debounced) retrains; `check` is one round, `start` runs rounds in a thread."""

    def __init__(self, store: MonitoringStore, alerts: AlertSink, trigger: RetrainTrigger | None,
                 settings: MonitoringSettings, clock=time.time) -> None:
        self.store = store
        self.alerts = alerts
        self.trigger = trigger
        self.settings = settings
        self.clock = clock
        self.on = {s for s in settings.retrain_on if s in SIGNALS}
        self._alert_rowid = store.last_alert_rowid()  # alerts from before this process started were acted on then
        self._dropping: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="drift-actions", daemon=True)

    def start(self) -> DriftActions:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _loop(self) -> None:
        while not self._stop.wait(self.settings.actions_check_s):
            try:
                self.check()
            except Exception:  # noqa: BLE001 - one failed round must not end the loop
                log.exception("drift action check failed")

    def signals(self) -> list[str]:
        """The reasons to retrain found in this round (each new alert, each variant newly dropping)."""
        reasons = []
        rows = self.store.alerts_after(self._alert_rowid)
        if rows:
            self._alert_rowid = rows[-1][0]
        wanted = {kind for _, kind in rows if kind in self.on and kind != "ctr_drop"}  # drops: tested below
        if "data_drift" in wanted and not self._dataset_drift_reported():
            wanted.discard("data_drift")  # a few drifted columns alone do not call for a retrain
        reasons += sorted(wanted)
        drops = ctr_drops(self.store, self.settings, self.clock())
        for drop in drops:
            if drop.variant not in self._dropping:  # one alert per drop, not one per round
                self.alerts.fire("ctr_drop", drop.describe())
                if "ctr_drop" in self.on:
                    reasons.append(f"ctr_drop:{drop.variant}")
        self._dropping = {d.variant for d in drops}
        return reasons

    def _dataset_drift_reported(self) -> bool:
        latest = self.store.reports(1)
        return bool(latest) and latest[0].dataset_drift

    def check(self) -> str | None:
        """One round: read the signals and start a retrain when one calls for it; returns the retrain's name."""
        reasons = self.signals()
        if not reasons or self.trigger is None:
            return None
        reason = ",".join(reasons)
        now = self.clock()
        last = self._last_retrain_s()
        if last is not None and now - last < self.settings.retrain_min_interval_s:
            DEBOUNCED.labels("interval").inc()
            log.info("drift signal within the retrain interval", extra={"reason": reason, "since_s": now - last})
            return None
        started = self.trigger.trigger(reason)
        if started is None:
            DEBOUNCED.labels("pending").inc()
            log.info("drift signal while a retrain is pending or running", extra={"reason": reason})
            return None
        self.store.set_meta(_LAST_RETRAIN_KEY, repr(now).encode())
        RETRAINS.labels(reasons[0].split(":")[0]).inc()
        self.alerts.fire("retrain_started", f"retrain {started} started by {reason}")
        return started

    def _last_retrain_s(self) -> float | None:
        stored = self.store.get_meta(_LAST_RETRAIN_KEY)
        return float(stored.decode()) if stored else None


def build_trigger(settings: MonitoringSettings) -> RetrainTrigger | None:
    """The trigger RECSYS_MONITORING_RETRAIN_TRIGGER names (None for off)."""
    kind = settings.retrain_trigger
    if kind in ("", "off", "none"):
        return None
    if kind == "file":
        return FileRetrainRequest(settings.models_dir)
    if kind == "kubernetes":
        from recsys.monitoring.kube_job import KubernetesRetrainJob  # the client is loaded only where it is used

        return KubernetesRetrainJob(settings.retrain_cronjob, settings.namespace)
    raise ConfigError(f"RECSYS_MONITORING_RETRAIN_TRIGGER must be file, kubernetes or off (got {kind!r})")
