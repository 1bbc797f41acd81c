"""The event log writer's environment variables, read once into an `EventLogSettings`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from recsys.common import config

SCOPE = "eventlog"

URI = config.declare(
    "RECSYS_EVENTLOG_URI",
    "",
    "Root of the event log: a local folder or a URI pyarrow opens (s3://bucket/prefix, gs://…, file://…); "
    "empty = <RECSYS_VAR_DIR>/eventlog",
    SCOPE,
)
GROUP = config.declare("RECSYS_EVENTLOG_GROUP", "recsys-eventlog", "Kafka consumer group of the log writer", SCOPE)
INSTANCE_ID = config.declare(
    "RECSYS_EVENTLOG_INSTANCE_ID",
    "",
    "Static group membership id of this writer (unique per writer, e.g. the pod name): a restarted writer takes "
    "its partitions back at once instead of after the killed one's session timeout, and fences it; "
    "empty = dynamic membership",
    SCOPE,
)
FLUSH_ROWS = config.declare(
    "RECSYS_EVENTLOG_FLUSH_ROWS",
    50_000,
    "Rows buffered (all partitions together; checked after each poll) before the writer writes them, one write "
    "per partition, and commits",
    SCOPE,
)
FLUSH_S = config.declare(
    "RECSYS_EVENTLOG_FLUSH_S", 5.0, "Longest time a consumed record waits in the buffer before it is written", SCOPE
)
RETENTION_DAYS = config.declare(
    "RECSYS_EVENTLOG_RETENTION_DAYS",
    30,
    "Hours of event time older than this many days are deleted (by the writer hourly, or `recsys eventlog "
    "retention`); 0 = keep everything",
    SCOPE,
)


@dataclass(frozen=True)
class EventLogSettings:
    """Everything the log writer reads from the environment."""

    uri: str
    group: str
    instance_id: str
    bootstrap: str
    events_topic: str
    impressions_topic: str
    dlq_topic: str
    flush_rows: int
    flush_s: float
    retention_days: int
    items_topic: str = "recsys.items"

    @classmethod
    def from_env(cls) -> EventLogSettings:
        settings = cls(
            uri=URI.str().strip() or str((Path(config.VAR_DIR.str()) / "eventlog").absolute()),
            group=GROUP.str(),
            instance_id=INSTANCE_ID.str().strip(),
            bootstrap=config.KAFKA_BOOTSTRAP.str(),
            events_topic=config.KAFKA_EVENTS_TOPIC.str(),
            impressions_topic=config.KAFKA_IMPRESSIONS_TOPIC.str(),
            dlq_topic=config.KAFKA_DLQ_TOPIC.str(),
            items_topic=config.KAFKA_ITEMS_TOPIC.str(),
            flush_rows=FLUSH_ROWS.int(),
            flush_s=FLUSH_S.float(),
            retention_days=RETENTION_DAYS.int(),
        )
        settings.validate()
        return settings

    def validate(self) -> None:
        """Raise ConfigError for values the writer cannot work with."""
        if len({self.events_topic, self.impressions_topic, self.items_topic}) < 3:
            raise config.ConfigError(
                "RECSYS_KAFKA_EVENTS_TOPIC, RECSYS_KAFKA_IMPRESSIONS_TOPIC and RECSYS_KAFKA_ITEMS_TOPIC must differ")
        if self.flush_rows < 1:
            raise config.ConfigError(f"{FLUSH_ROWS.name}={self.flush_rows} must be at least 1")
        if self.flush_s <= 0:
            raise config.ConfigError(f"{FLUSH_S.name}={self.flush_s} must be positive")
        if self.retention_days < 0:
            raise config.ConfigError(f"{RETENTION_DAYS.name}={self.retention_days} must be 0 (keep) or more")

    @property
    def tables(self) -> dict[str, str]:
        """Topic -> the log table its records go to."""
        from recsys.eventlog.layout import EVENTS, IMPRESSIONS, ITEMS  # pyarrow: not for `recsys config`

        return {self.impressions_topic: IMPRESSIONS, self.events_topic: EVENTS, self.items_topic: ITEMS}
