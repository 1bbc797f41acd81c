"""The admin client and idempotent topic creation."""

from __future__ import annotations

from collections.abc import Iterable

from kafka import KafkaAdminClient
from kafka.errors import KafkaError

from recsys.common.kafka.clients import client_config

_TOPIC_ALREADY_EXISTS = 36


def make_admin(bootstrap: str | None = None, **overrides) -> KafkaAdminClient:
    """An admin client with the security settings."""
    return KafkaAdminClient(**{**client_config(bootstrap), **overrides})


def ensure_topics(
    topics: Iterable[str] | dict[str, int],
    bootstrap: str | None = None,
    *,
    partitions: int = 3,
    replication_factor: int = 1,
    timeout_s: float = 30.0,
    configs: dict[str, dict[str, str]] | None = None,
) -> list[str]:
    """Create the topics that do not exist yet (a dict gives partitions per topic); returns the created
    ones after every partition has a leader. Safe to call concurrently. `configs`: topic settings by topic
    (e.g. {"recsys.items": {"cleanup.policy": "compact"}}), applied when the topic is created."""
    wanted = dict(topics) if isinstance(topics, dict) else {name: partitions for name in topics}
    admin = make_admin(bootstrap, request_timeout_ms=int(timeout_s * 1000))
    try:
        missing = {name: n for name, n in wanted.items() if name not in set(admin.list_topics())}
        created: list[str] = []
        if missing:
            spec = {name: {"num_partitions": n, "replication_factor": replication_factor,
                           **({"configs": (configs or {})[name]} if name in (configs or {}) else {})}
                    for name, n in missing.items()}
            response = admin.create_topics(spec, timeout_ms=int(timeout_s * 1000), raise_errors=False)
            for result in response["topics"]:
                if result["error_code"] == 0:
                    created.append(result["name"])
                elif result["error_code"] != _TOPIC_ALREADY_EXISTS:
                    raise KafkaError(f"creating topic {result['name']}: {result['error_message']}")
        admin.wait_for_topics(list(wanted), timeout_ms=int(timeout_s * 1000))
        return created
    finally:
        admin.close()
