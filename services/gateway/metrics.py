"""Prometheus metrics of Recommend as its callers see it: answers per variant (fully ranked or degraded),
degraded answers by reason, and the time each hop took."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from recsys.v1 import recommend_pb2

RECOMMENDS = Counter("recsys_gateway_recommend_total", "Recommend answers by variant and outcome (full or degraded)",
                     ["variant", "outcome"])
DEGRADED = Counter("recsys_gateway_degraded_total", "Degraded Recommend answers by reason (hop: status)", ["reason"])
HOP_SECONDS = Histogram(
    "recsys_gateway_hop_seconds",
    "Time each hop of Recommend took, as the gateway measured it (skipped hops are not counted)",
    ["hop"],
    buckets=(0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.1, 0.25),
)


def observe(response: recommend_pb2.RecommendResponse) -> None:
    """Count one answer: its outcome, the reasons it degraded, and each hop that ran."""
    RECOMMENDS.labels(response.variant or "none", "degraded" if response.degraded else "full").inc()
    for reason in response.degraded_reasons:
        DEGRADED.labels(reason[:80]).inc()
    for timing in response.timings:
        if timing.ms > 0:
            HOP_SECONDS.labels(timing.hop).observe(timing.ms / 1000)
