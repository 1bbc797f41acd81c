"""One canary decision: the monitoring service's figures for the canary variant, the rule
(`recsys.model.rollout.decide`), and the registry change it calls for (promote or roll back)."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass

import grpc
from prometheus_client import Counter, Gauge

from recsys.common.clients import channel, credential_metadata, request_metadata
from recsys.model import rollout
from recsys.model.registry import Registry
from recsys.v1 import monitoring_pb2, monitoring_pb2_grpc

log = logging.getLogger("recsys.lifecycle.canary")

DECISIONS = Counter("recsys_canary_decisions_total", "Canary checks by outcome", ["action"])
LIFT_LOW = Gauge("recsys_canary_ctr_lift_low", "Lower bound of the canary's CTR-lift interval (95%)")
LIFT_HIGH = Gauge("recsys_canary_ctr_lift_high", "Upper bound of the canary's CTR-lift interval (95%)")
IMPRESSIONS = Gauge("recsys_canary_impressions", "Impressions the canary variant has served")

WINDOW_STEP_S = 60  # the monitoring service's default bucket; a window must be a whole number of buckets


@dataclass(frozen=True)
class CanaryFigures:
    """The canary variant against control, over the canary's lifetime."""

    variant: str
    impressions: int
    clicks: int
    ctr: float
    control_ctr: float
    lift: float
    lift_low: float
    lift_high: float
    window_s: int


@dataclass(frozen=True)
class CanaryCheck:
    rollout: rollout.Rollout
    figures: CanaryFigures
    verdict: rollout.Verdict
    latest: str | None


def figures(monitoring_addr: str, canary: rollout.Rollout, timeout_s: float = 5.0) -> CanaryFigures:
    """Ask the monitoring service for the canary variant's CTR and lift since the canary started."""
    age = max(0.0, time.time() - canary.started_at)
    window = max(WINDOW_STEP_S, math.ceil(age / WINDOW_STEP_S) * WINDOW_STEP_S)
    metadata = (*request_metadata(), *credential_metadata())
    with channel(monitoring_addr) as ch:
        stub = monitoring_pb2_grpc.MonitoringServiceStub(ch)
        try:
            reply = stub.GetOnlineMetrics(monitoring_pb2.GetOnlineMetricsRequest(window_seconds=window),
                                          timeout=timeout_s, metadata=metadata)
        except grpc.RpcError as exc:  # a bucket size other than 60 s: the whole retained history instead
            if exc.code() != grpc.StatusCode.INVALID_ARGUMENT:
                raise
            window = 0
            reply = stub.GetOnlineMetrics(monitoring_pb2.GetOnlineMetricsRequest(window_seconds=0),
                                          timeout=timeout_s, metadata=metadata)
    by_name = {v.variant: v for v in reply.variants}
    mine = by_name.get(canary.variant)
    control = by_name.get("control") or next(iter(reply.variants), None)
    if mine is None:
        return CanaryFigures(canary.variant, 0, 0, 0.0, control.ctr if control else 0.0, 0.0, -math.inf,
                             math.inf, window)
    return CanaryFigures(canary.variant, mine.impressions, mine.clicks, mine.ctr, control.ctr if control else 0.0,
                         mine.ctr_lift, mine.ctr_lift_ci_low, mine.ctr_lift_ci_high, window)


def check(registry: Registry, monitoring_addr: str, policy: rollout.CanaryPolicy,
          act: bool = True) -> CanaryCheck | None:
    """Decide the canary in progress (None when there is none); with `act`, promote or roll back as decided."""
    canary = rollout.current(registry)
    if canary is None:
        return None
    fig = figures(monitoring_addr, canary)
    IMPRESSIONS.set(fig.impressions)
    if math.isfinite(fig.lift_low):
        LIFT_LOW.set(fig.lift_low)
        LIFT_HIGH.set(fig.lift_high)
    verdict = rollout.decide(canary, fig.impressions, fig.lift_low, fig.lift_high, policy)
    DECISIONS.labels(verdict.action).inc()
    latest = registry.latest()
    if act and verdict.action != rollout.WAIT:
        latest = rollout.finish(registry, verdict, _jsonable(asdict(fig)))
        log.info("canary ended", extra={"action": verdict.action, "version": canary.challenger,
                                        "reason": verdict.reason, "latest": latest})
    return CanaryCheck(canary, fig, verdict, latest)


def _jsonable(values: dict) -> dict:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in values.items()}
