"""The data each dashboard page draws, as JSON-ready dicts: the overview from the scraped metrics, the
experiments, drift and alerts from the monitoring store, the models from the registry and the traffic."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recsys.model import rollout
from recsys.model.registry import Registry
from recsys.monitoring.aggregates import bucket_of, summarize
from recsys.monitoring.dashboard import series
from recsys.monitoring.dashboard.scrape import MetricsScraper, Scrape
from recsys.monitoring.settings import MonitoringSettings
from recsys.monitoring.store import MonitoringStore, now_ms

VIEWS = ("overview", "experiments", "drift", "models", "alerts")
RATE_WINDOW_S = 30.0  # like rate(x[30s]): each overview point compares with the round this long before
MAX_POINTS = 60
Z95 = 1.959964


def _iso(ts_s: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts_s))


def _not_health(labels: dict[str, str]) -> bool:
    return labels.get("service", "") != "grpc.health.v1.Health" and not labels.get("method", "").startswith("grpc.")


def wilson(clicks: int, n: int) -> tuple[float, float]:
    """95% Wilson interval of a click-through rate."""
    if n <= 0:
        return 0.0, 0.0
    p = clicks / n
    denom = 1 + Z95 * Z95 / n
    centre = (p + Z95 * Z95 / (2 * n)) / denom
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95 * Z95 / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def _pairs(rounds: list[Scrape]) -> list[tuple[Scrape, Scrape]]:
    """(earlier, later) for each round that has one at least RATE_WINDOW_S before it (at most MAX_POINTS)."""
    out = []
    j = 0
    for i, new in enumerate(rounds):
        while j + 1 < i and rounds[j + 1].at <= new.at - RATE_WINDOW_S:
            j += 1
        if j < i and new.at - rounds[j].at >= RATE_WINDOW_S * 0.5:
            out.append((rounds[j], new))
    step = max(1, math.ceil(len(out) / MAX_POINTS))
    return out[::-1][::step][::-1]


def _put(table: dict[str, list], key: str, index: int, length: int, value: float | None) -> None:
    table.setdefault(key, [None] * length)[index] = value


@dataclass
class DashboardData:
    """Everything the pages read; one per monitoring process."""

    store: MonitoringStore
    settings: MonitoringSettings
    scraper: MetricsScraper
    served_models: Callable[[], dict[str, tuple[str, str, int]]] = dict
    alert_open_s: float = 1800.0
    clock: Callable[[], float] = time.time
    _registry: Registry | None = field(default=None, init=False)

    def view(self, name: str, **params: Any) -> dict[str, Any]:
        """The data of one page (a name of VIEWS)."""
        return getattr(self, name)(**params)

    # -- overview ---------------------------------------------------------------------------------------
    def overview(self) -> dict[str, Any]:
        """Requests/s, p50/p99 per hop and per service, degraded share by reason and errors, over time."""
        rounds = self.scraper.history()
        pairs = _pairs(rounds)
        n = len(pairs)
        out: dict[str, Any] = {
            "time": [_iso(new.at) for _, new in pairs], "rate_window_s": RATE_WINDOW_S,
            "requests_per_s": {}, "errors_per_s": {}, "hop_p50_ms": {}, "hop_p99_ms": {},
            "service_p50_ms": {}, "service_p99_ms": {}, "degraded_share": {}, "degraded_share_all": [None] * n,
            "answers_per_s": [None] * n,
        }
        for i, (old, new) in enumerate(pairs):
            dt = max(1e-9, new.at - old.at)
            for (svc, method), v in series.increase(old, new, "recsys_grpc_requests_total", ("service", "method"),
                                                    _not_health).items():
                _put(out["requests_per_s"], f"{svc} {method}", i, n, v / dt)
            for (svc, code), v in series.increase(old, new, "recsys_grpc_errors_total", ("service", "code"),
                                                  _not_health).items():
                _put(out["errors_per_s"], f"{svc} {code}", i, n, v / dt)
            for hop, qs in series.quantiles(old, new, "recsys_gateway_hop_seconds", "hop", (0.5, 0.99)).items():
                _put(out["hop_p50_ms"], hop, i, n, None if qs[0.5] is None else qs[0.5] * 1000)
                _put(out["hop_p99_ms"], hop, i, n, None if qs[0.99] is None else qs[0.99] * 1000)
            for svc, qs in series.quantiles(old, new, "recsys_grpc_latency_seconds", "service", (0.5, 0.99),
                                            _not_health).items():
                _put(out["service_p50_ms"], svc, i, n, None if qs[0.5] is None else qs[0.5] * 1000)
                _put(out["service_p99_ms"], svc, i, n, None if qs[0.99] is None else qs[0.99] * 1000)
            answers = sum(series.increase(old, new, "recsys_gateway_recommend_total", ()).values())
            out["answers_per_s"][i] = answers / dt
            degraded = series.increase(old, new, "recsys_gateway_recommend_total", ("outcome",))
            out["degraded_share_all"][i] = degraded.get(("degraded",), 0.0) / answers if answers else None
            for (reason,), v in series.increase(old, new, "recsys_gateway_degraded_total", ("reason",)).items():
                _put(out["degraded_share"], reason, i, n, v / answers if answers else None)
        last = rounds[-1] if rounds else None
        out["targets"] = [
            {"name": name, "address": address or "(this process)",
             "up": bool(last and last.targets.get(name) is not None)}
            for name, address in self.scraper.targets.items()
        ]
        out["current"] = {
            "answers_per_s": out["answers_per_s"][-1] if n else None,
            "recommend_p99_ms": (out["hop_p99_ms"].get("total") or [None])[-1],
            "degraded_share": out["degraded_share_all"][-1] if n else None,
            "errors_per_s": sum((v[-1] or 0.0) for v in out["errors_per_s"].values()) if n else None,
            "targets_up": sum(t["up"] for t in out["targets"]),
            "targets": len(out["targets"]),
        }
        return out

    # -- experiments ------------------------------------------------------------------------------------
    def experiments(self, window_s: int = 3600) -> dict[str, Any]:
        """CTR per variant over time (95% intervals), lift against the control, impressions, position CTR."""
        s = self.settings
        window_s = min(max(int(window_s), s.bucket_s), s.retention_s)
        min_bucket = bucket_of(now_ms() - window_s * 1000, s.bucket_s)
        summary = summarize(self.store.window_cells(min_bucket), 0, 0, {}, s.control_variant, "")
        rows = self.store.variant_series(min_bucket)
        buckets = sorted({b for b, _, _, _ in rows})
        step = max(1, math.ceil(len(buckets) / MAX_POINTS))
        group = {b: buckets[(i // step) * step] for i, b in enumerate(buckets)}
        acc: dict[str, dict[int, list[int]]] = {}
        for bucket, variant, impressions, clicks in rows:
            cell = acc.setdefault(variant, {}).setdefault(group[bucket], [0, 0])
            cell[0] += impressions
            cell[1] += clicks
        over_time = {}
        for variant, points in sorted(acc.items()):
            keys = sorted(points)
            ctr = [points[k][1] / points[k][0] if points[k][0] else None for k in keys]
            ci = [wilson(points[k][1], points[k][0]) for k in keys]
            over_time[variant] = {
                "time": [_iso(k) for k in keys], "ctr": ctr, "impressions": [points[k][0] for k in keys],
                "ci_low": [c[0] for c in ci], "ci_high": [c[1] for c in ci],
            }
        return {
            "window_s": window_s, "control": s.control_variant, "over_time": over_time,
            "variants": [
                {"variant": v.variant, "impressions": v.totals.impressions, "clicks": v.totals.clicks,
                 "ctr": v.totals.ctr, "ctr_ci": wilson(v.totals.clicks, v.totals.impressions),
                 "lift": v.lift.ctr_lift, "lift_low": v.lift.ctr_low, "lift_high": v.lift.ctr_high}
                for v in summary.variants
            ],
            "positions": [{"position": p, "impressions": t.impressions, "clicks": t.clicks, "ctr": t.ctr}
                          for p, t in summary.positions],
        }

    # -- drift ------------------------------------------------------------------------------------------
    def drift(self, limit: int = 100) -> dict[str, Any]:
        """Each closed window's verdict and per-column scores, oldest first, linked to its Evidently report."""
        reports = list(reversed(self.store.reports(max(1, min(int(limit), 500)))))
        columns: dict[str, dict[str, Any]] = {}
        for i, r in enumerate(reports):
            for c in r.columns:
                col = columns.setdefault(c["column"], {"method": c.get("method", ""), "score": [None] * len(reports),
                                                       "drifted": [None] * len(reports)})
                col["score"][i] = c.get("score")
                col["drifted"][i] = bool(c.get("drifted"))
        return {
            "windows": [
                {"report_id": r.report_id, "end": _iso(r.window_end_ms / 1000), "start": _iso(r.window_start_ms / 1000),
                 "rows": r.rows, "dataset_drift": r.dataset_drift, "drifted_share": r.drifted_share,
                 "prediction_drift": r.prediction_drift, "ctr": r.ctr, "ctr_drift": r.ctr_drift,
                 "report_url": f"reports/{r.report_id}" if r.report_path else ""}
                for r in reports
            ],
            "columns": columns,
            "share_threshold": self.settings.drift_share,
        }

    def report_path(self, report_id: str) -> Path | None:
        """The Evidently HTML of one window, when drawn and inside the reports folder."""
        record = self.store.report(report_id)
        if record is None or not record.report_path:
            return None
        path = Path(record.report_path).resolve()
        root = self.settings.reports_dir.resolve()
        return path if path.is_file() and root in path.parents else None

    # -- models -----------------------------------------------------------------------------------------
    def models(self) -> dict[str, Any]:
        """Registry versions, the canary, which variant serves which version, and the lifecycle history."""
        registry = Registry(self.settings.models_dir)
        versions = []
        if registry.root.exists():
            for version in registry.versions():
                try:
                    manifest = registry.manifest(version)
                except (OSError, ValueError):
                    continue
                versions.append({"version": version, "created_at": manifest.get("created_at", ""),
                                 "metrics": _flat_numbers(manifest.get("metrics", {})),
                                 "source": manifest.get("source") or manifest.get("reason") or ""})
        latest = registry.latest() if registry.root.exists() else None
        canary = rollout.current(registry) if registry.root.exists() else None
        now = now_ms()
        served = [{"variant": v, "model": m, "version": ver, "seen_s_ago": round((now - ts) / 1000, 1)}
                  for v, (m, ver, ts) in sorted(self.served_models().items())]
        history = registry.history() if registry.root.exists() else []
        return {
            "latest": latest, "versions": versions, "served": served,
            "canary": None if canary is None else {"champion": canary.champion, "challenger": canary.challenger,
                                                   "share": canary.share, "started": _iso(canary.started_at),
                                                   "variant": canary.variant},
            "history": history[-200:][::-1],
        }

    # -- alerts -----------------------------------------------------------------------------------------
    def alerts(self, limit: int = 200) -> dict[str, Any]:
        """Alerts, newest first; open: raised within the last `alert_open_s` seconds."""
        now = self.clock() * 1000
        rows = [
            {"alert_id": a.alert_id, "created": _iso(a.created_ms / 1000), "kind": a.kind, "message": a.message,
             "report_url": f"reports/{a.report_id}" if a.report_id else "",
             "open": now - a.created_ms < self.alert_open_s * 1000}
            for a in self.store.alerts(max(1, min(int(limit), 1000)))
        ]
        return {"open": [a for a in rows if a["open"]], "past": [a for a in rows if not a["open"]],
                "open_s": self.alert_open_s}


def _flat_numbers(d: Any, prefix: str = "") -> dict[str, float]:
    """The numeric leaves of a nested dict, keys joined by '.' (a manifest's metrics)."""
    out: dict[str, float] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(_flat_numbers(v, f"{prefix}{k}."))
    elif isinstance(d, (int, float)) and not isinstance(d, bool):
        out[prefix.rstrip(".")] = float(d)
    return out
