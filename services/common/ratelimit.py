"""Per-caller token buckets for the public RPCs: a caller over its rate gets RESOURCE_EXHAUSTED at once.

The caller is the authenticated key id (`recsys.common.auth.current_principal`), or the client's address when
authentication is off. A key's own `rate_per_s` / `burst` override the defaults. Buckets live in one process
(each gateway replica limits on its own) and the least recently seen callers are dropped beyond `max_keys`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from prometheus_client import Counter

from recsys.common import config
from recsys.common.auth import current_principal, required_scope
from recsys.common.interceptors import wrap_behaviour

log = logging.getLogger("recsys.ratelimit")

LIMITED = Counter("recsys_rate_limited_total", "Calls refused by the per-key rate limit", ["kind"])
RETRY_AFTER_HEADER = "retry-after-ms"


@dataclass
class TokenBucket:
    """`rate` tokens per second up to `burst`; each call takes one."""

    rate: float
    burst: float
    tokens: float
    updated: float

    def take(self, now: float) -> float:
        """0.0 when a token was taken, else the seconds until one is available."""
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate if self.rate > 0 else float("inf")


class KeyedRateLimiter:
    """Token buckets by caller key, thread-safe, at most `max_keys` of them (LRU)."""

    def __init__(self, rate_per_s: float, burst: float = 0.0, max_keys: int = 10000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = float(rate_per_s)
        self.burst = float(burst) if burst > 0 else max(1.0, self.rate)
        self.max_keys = max(1, int(max_keys))
        self.clock = clock
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls) -> KeyedRateLimiter | None:
        """From RECSYS_GATEWAY_RATE_LIMIT_*; None when the default rate is 0 (no limit)."""
        rate = config.GATEWAY_RATE_LIMIT_RPS.float()
        if rate <= 0:
            return None
        return cls(rate, config.GATEWAY_RATE_LIMIT_BURST.float(), config.GATEWAY_RATE_LIMIT_MAX_KEYS.int())

    def acquire(self, key: str, rate_per_s: float | None = None, burst: float | None = None) -> float:
        """0.0 when `key` may call now, else the seconds until it may. A per-key rate of 0 means no limit."""
        rate = self.rate if rate_per_s is None else rate_per_s
        if rate <= 0:
            return 0.0
        size = burst if burst is not None and burst > 0 else (self.burst if rate_per_s is None else max(1.0, rate))
        now = self.clock()
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None or bucket.rate != rate or bucket.burst != size:
                bucket = TokenBucket(rate, size, size if bucket is None else min(bucket.tokens, size), now)
                self._buckets[key] = bucket
            self._buckets.move_to_end(key)
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
            return bucket.take(now)


def caller_key(context: grpc.ServicerContext) -> tuple[str, str, float | None, float | None]:
    """(kind, key, rate override, burst override) of the caller: its principal, else its address."""
    principal = current_principal()
    if principal is not None:
        return "key", principal.key_id, principal.rate_per_s, principal.burst
    peer = context.peer() or "unknown"
    host = peer.rsplit(":", 1)[0] if peer.startswith(("ipv4:", "ipv6:")) else peer
    return "peer", host, None, None


class RateLimitInterceptor(grpc.ServerInterceptor):
    """Applies a KeyedRateLimiter to the public RPCs; place it after the AuthInterceptor (GrpcServer does)."""

    def __init__(self, limiter: KeyedRateLimiter, applies_to: Callable[[str], Any] = required_scope) -> None:
        self.limiter = limiter
        self.applies_to = applies_to

    def intercept_service(self, continuation: Callable, handler_call_details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(handler_call_details)
        if handler is None or not self.applies_to(handler_call_details.method):
            return handler

        def around(inner: Callable, request: Any, context: grpc.ServicerContext) -> Any:
            kind, key, rate, burst = caller_key(context)
            wait_s = self.limiter.acquire(f"{kind}:{key}", rate, burst)
            if wait_s > 0:
                LIMITED.labels(kind).inc()
                log.debug("rate limited", extra={"key_id": key if kind == "key" else "-", "peer": context.peer()})
                if wait_s != float("inf"):
                    context.set_trailing_metadata(((RETRY_AFTER_HEADER, str(max(1, int(wait_s * 1000)))),))
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "rate limit exceeded, retry later")
            return inner(request, context)

        return wrap_behaviour(handler, around)
