"""Generate the Grafana dashboards the recsys chart ships (helm/recsys/dashboards/*.json).

    python helm/tools/dashboards.py          # write helm/recsys/dashboards/<name>.json
    python helm/tools/dashboards.py --check  # exit 1 when a checked-in dashboard differs from the generated one

Each dashboard is a list of panels (title, PromQL targets, unit), laid out two per row. Every query reads the
Prometheus of the `datasource` variable and the release's namespace (`namespace` variable); the chart puts each
file in a ConfigMap for the Grafana sidecar (templates/observability.yaml). tests/unit/test_grafana_dashboards.py
checks the structure and that every metric a query names is one the services export.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parents[1] / "recsys" / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
NS = 'namespace="$namespace"'
RATE = "$__rate_interval"


@dataclass
class Panel:
    title: str
    targets: list[tuple[str, str]]  # (expr, legend)
    unit: str = "short"
    description: str = ""
    kind: str = "timeseries"
    width: int = 12
    extra: dict[str, Any] = field(default_factory=dict)


def quantiles(title: str, bucket: str, by: str, where: str = NS, unit: str = "s", qs=(0.5, 0.99)) -> Panel:
    """p50/p99 (by default) of a histogram, per `by` label."""
    legend = "{{" + by + "}}" if by else ""
    grouping = f"{by}, le" if by else "le"
    targets = [
        (
            f"histogram_quantile({q}, sum by ({grouping}) (rate({bucket}{{{where}}}[{RATE}])))",
            f"p{round(q * 100)} {legend}".strip(),
        )
        for q in qs
    ]
    return Panel(title, targets, unit)


def share(num: str, den: str, by: str = "") -> str:
    grouping = f" by ({by})" if by else ""
    return f"sum{grouping} (rate({num}[{RATE}])) / sum{grouping} (rate({den}[{RATE}]))"


DASHBOARDS: dict[str, tuple[str, list[Panel]]] = {
    "overview": (
        "recsys / Overview",
        [
            Panel(
                "Requests per second by service and method",
                [
                    (
                        f"sum by (service, method) (rate(recsys_grpc_requests_total{{{NS}}}[{RATE}]))",
                        "{{service}} {{method}}",
                    )
                ],
                "reqps",
            ),
            Panel(
                "gRPC error share by service (non-OK codes)",
                [
                    (
                        share(f"recsys_grpc_errors_total{{{NS}}}", f"recsys_grpc_requests_total{{{NS}}}", "service"),
                        "{{service}}",
                    )
                ],
                "percentunit",
            ),
            quantiles(
                "Gateway Recommend latency",
                "recsys_grpc_latency_seconds_bucket",
                "",
                f'service="gateway", method="Recommend", {NS}',
            ),
            quantiles("Latency per gateway hop", "recsys_gateway_hop_seconds_bucket", "hop"),
            quantiles(
                "p99 latency per service",
                "recsys_grpc_latency_seconds_bucket",
                "service",
                f'method!~"Check|Watch", {NS}',
                qs=(0.99,),
            ),
            quantiles("Ranking replica latency (Ray)", "ray_recsys_ranking_latency_ms_bucket", "method", unit="ms"),
            Panel(
                "Degraded share of Recommend answers by reason",
                [
                    (
                        f"sum by (reason) (rate(recsys_gateway_degraded_total{{{NS}}}[{RATE}]))"
                        f" / scalar(sum (rate(recsys_gateway_recommend_total{{{NS}}}[{RATE}])))",
                        "{{reason}}",
                    ),
                    (
                        # `or vector(0)`: 0, not an empty panel, while no answer has degraded yet
                        f'(sum (rate(recsys_gateway_recommend_total{{outcome="degraded", {NS}}}[{RATE}])) or vector(0))'
                        f" / sum (rate(recsys_gateway_recommend_total{{{NS}}}[{RATE}]))",
                        "all degraded",
                    ),
                ],
                "percentunit",
                "A degraded answer may have several reasons (one per failed hop).",
            ),
            Panel(
                "Gateway admission",
                [
                    (f"sum by (reason) (rate(recsys_gateway_shed_total{{{NS}}}[{RATE}]))", "shed / s ({{reason}})"),
                    (f"sum (recsys_gateway_full_path_in_flight{{{NS}}})", "full path in flight"),
                    (f"sum (recsys_gateway_full_path_limit{{{NS}}})", "full path limit (adaptive)"),
                ],
                description="Shed: answered from fallbacks because no full-path slot freed in time (busy) or the "
                "request's budget was shorter than a full path takes (deadline).",
            ),
            Panel(
                "Kafka consumer lag",
                [(f"max by (consumer, topic) (recsys_kafka_consumer_lag_records{{{NS}}})", "{{consumer}} {{topic}}")],
                "short",
                "Records each consumer group has yet to process, per topic.",
            ),
            Panel(
                "Candidates served without Milvus",
                [
                    (
                        f"sum by (method, reason) (rate(recsys_candidates_degraded_total{{{NS}}}[{RATE}]))",
                        "{{method}} {{reason}}",
                    )
                ],
                "reqps",
            ),
        ],
    ),
    "experiments": (
        "recsys / Experiments",
        [
            Panel(
                "CTR per variant (15m)",
                [
                    (
                        f"sum by (variant) (rate(recsys_monitoring_variant_clicks_total{{{NS}}}[15m]))"
                        f" / sum by (variant) (rate(recsys_monitoring_variant_impressions_total{{{NS}}}[15m]))",
                        "{{variant}}",
                    )
                ],
                "percentunit",
            ),
            Panel(
                "CTR per variant (monitoring window)",
                [(f"max by (variant) (recsys_monitoring_variant_ctr{{{NS}}})", "{{variant}}")],
                "percentunit",
            ),
            Panel(
                "Impressions per second by variant",
                [
                    (
                        f"sum by (variant) (rate(recsys_monitoring_variant_impressions_total{{{NS}}}[{RATE}]))",
                        "{{variant}}",
                    )
                ],
                "short",
            ),
            Panel(
                "Recommend answers per second by variant and outcome",
                [
                    (
                        f"sum by (variant, outcome) (rate(recsys_gateway_recommend_total{{{NS}}}[{RATE}]))",
                        "{{variant}} {{outcome}}",
                    )
                ],
                "reqps",
            ),
            Panel(
                "Canary CTR lift (95% interval)",
                [
                    (f"max (recsys_canary_ctr_lift_low{{{NS}}})", "low"),
                    (f"max (recsys_canary_ctr_lift_high{{{NS}}})", "high"),
                ],
                "percentunit",
                "Set by the canary decision (`recsys canary decide`), where its metrics are collected.",
            ),
            Panel(
                "Canary share and impressions",
                [
                    (f"max (recsys_gateway_canary_share{{{NS}}})", "share of users"),
                    (f"max (recsys_canary_impressions{{{NS}}})", "canary impressions"),
                ],
                extra={
                    "fieldConfig": {
                        "defaults": {"unit": "short"},
                        "overrides": [
                            {
                                "matcher": {"id": "byName", "options": "share of users"},
                                "properties": [{"id": "unit", "value": "percentunit"}],
                            }
                        ],
                    }
                },
            ),
            Panel(
                "Canary decisions per hour by action",
                [(f"sum by (action) (increase(recsys_canary_decisions_total{{{NS}}}[1h]))", "{{action}}")],
            ),
        ],
    ),
    "drift": (
        "recsys / Drift",
        [
            Panel(
                "Drift score per column",
                [(f"max by (column) (recsys_monitoring_column_drift_score{{{NS}}})", "{{column}}")],
            ),
            Panel(
                "Drifted columns (1 = drifted)",
                [(f"max by (column) (recsys_monitoring_column_drifted{{{NS}}})", "{{column}}")],
            ),
            Panel(
                "Drifted share of feature columns",
                [(f"max (recsys_monitoring_drifted_share{{{NS}}})", "drifted share")],
                "percentunit",
            ),
            Panel(
                "Drift flags (1 = drifted)",
                [
                    (f"max (recsys_monitoring_dataset_drift{{{NS}}})", "dataset"),
                    (f"max (recsys_monitoring_prediction_drift{{{NS}}})", "prediction"),
                    (f"max (recsys_monitoring_ctr_drift{{{NS}}})", "CTR"),
                ],
            ),
            Panel("Window CTR", [(f"max (recsys_monitoring_window_ctr{{{NS}}})", "CTR")], "percentunit"),
            Panel(
                "CTR drop per variant (relative)",
                [(f"max by (variant) (recsys_monitoring_ctr_drop{{{NS}}})", "{{variant}}")],
                "percentunit",
            ),
            quantiles("Drift report time", "recsys_monitoring_drift_report_seconds_bucket", ""),
        ],
    ),
    "models": (
        "recsys / Models",
        [
            Panel(
                "Model lifecycle events per hour by kind",
                [(f"max by (kind) (delta(recsys_model_lifecycle_events{{{NS}}}[1h]))", "{{kind}}")],
                description="Changes of the registry's history (gate, canary_started, canary_promoted, ...).",
            ),
            Panel(
                "Model lifecycle events so far by kind",
                [(f"max by (kind) (recsys_model_lifecycle_events{{{NS}}})", "{{kind}}")],
            ),
            Panel(
                "Canary in progress",
                [
                    (
                        # the info series exists only while a canary runs: 0, not an empty panel, otherwise
                        f"max by (challenger, champion) (recsys_gateway_canary{{{NS}}}) or vector(0)",
                        "{{challenger}} vs {{champion}}",
                    ),
                    (f"max (recsys_gateway_canary_share{{{NS}}})", "share"),
                ],
            ),
            Panel(
                "Retrains started per hour by reason",
                [
                    (f"sum by (reason) (increase(recsys_monitoring_retrains_started_total{{{NS}}}[1h]))", "{{reason}}"),
                    (
                        f"sum by (why) (increase(recsys_monitoring_retrains_debounced_total{{{NS}}}[1h]))",
                        "debounced: {{why}}",
                    ),
                ],
            ),
            Panel(
                "Monitoring alerts per hour by kind",
                [(f"sum by (kind) (increase(recsys_monitoring_alerts_total{{{NS}}}[1h]))", "{{kind}}")],
            ),
            Panel(
                "Rank requests per second by model and version (Ray)",
                [
                    (
                        f"sum by (model, version) (rate(ray_recsys_ranking_requests_total{{{NS}}}[{RATE}]))",
                        "{{model}} {{version}}",
                    )
                ],
                "reqps",
            ),
            quantiles("Model time per batch (Ray)", "ray_recsys_ranking_model_ms_bucket", "model", unit="ms"),
        ],
    ),
    "streams": (
        "recsys / Streams",
        [
            Panel(
                "Kafka consumer lag by consumer and topic",
                [(f"max by (consumer, topic) (recsys_kafka_consumer_lag_records{{{NS}}})", "{{consumer}} {{topic}}")],
            ),
            Panel("Event log lag by topic", [(f"sum by (topic) (recsys_eventlog_lag_records{{{NS}}})", "{{topic}}")]),
            Panel(
                "Event log rows per second by table",
                [(f"sum by (table) (rate(recsys_eventlog_rows_total{{{NS}}}[{RATE}]))", "{{table}}")],
            ),
            Panel(
                "Event log bytes per second by table",
                [(f"sum by (table) (rate(recsys_eventlog_bytes_total{{{NS}}}[{RATE}]))", "{{table}}")],
                "Bps",
            ),
            Panel(
                "Monitoring messages per second by topic",
                [(f"sum by (topic) (rate(recsys_monitoring_messages_total{{{NS}}}[{RATE}]))", "{{topic}}")],
            ),
            Panel(
                "Dead letters per second",
                [
                    (
                        f"sum by (topic) (rate(recsys_monitoring_dead_letters_total{{{NS}}}[{RATE}]))",
                        "monitoring {{topic}}",
                    ),
                    (
                        f"sum by (topic) (rate(recsys_eventlog_dead_letters_total{{{NS}}}[{RATE}]))",
                        "eventlog {{topic}}",
                    ),
                ],
            ),
            Panel(
                "Gateway events to Kafka",
                [
                    (f"sum by (topic) (rate(recsys_gateway_events_sent_total{{{NS}}}[{RATE}]))", "sent {{topic}} / s"),
                    (f"sum (rate(recsys_gateway_events_dropped_total{{{NS}}}[{RATE}]))", "dropped / s"),
                    (f"sum (recsys_gateway_events_pending{{{NS}}})", "pending"),
                ],
            ),
            quantiles("Event log flush time", "recsys_eventlog_flush_seconds_bucket", ""),
        ],
    ),
}


def panel_json(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "datasource": DATASOURCE,
        "gridPos": {"h": 8, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
        "options": {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        "targets": [
            {"datasource": DATASOURCE, "expr": expr, "legendFormat": legend or "__auto", "refId": chr(ord("A") + i)}
            for i, (expr, legend) in enumerate(panel.targets)
        ],
    }
    if panel.description:
        out["description"] = panel.description
    out.update(panel.extra)
    return out


def dashboard(name: str, title: str, panels: list[Panel]) -> dict[str, Any]:
    laid_out, x, y = [], 0, 0
    for i, panel in enumerate(panels, start=1):
        if x + panel.width > 24:
            x, y = 0, y + 8
        laid_out.append(panel_json(panel, i, x, y))
        x += panel.width
    return {
        "uid": f"recsys-{name}",
        "title": title,
        "tags": ["recsys"],
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "timezone": "",
        "links": [{"type": "dashboards", "tags": ["recsys"], "asDropdown": True, "title": "recsys"}],
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Data source",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                    "refresh": 1,
                    "regex": "",
                },
                {
                    "name": "namespace",
                    "label": "Namespace",
                    "type": "query",
                    "datasource": DATASOURCE,
                    "query": {"query": "label_values(recsys_grpc_requests_total, namespace)", "refId": "namespace"},
                    "definition": "label_values(recsys_grpc_requests_total, namespace)",
                    "current": {},
                    "hide": 0,
                    "refresh": 2,
                    "sort": 1,
                    "includeAll": False,
                    "multi": False,
                },
            ]
        },
        "panels": laid_out,
    }


def render(name: str) -> str:
    title, panels = DASHBOARDS[name]
    return json.dumps(dashboard(name, title, panels), indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    stale = []
    for name in DASHBOARDS:
        path = OUT / f"{name}.json"
        if args.check:
            if not path.exists() or path.read_text() != render(name):
                stale.append(str(path.relative_to(OUT.parents[1])))
        else:
            OUT.mkdir(exist_ok=True)
            path.write_text(render(name))
    extra = sorted(p.name for p in OUT.glob("*.json") if p.stem not in DASHBOARDS) if OUT.exists() else []
    if stale or extra:
        print(f"stale (run python helm/tools/dashboards.py): {stale}; not generated: {extra}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
