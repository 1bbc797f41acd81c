"""Scrape Prometheus /metrics endpoints into a bounded in-memory history (the dashboard's overview source)."""

from __future__ import annotations

import logging
import threading
import time
import urllib.request
from collections import deque
from dataclasses import dataclass, field

from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

log = logging.getLogger("recsys.monitoring.dashboard")

#: (sample name, sorted label items) -> value
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
SELF = "monitoring"  # the monitoring process itself, read from its own registry (no HTTP hop)


def parse(text: str) -> Samples:
    """Every sample of a Prometheus text exposition."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = float(s.value)
    return out


@dataclass
class Scrape:
    """One round: when, and each target's samples (None: the target did not answer)."""

    at: float
    targets: dict[str, Samples | None] = field(default_factory=dict)


class MetricsScraper:
    """Every `interval_s`, read each target's /metrics (name -> "host:port"); keeps `keep_s` of rounds."""

    def __init__(self, targets: dict[str, str], interval_s: float = 5.0, keep_s: float = 900.0,
                 timeout_s: float = 2.0, scheme: str = "http") -> None:
        self.targets = dict(targets)
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.scheme = scheme
        self.rounds: deque[Scrape] = deque(maxlen=max(2, int(keep_s / interval_s) + 1))
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="dashboard-scraper", daemon=True)

    def start(self) -> MetricsScraper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.timeout_s + 1)

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self.scrape_once()
            self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - started)))

    def _read(self, name: str, address: str) -> Samples | None:
        if name == SELF and not address:
            return parse(generate_latest(REGISTRY).decode())
        try:
            with urllib.request.urlopen(f"{self.scheme}://{address}/metrics", timeout=self.timeout_s) as resp:
                return parse(resp.read().decode("utf-8", "replace"))
        except (OSError, ValueError) as exc:
            log.debug("scrape failed", extra={"target": name, "error": str(exc)})
            return None

    def scrape_once(self) -> Scrape:
        """Read every target once and keep the round."""
        round_ = Scrape(time.time(), {name: self._read(name, addr) for name, addr in self.targets.items()})
        with self._lock:
            self.rounds.append(round_)
        return round_

    def history(self) -> list[Scrape]:
        """The rounds kept, oldest first."""
        with self._lock:
            return list(self.rounds)


def parse_targets(spec: str) -> dict[str, str]:
    """"name=host:port,..." -> {name: host:port}; raises ValueError naming a malformed entry."""
    out: dict[str, str] = {}
    for entry in (e.strip() for e in spec.split(",")):
        if not entry:
            continue
        name, sep, address = entry.partition("=")
        if not sep or not name.strip() or ":" not in address:
            raise ValueError(f"dashboard target {entry!r}: expected name=host:port")
        out[name.strip()] = address.strip()
    return out
