"""The request deadline and the per-hop timeouts derived from what is left of it."""

from __future__ import annotations

import time


class Budget:
    """A hard deadline; each hop gets the smaller of its own cap and what remains minus a reserve."""

    def __init__(self, total_ms: float, reserve_ms: float, caller_remaining_s: float | None = None) -> None:
        total_s = total_ms / 1000.0
        if caller_remaining_s is not None:
            total_s = min(total_s, caller_remaining_s)
        self.start = time.perf_counter()
        self.deadline = self.start + total_s
        self.reserve_s = reserve_ms / 1000.0

    def remaining_s(self) -> float:
        return self.deadline - time.perf_counter()

    def hop_timeout(self, cap_ms: float | None = None) -> float:
        """Seconds a hop may take now (never negative; 0 means skip the hop)."""
        left = self.remaining_s() - self.reserve_s
        if cap_ms is not None:
            left = min(left, cap_ms / 1000.0)
        return max(0.0, left)

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.start) * 1000.0
