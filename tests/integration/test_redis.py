"""The private Redis started by deploy/local/redis.sh answers and stores values."""

from __future__ import annotations

import pytest
import redis

pytestmark = pytest.mark.integration


def test_ping_set_get(redis_url):
    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    try:
        assert client.ping()
        client.set("recsys:test:key", b"value", ex=60)
        assert client.get("recsys:test:key") == b"value"
    finally:
        client.close()
