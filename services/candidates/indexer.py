"""Build, swap, roll back and update the versioned item collections.

A build writes a new collection, indexes and loads it, checks it answers (row count and each probe
item finding itself), and only then moves the version pointer to it; readers never see a half-built
index. The previously active collections stay (loaded) for rollback; older ones are dropped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np
from pymilvus import MilvusClient

from recsys.candidates import schema
from recsys.candidates.catalog import ItemCatalog
from recsys.candidates.settings import IndexSettings
from recsys.candidates.versions import Pointer, VersionInfo, VersionStore, new_collection_name

log = logging.getLogger("recsys.candidates.indexer")

Progress = Callable[[int], None]
RECORD_VISIBLE_S = 10.0  # how long a just-written version record may take to show (Milvus Lite under load)


class IndexBuildError(RuntimeError):
    """The index could not be built, swapped or updated; the message says why."""


def _wait_loaded(client: MilvusClient, collection: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        state = client.get_load_state(collection)["state"]
        if "Loaded" in str(state):
            return
        if time.monotonic() > deadline:
            raise IndexBuildError(f"{collection} not loaded after {timeout_s:.0f}s (state {state})")
        time.sleep(0.2)


def _wait_indexed(client: MilvusClient, collection: str, timeout_s: float) -> None:
    """On a Milvus server, wait until the vector index covers every row (Milvus Lite reports no progress)."""
    deadline = time.monotonic() + timeout_s
    while True:
        info = client.describe_index(collection, schema.VECTOR_FIELD)
        total, indexed = int(info.get("total_rows", 0)), int(info.get("indexed_rows", 0))
        if int(info.get("pending_index_rows", 0)) == 0 and indexed >= total:
            return
        if time.monotonic() > deadline:
            raise IndexBuildError(f"{collection}: index covers {indexed} of {total} rows after {timeout_s:.0f}s")
        time.sleep(1.0)


def _verify(client: MilvusClient, info: VersionInfo, catalog: ItemCatalog, probes: int = 5) -> None:
    """Row count matches and a few items find themselves first."""
    rows = client.query(info.collection, filter="", output_fields=["count(*)"])
    count = int(rows[0]["count(*)"])
    if count != len(catalog):
        raise IndexBuildError(f"{info.collection} holds {count} rows, expected {len(catalog)}")
    if not len(catalog):
        return
    picks = np.random.default_rng(0).choice(len(catalog), size=min(probes, len(catalog)), replace=False)
    vectors = [np.asarray(catalog.embeddings[i], dtype=np.float32).tolist() for i in picks]
    hits = client.search(info.collection, vectors, limit=1, search_params=schema.search_params({}, 1))
    for pick, hit in zip(picks, hits, strict=True):
        if not hit:
            raise IndexBuildError(f"{info.collection}: probe search for {catalog.item_ids[pick]} found nothing")


def build_version(
    client: MilvusClient,
    store: VersionStore,
    catalog: ItemCatalog,
    model_version: str,
    model_dir: str,
    settings: IndexSettings,
    progress: Progress | None = None,
) -> VersionInfo:
    """Write `catalog` into a new loaded collection and record it (does not activate it)."""
    if catalog.embeddings is None:
        raise IndexBuildError("the catalogue has no embeddings")
    if len(catalog.genres) > schema.MAX_GENRE_FIELDS:
        log.warning(
            "genres beyond the filterable maximum are not indexed",
            extra={"genres": len(catalog.genres), "max": schema.MAX_GENRE_FIELDS},
        )
    started = time.perf_counter()
    store.ensure()
    name = new_collection_name(store.base, model_version)
    genres = list(catalog.genres[: schema.MAX_GENRE_FIELDS])
    client.create_collection(
        name,
        schema=schema.item_schema(catalog.dim, len(genres)),
        index_params=schema.index_params(client, settings.index_type, settings.index_params or {}),
    )
    try:
        for start, stop in schema.batches(len(catalog), settings.insert_batch):
            client.insert(name, schema.catalog_rows(catalog, genres, start, stop))
            if progress:
                progress(stop - start)
        client.flush(name)
        _wait_indexed(client, name, settings.load_timeout_s)
        client.load_collection(name)
        _wait_loaded(client, name, settings.load_timeout_s)
        info = VersionInfo(
            collection=name,
            model_version=model_version,
            model_dir=model_dir,
            dim=catalog.dim,
            genres=genres,
            count=len(catalog),
            index_type=settings.index_type.upper(),
        )
        _verify(client, info, catalog)
        info.build_seconds = round(time.perf_counter() - started, 3)
        store.put_version(info)
    except BaseException:
        client.drop_collection(name)
        raise
    log.info("index built", extra={"collection": name, "items": len(catalog), "seconds": info.build_seconds})
    return info


def _version_record(store: VersionStore, collection: str, wait_s: float = RECORD_VISIBLE_S) -> VersionInfo | None:
    """The version record of an existing collection. Milvus Lite can take seconds to show a record written a
    moment ago (measured after indexing 1M items), so a missing one is read again until `wait_s` has passed."""
    deadline = time.monotonic() + wait_s
    while (info := store.version(collection)) is None and time.monotonic() < deadline:
        time.sleep(0.2)
    return info


def activate(client: MilvusClient, store: VersionStore, collection: str, keep_versions: int) -> Pointer:
    """Point readers at `collection` (which must be built and loaded); prune beyond `keep_versions`."""
    if not client.has_collection(collection) or _version_record(store, collection) is None:
        raise IndexBuildError(f"{collection} has no version record (not built by `recsys index`?)")
    client.load_collection(collection)
    _wait_loaded(client, collection, 600.0)
    old = store.pointer()
    history = [] if old is None else [c for c in [*old.history, old.active] if c != collection]
    pointer = Pointer(active=collection, history=history)
    store.set_pointer(pointer)
    prune(client, store, pointer, keep_versions)
    return pointer


def prune(client: MilvusClient, store: VersionStore, pointer: Pointer, keep_versions: int) -> list[str]:
    """Drop the collections that fell out of the kept history (active + keep_versions - 1 previous)."""
    keep_previous = max(0, keep_versions - 1)
    cut = len(pointer.history) - keep_previous
    dropped = pointer.history[:cut] if cut > 0 else []
    if dropped:
        pointer.history = pointer.history[cut:]
        store.set_pointer(pointer)
    for collection in dropped:
        if client.has_collection(collection):
            client.drop_collection(collection)
        store.delete_version(collection)
        log.info("old index dropped", extra={"collection": collection})
    return dropped


def rollback(client: MilvusClient, store: VersionStore) -> Pointer:
    """Re-activate the previously active collection."""
    pointer = store.pointer()
    if pointer is None or not pointer.history:
        raise IndexBuildError("nothing to roll back to: no previous index version is kept")
    previous = pointer.history[-1]
    if not client.has_collection(previous):
        raise IndexBuildError(f"the previous collection {previous} no longer exists")
    client.load_collection(previous)
    _wait_loaded(client, previous, 600.0)
    new = Pointer(active=previous, history=[*pointer.history[:-1], pointer.active])
    store.set_pointer(new)
    return new


def upsert_items(client: MilvusClient, store: VersionStore, catalog: ItemCatalog, settings: IndexSettings) -> int:
    """Insert new or replace changed items in the active collection; returns the rows written."""
    info = store.active()
    if catalog.embeddings is None:
        raise IndexBuildError("upserted items need embeddings")
    if catalog.dim != info.dim:
        raise IndexBuildError(f"embedding dimension {catalog.dim} does not match the index ({info.dim})")
    unknown = sorted(set(catalog.genres) - set(info.genres))
    if unknown and catalog.genre_matrix[:, [catalog.genres.index(g) for g in unknown]].any():
        raise IndexBuildError(f"genres not in the index vocabulary: {', '.join(unknown)}")
    written = 0
    for start, stop in schema.batches(len(catalog), settings.insert_batch):
        client.upsert(info.collection, schema.catalog_rows(catalog, info.genres, start, stop))
        written += stop - start
    client.flush(info.collection)
    return written


def set_availability(client: MilvusClient, store: VersionStore, item_ids: list[str], available: bool) -> int:
    """Flip the availability flag of existing items of the active collection; returns how many changed."""
    info = store.active()
    fields = [schema.ID_FIELD, schema.VECTOR_FIELD, schema.AVAILABLE_FIELD, schema.POPULARITY_FIELD]
    fields += [schema.genre_field(i) for i in range(len(info.genres))]
    rows = client.get(info.collection, ids=list(item_ids), output_fields=fields)
    for row in rows:
        row[schema.AVAILABLE_FIELD] = available
    if rows:
        client.upsert(info.collection, [{f: row[f] for f in fields} for row in rows])
        client.flush(info.collection)
    return len(rows)
