"""Feature service configuration (environment variables, read once at start-up)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from recsys.common.config import KAFKA_DLQ_TOPIC, KAFKA_EVENTS_TOPIC, MODELS_DIR, VAR_DIR, declare

SCOPE = "features"

PORT = declare("RECSYS_FEATURES_PORT", 50052, "Feature service gRPC port", SCOPE)
ONLINE_STORE = declare("RECSYS_ONLINE_STORE", "sqlite", "Feast online store: sqlite or redis", SCOPE)
REDIS_URL = declare(
    "RECSYS_REDIS_URL", "redis://127.0.0.1:6390/0", "Redis of the Feast online store (RECSYS_ONLINE_STORE=redis)", SCOPE
)
FEAST_DIR = declare(
    "RECSYS_FEAST_DIR", "", "Feast state: registry, SQLite online store, packed tables (default <VAR_DIR>/feast)", SCOPE
)
FEAST_PROJECT = declare("RECSYS_FEAST_PROJECT", "recsys", "Feast project name", SCOPE)
OFFLINE_DIR = declare(
    "RECSYS_FEATURES_OFFLINE_DIR",
    "",
    "Feast offline store: the parquet feature tables of the training pipeline (default: the features/ folder of "
    "the latest model version in RECSYS_MODELS_DIR, else <VAR_DIR>/features)",
    SCOPE,
)
MAX_ITEMS = declare("RECSYS_FEATURES_MAX_ITEMS", 1000, "Most item ids one GetItemFeatures may ask for", SCOPE)
RECENT_DEFAULT = declare("RECSYS_FEATURES_RECENT_LIMIT", 20, "GetRecentItems limit when the request says 0", SCOPE)
RECENT_KEEP = declare("RECSYS_FEATURES_RECENT_KEEP", 50, "Recent items kept per user by the streaming updates", SCOPE)
DEDUP_KEEP = declare(
    "RECSYS_FEATURES_DEDUP_KEEP", 64, "Event ids remembered per user to drop duplicate events", SCOPE
)
MAX_PUSH_EVENTS = declare("RECSYS_FEATURES_MAX_PUSH_EVENTS", 10000, "Most events one Push request may carry", SCOPE)
MATERIALIZE_BATCH = declare(
    "RECSYS_FEATURES_MATERIALIZE_BATCH", 50000,
    "Rows Feast converts and writes to the online store per batch when materializing (bounds its memory)", SCOPE
)
CONSUMER_GROUP = declare(
    "RECSYS_FEATURES_CONSUMER_GROUP", "recsys-features", "Kafka consumer group of the streaming updates", SCOPE
)
CONSUMER_FETCH_WAIT_MS = declare(
    "RECSYS_FEATURES_CONSUMER_FETCH_WAIT_MS",
    50,
    "How long the broker may hold the streaming consumer's fetch to fill it (fewer, larger batches: each costs "
    "one online-store write and one offset commit); adds at most this to freshness",
    SCOPE,
)
CONSUMER_MAX_RECORDS = declare(
    "RECSYS_FEATURES_CONSUMER_MAX_RECORDS", 5000, "Records the streaming consumer applies per batch", SCOPE
)


@dataclass(frozen=True)
class FeatureSettings:
    """Everything the feature service reads from the environment."""

    online_store: str
    redis_url: str
    feast_dir: Path
    offline_dir: Path
    project: str
    max_items: int
    recent_default: int
    recent_keep: int
    dedup_keep: int
    max_push_events: int
    materialize_batch: int = int(MATERIALIZE_BATCH.default)

    @classmethod
    def from_env(cls) -> FeatureSettings:
        var = Path(VAR_DIR.str())
        return cls(
            online_store=ONLINE_STORE.str().strip().lower(),
            redis_url=REDIS_URL.str(),
            feast_dir=Path(FEAST_DIR.str() or var / "feast").absolute(),
            offline_dir=Path(OFFLINE_DIR.str() or default_offline_dir(var)).absolute(),
            project=FEAST_PROJECT.str(),
            max_items=MAX_ITEMS.int(),
            recent_default=RECENT_DEFAULT.int(),
            recent_keep=RECENT_KEEP.int(),
            dedup_keep=DEDUP_KEEP.int(),
            max_push_events=MAX_PUSH_EVENTS.int(),
            materialize_batch=MATERIALIZE_BATCH.int(),
        )


def default_offline_dir(var: Path) -> Path:
    """`features/` of the latest model version (where `recsys train` writes the tables), else <var>/features."""
    from recsys.model.layout import BundleLayout
    from recsys.model.registry import RegistryError, resolve_model_dir

    try:
        folder = BundleLayout(resolve_model_dir(MODELS_DIR.str())).features_dir
    except RegistryError:
        return var / "features"
    return folder if folder.is_dir() else var / "features"


def events_topic() -> str:
    return KAFKA_EVENTS_TOPIC.str()


def dlq_topic() -> str:
    return KAFKA_DLQ_TOPIC.str()
