"""The Feast store: its RepoConfig (SQLite or Redis online store), and applying the project definitions.

The configuration is generated from the RECSYS_* settings, so every path lives under RECSYS_FEAST_DIR
(default var/feast); `feature_repo/feature_store*.yaml` are the same configurations for the `feast` CLI.
The registry cache never expires (`cache_ttl_seconds: 0`): a process resolves its feature views once.
"""

from __future__ import annotations

import json
import sqlite3
import warnings
from pathlib import Path
from urllib.parse import unquote, urlparse

from feast import FeatureStore, RepoConfig

from recsys.features import definitions, offline, sqlite_store
from recsys.features.definitions import Layout, Paths
from recsys.features.settings import FeatureSettings

ONLINE_STORES = ("sqlite", "redis")

# Feast warns each time it builds a StreamFeatureView, i.e. on every registry read.
warnings.filterwarnings("ignore", message="Stream feature views are experimental", category=RuntimeWarning)


class StoreConfigError(ValueError):
    """The feature store settings are invalid."""


def redis_connection_string(url: str) -> str:
    """Feast's Redis connection string ("host:port,db=N,...") for a redis:// or rediss:// URL."""
    parsed = urlparse(url)
    if parsed.scheme not in ("redis", "rediss") or not parsed.hostname:
        raise StoreConfigError(f"RECSYS_REDIS_URL={url!r} is not a redis://host:port/db URL")
    parts = [f"{parsed.hostname}:{parsed.port or 6379}"]
    db = parsed.path.strip("/")
    if db:
        if not db.isdigit():
            raise StoreConfigError(f"RECSYS_REDIS_URL={url!r}: database {db!r} is not a number")
        parts.append(f"db={db}")
    if parsed.password:
        parts.append(f"password={unquote(parsed.password)}")
    if parsed.username:
        parts.append(f"username={unquote(parsed.username)}")
    if parsed.scheme == "rediss":
        parts.append("ssl=true")
    return ",".join(parts)


def online_store_config(settings: FeatureSettings) -> dict:
    """The `online_store` section for the configured backend."""
    if settings.online_store == "sqlite":
        # Feast's SQLite store with batched statements (same tables and encoding; see sqlite_store).
        return {"type": sqlite_store.STORE_TYPE, "path": str(settings.feast_dir / "online.db")}
    if settings.online_store == "redis":
        # skip_dedup: write unconditionally. Feast's Redis store otherwise drops a row whose event timestamp
        # is not newer than the stored one, so a rebuilt table (same as-of time, new values) would never land;
        # SQLite always upserts. The streaming updater orders its own writes.
        return {
            "type": "redis",
            "connection_string": redis_connection_string(settings.redis_url),
            "skip_dedup": True,
        }
    raise StoreConfigError(f"RECSYS_ONLINE_STORE={settings.online_store!r}: expected one of {', '.join(ONLINE_STORES)}")


def repo_config(settings: FeatureSettings) -> RepoConfig:
    """The Feast RepoConfig of this deployment (file registry and offline store, SQLite or Redis online)."""
    settings.feast_dir.mkdir(parents=True, exist_ok=True)
    return RepoConfig(
        project=settings.project,
        provider="local",
        registry={"path": str(settings.feast_dir / "registry.db"), "cache_ttl_seconds": 0},
        online_store=online_store_config(settings),
        offline_store={"type": "file"},
        entity_key_serialization_version=3,
        # Feast turns every materialized row into protobuf values before writing: in one batch, 1M items
        # took more than 24 GiB; in batches, memory stays bounded by the batch
        materialization_config={"online_write_batch_size": settings.materialize_batch},
        repo_path=settings.feast_dir,
    )


def open_store(settings: FeatureSettings) -> FeatureStore:
    """A FeatureStore for these settings (the registry is read on first use and then cached)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return FeatureStore(config=repo_config(settings))


def paths(settings: FeatureSettings) -> Paths:
    return Paths(offline_dir=settings.offline_dir, feast_dir=settings.feast_dir)


def prepare(settings: FeatureSettings) -> tuple[list, Layout]:
    """Pack the offline entity tables that changed since the last packing, create the push sources' batch
    tables, and return the project's Feast objects with the packed layout."""
    p = paths(settings)
    offline.check_history_table(p.history_table)
    state = _read_json(p.layout_file)
    packed = {}
    for kind, src, dst, key in (
        ("user", p.user_table, p.user_vectors, offline.USER_KEY),
        ("item", p.item_table, p.item_vectors, offline.ITEM_KEY),
    ):
        offline.feature_columns(src, key)  # fails early with a clear message
        digest = offline.fingerprint(src)
        previous = state.get(kind, {})
        if previous.get("source_fingerprint") == digest and dst.exists():
            packed[kind] = previous
            continue
        table = offline.pack_table(src, dst, key)
        packed[kind] = {"source_fingerprint": digest, "columns": table.columns, "defaults": table.defaults}
    _write_json(p.layout_file, packed)
    for name, key, fields in (
        (definitions.USER_STREAM, offline.USER_KEY, definitions.USER_STREAM_FIELDS),
        (definitions.ITEM_STREAM, offline.ITEM_KEY, definitions.ITEM_STREAM_FIELDS),
    ):
        offline.write_empty_table(p.stream_table(name), definitions.stream_schema(key, fields))
    layout = Layout(
        user_columns=packed["user"]["columns"],
        item_columns=packed["item"]["columns"],
        user_defaults=packed["user"]["defaults"],
        item_defaults=packed["item"]["defaults"],
    )
    return definitions.build(layout, p), layout


def apply(store: FeatureStore, settings: FeatureSettings) -> Layout:
    """Pack, apply the project definitions to the registry and online store, and return the layout."""
    objects, layout = prepare(settings)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        store.apply(objects)
    if settings.online_store == "sqlite":
        # Readers never wait for the streaming writer (and the reverse) with a write-ahead log.
        with sqlite3.connect(settings.feast_dir / "online.db") as conn:
            conn.execute("PRAGMA journal_mode=WAL")
    return layout


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)
