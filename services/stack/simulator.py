"""A traffic simulator: users ask for recommendations and click according to the synthetic ground truth.

Click probability = ground-truth affinity of (user, item) × a position bias 1 / (1 + position)^0.5;
clicks go back through the gateway's EventService, so they travel the product path to Kafka.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import grpc
import numpy as np

from recsys.client import RecsysClient
from recsys.training.data.synthetic import GroundTruth, click_probability
from recsys.v1 import events_pb2


@dataclass
class SimulationStats:
    """What the simulator saw: latencies, errors, degradation and clicks per variant."""

    latencies_ms: list[float] = field(default_factory=list)
    requests: int = 0
    errors: int = 0
    degraded: int = 0
    impressions: Counter = field(default_factory=Counter)
    clicks: Counter = field(default_factory=Counter)
    error_codes: Counter = field(default_factory=Counter)
    degraded_reasons: Counter = field(default_factory=Counter)
    #: Per-hop milliseconds the gateway reported (`timings_ms`), and total latency per variant.
    hop_ms: defaultdict = field(default_factory=lambda: defaultdict(list))
    variant_ms: defaultdict = field(default_factory=lambda: defaultdict(list))

    def merge(self, other: SimulationStats) -> None:
        self.latencies_ms += other.latencies_ms
        self.requests += other.requests
        self.errors += other.errors
        self.degraded += other.degraded
        self.impressions.update(other.impressions)
        self.clicks.update(other.clicks)
        self.error_codes.update(other.error_codes)
        self.degraded_reasons.update(other.degraded_reasons)
        for mine, theirs in ((self.hop_ms, other.hop_ms), (self.variant_ms, other.variant_ms)):
            for key, values in theirs.items():
                mine[key] += values

    def summary(self) -> dict:
        lat = np.asarray(self.latencies_ms or [0.0])
        ctr = {v: self.clicks[v] / n for v, n in self.impressions.items() if n}
        return {
            "requests": self.requests,
            "errors": self.errors,
            "degraded_rate": self.degraded / max(1, self.requests),
            "p50_ms": float(np.percentile(lat, 50)),
            "p95_ms": float(np.percentile(lat, 95)),
            "p99_ms": float(np.percentile(lat, 99)),
            "ctr_by_variant": ctr,
            "degraded_reasons": dict(self.degraded_reasons.most_common(5)),
            "hops_ms": _percentiles(self.hop_ms),
            "variants_ms": _percentiles(self.variant_ms),
        }


def _percentiles(samples: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    return {key: {"p50": round(float(np.percentile(v, 50)), 2), "p99": round(float(np.percentile(v, 99)), 2)}
            for key, v in sorted(samples.items()) if v}


def _worker(gateway: str, truth: GroundTruth | None, users: list[str], k: int, deadline: float,
            max_requests: int, seed: int, stats: SimulationStats, click_scale: float) -> None:
    rng = np.random.default_rng(seed)
    with RecsysClient(gateway, timeout_s=1.0) as client:
        while time.monotonic() < deadline and stats.requests < max_requests:
            user = users[int(rng.integers(len(users)))]
            started = time.perf_counter()
            try:
                recs = client.recommend(user, k)
            except grpc.RpcError as exc:
                stats.requests += 1
                stats.errors += 1
                stats.error_codes[exc.code().name] += 1
                continue
            stats.latencies_ms.append((time.perf_counter() - started) * 1000)
            stats.variant_ms[recs.variant].append(stats.latencies_ms[-1])
            for hop, ms in recs.timings_ms.items():
                stats.hop_ms[hop].append(ms)
            stats.requests += 1
            if recs.degraded:
                stats.degraded += 1
                stats.degraded_reasons.update(recs.degraded_reasons)
            stats.impressions[recs.variant] += len(recs.items)
            if truth is None or not recs.items:
                continue
            ids = [item.item_id for item in recs.items]
            p = click_probability(truth, [user] * len(ids), ids) * click_scale
            p = p / np.sqrt(1.0 + np.arange(len(ids)))
            clicked = [i for i, hit in enumerate(rng.random(len(ids)) < p) if hit]
            if not clicked:
                continue
            now = int(time.time() * 1000)
            events = [events_pb2.Event(
                event_id=uuid.uuid4().hex, type=events_pb2.EVENT_TYPE_CLICK, user_id=user, item_id=ids[i],
                request_id=recs.request_id, position=i, variant=recs.variant, model=recs.model, timestamp_ms=now,
            ) for i in clicked]
            try:
                client.publish(events, timeout_s=5.0)
                stats.clicks[recs.variant] += len(events)
            except grpc.RpcError as exc:
                stats.error_codes[f"publish:{exc.code().name}"] += 1


def simulate(gateway: str, truth: GroundTruth | None, users: list[str], *, seconds: float, concurrency: int = 4,
             k: int = 10, max_requests: int = 1_000_000, seed: int = 7, click_scale: float = 1.0) -> SimulationStats:
    """Closed-loop traffic for `seconds` (bounded by max_requests in all) from `concurrency` threads."""
    deadline = time.monotonic() + seconds
    per_thread = [SimulationStats() for _ in range(concurrency)]
    threads = [
        threading.Thread(target=_worker, args=(gateway, truth, users, k, deadline, max(1, max_requests // concurrency),
                                               seed + i, per_thread[i], click_scale), daemon=True)
        for i in range(concurrency)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=seconds + 30)
    total = SimulationStats()
    for s in per_thread:
        total.merge(s)
    return total


def by_variant(stats: SimulationStats) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = defaultdict(dict)
    for variant, n in stats.impressions.items():
        out[variant] = {"impressions": n, "clicks": stats.clicks[variant], "ctr": stats.clicks[variant] / max(1, n)}
    return dict(out)
