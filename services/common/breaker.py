"""A small circuit breaker: after consecutive failures, skip a dependency for a cool-down, then probe."""

from __future__ import annotations

import threading
import time


class Breaker:
    """Open after `threshold` consecutive failures; let one probe through every `cooldown_s` while open."""

    def __init__(self, threshold: int = 3, cooldown_s: float = 1.0) -> None:
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self._failures = 0
        self._open_until = 0.0
        self._lock = threading.Lock()
        self.last_error = ""

    def allow(self) -> bool:
        """True when a call may be tried now (closed, or the cool-down ended: this caller probes)."""
        with self._lock:
            if self._failures < self.threshold:
                return True
            now = time.monotonic()
            if now >= self._open_until:
                self._open_until = now + self.cooldown_s  # one probe per cool-down
                return True
            return False

    def success(self) -> None:
        with self._lock:
            self._failures = 0
            self.last_error = ""

    def failure(self, error: str) -> None:
        with self._lock:
            self._failures += 1
            self.last_error = error
            if self._failures == self.threshold:
                self._open_until = time.monotonic() + self.cooldown_s

    @property
    def is_open(self) -> bool:
        with self._lock:
            return self._failures >= self.threshold
