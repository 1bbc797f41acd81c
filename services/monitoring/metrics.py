"""Prometheus metrics of the online experiment: impressions, clicks and CTR per A/B variant.

Counted when a batch is persisted (so a restart that replays nothing counts nothing twice); Grafana and the
alert rules take the CTR as rate(clicks) / rate(impressions), the gauge is the CTR of the last window."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

IMPRESSIONS = Counter("recsys_monitoring_variant_impressions_total", "Items shown, per A/B variant", ["variant"])
CLICKS = Counter("recsys_monitoring_variant_clicks_total", "Clicks joined to an impression, per A/B variant",
                 ["variant"])
CTR = Gauge("recsys_monitoring_variant_ctr", "CTR per A/B variant over the online-metrics window the dashboard shows",
            ["variant"])


def count_cells(cells: dict[tuple[int, str, int], list]) -> None:
    """Add one persisted batch's cells ((bucket, variant, position) -> [impressions, clicks, ...])."""
    per_variant: dict[str, list[int]] = {}
    for (_bucket, variant, _position), row in cells.items():
        acc = per_variant.setdefault(variant, [0, 0])
        acc[0] += int(row[0])
        acc[1] += int(row[1])
    for variant, (impressions, clicks) in per_variant.items():
        if impressions:
            IMPRESSIONS.labels(variant).inc(impressions)
        if clicks:
            CLICKS.labels(variant).inc(clicks)
