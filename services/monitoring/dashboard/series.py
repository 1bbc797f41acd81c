"""Rates and histogram quantiles over scraped rounds: what PromQL's rate(), sum by() and histogram_quantile()
compute, for the dashboard's overview when no Prometheus server is at hand."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable

from recsys.monitoring.dashboard.scrape import Samples, Scrape


def summed(samples: Samples | None, name: str, by: tuple[str, ...],
           where: Callable[[dict[str, str]], bool] | None = None) -> dict[tuple[str, ...], float]:
    """sum by (by) (name{where}) in one target's samples."""
    out: dict[tuple[str, ...], float] = defaultdict(float)
    for (sample, labels), value in (samples or {}).items():
        if sample != name:
            continue
        d = dict(labels)
        if where is not None and not where(d):
            continue
        out[tuple(d.get(b, "") for b in by)] += value
    return out


def increase(old: Scrape, new: Scrape, name: str, by: tuple[str, ...],
             where: Callable[[dict[str, str]], bool] | None = None) -> dict[tuple[str, ...], float]:
    """How much a counter grew between two rounds, summed by `by` over every target answering in both
    (a target that restarted, its counter lower than before, counts from zero)."""
    out: dict[tuple[str, ...], float] = defaultdict(float)
    for target, samples in new.targets.items():
        before = old.targets.get(target)
        if samples is None or before is None:
            continue
        now_v, then_v = summed(samples, name, by, where), summed(before, name, by, where)
        for key, value in now_v.items():
            prev = then_v.get(key, 0.0)
            out[key] += value - prev if value >= prev else value
    return out


def histogram_quantile(q: float, buckets: dict[float, float]) -> float | None:
    """The q-quantile of cumulative bucket counts {le: count} by linear interpolation within the bucket
    (as Prometheus does); None without observations."""
    if not buckets:
        return None
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return prev_bound
            if count == prev_count:
                return bound
            return prev_bound + (bound - prev_bound) * (rank - prev_count) / (count - prev_count)
        prev_bound, prev_count = bound, count
    return prev_bound


def quantiles(old: Scrape, new: Scrape, name: str, by: str, qs: tuple[float, ...],
              where: Callable[[dict[str, str]], bool] | None = None) -> dict[str, dict[float, float | None]]:
    """histogram_quantile(q, sum by (le, by) (increase(name_bucket))) per value of label `by`."""
    grown = increase(old, new, f"{name}_bucket", (by, "le"), where)
    per: dict[str, dict[float, float]] = defaultdict(dict)
    for (key, le), count in grown.items():
        per[key][float(le)] = per[key].get(float(le), 0.0) + count
    return {key: {q: histogram_quantile(q, b) for q in qs} for key, b in per.items()}
