"""Windowed click counters kept as a short list of time buckets (the `click_buckets` streaming feature).

Buckets are (start epoch seconds, count) pairs, flattened into one int64 list. Clicks land in one-minute
buckets; buckets older than an hour are merged into one-hour buckets and buckets older than a day are
dropped, so a list holds at most ~85 pairs. Counts for a window are summed at read time, so they decay
without new events: the 1 h count is exact to the minute, the 24 h count to the hour.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

MINUTE = 60
HOUR = 3600
DAY = 86400
WINDOWS = (HOUR, DAY)


def to_dict(flat: Sequence[int]) -> dict[int, int]:
    """Flattened pairs -> {bucket start: count}."""
    return {int(flat[i]): int(flat[i + 1]) for i in range(0, len(flat) - 1, 2)}


def to_flat(buckets: dict[int, int]) -> list[int]:
    """{bucket start: count} -> flattened pairs sorted by start."""
    return [v for start in sorted(buckets) for v in (start, buckets[start])]


def add(flat: Sequence[int], times_s: Iterable[float], now_s: float) -> list[int]:
    """Add one click at each time (epoch seconds; future times count as now) and compact at `now_s`."""
    buckets = to_dict(flat)
    now = int(now_s)
    for t in times_s:
        t = min(int(t), now)
        if t < now - DAY:
            continue
        start = t - t % MINUTE
        buckets[start] = buckets.get(start, 0) + 1
    return to_flat(compact(buckets, now))


def compact(buckets: dict[int, int], now_s: int) -> dict[int, int]:
    """Drop buckets older than a day; merge minute buckets older than an hour into hour buckets."""
    out: dict[int, int] = {}
    for start, count in buckets.items():
        if start < now_s - DAY - HOUR or count <= 0:
            continue
        if start < now_s - HOUR:
            start -= start % HOUR
        out[start] = out.get(start, 0) + count
    return out


def window_counts(flat: Sequence[int], now_s: float, windows: Sequence[int] = WINDOWS) -> list[int]:
    """Clicks in each window (seconds) before `now_s`: the buckets that overlap it (hour buckets count with
    their full width, in windows longer than an hour)."""
    buckets = to_dict(flat)
    out = []
    for window in windows:
        total = 0
        for start, count in buckets.items():
            coarse = window > HOUR and start % HOUR == 0 and start <= now_s - HOUR
            if start + (HOUR if coarse else MINUTE) > now_s - window:
                total += count
        out.append(total)
    return out
