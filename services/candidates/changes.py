"""Catalogue changes at the candidate service: items deleted or made unavailable leave every source.

The items changelog (`recsys.common.kafka.changelog`) feeds `CatalogChanges.apply`; it keeps the latest
change per item and:
- hands the set of removed items to every request (`removed`: ANN answers, popularity fills and fallbacks skip
  them, whatever Milvus still holds);
- deletes them from the active Milvus collection, batched (one delete call per batch), and again from a new
  collection when `recsys index` swaps one in, so that ANN searches stop finding them at all.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

from prometheus_client import Counter, Gauge

from recsys.candidates.active import ActiveIndex
from recsys.v1 import catalog_pb2

log = logging.getLogger("recsys.candidates.changes")

APPLIED = Counter("recsys_candidates_item_changes_total", "Item changes applied, by kind", ["kind"])
REMOVED = Gauge("recsys_candidates_removed_items", "Items deleted or unavailable, never served")
MILVUS_DELETES = Counter("recsys_candidates_milvus_deletes_total", "Items deleted from the active collection")
DELETE_BATCH = 1000


def _available(item: catalog_pb2.Item) -> bool:
    return not item.HasField("available") or item.available


class Skip:
    """`seen` plus the removed items, as one membership test (no copy of either per request)."""

    __slots__ = ("seen", "removed")

    def __init__(self, seen: set[str], removed: frozenset[str]) -> None:
        self.seen = seen
        self.removed = removed

    def __contains__(self, item_id: object) -> bool:
        return item_id in self.seen or item_id in self.removed

    def add(self, item_id: str) -> None:
        self.seen.add(item_id)


class CatalogChanges:
    """The removed items and their deletion from Milvus; `apply` is the changelog follower's callback."""

    def __init__(self, active: ActiveIndex, interval_s: float = 0.1) -> None:
        self.active = active
        self.interval_s = interval_s
        self.removed: frozenset[str] = frozenset()
        self._stamps: dict[str, int] = {}
        self._pending: set[str] = set()
        self._deleted_in = ""  # the collection every removed item was deleted from
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="candidates-item-changes", daemon=True)

    def start(self) -> CatalogChanges:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def apply(self, changes: Iterable[catalog_pb2.ItemChange]) -> None:
        """Apply changes in topic order: the latest change per item decides (older ones are ignored)."""
        with self._lock:
            removed = set(self.removed)
            for change in changes:
                kind = change.WhichOneof("change")
                if kind is None:
                    continue
                item_id = change.delete_item_id if kind == "delete_item_id" else change.upsert.item_id
                if change.timestamp_ms < self._stamps.get(item_id, 0):
                    continue
                self._stamps[item_id] = change.timestamp_ms
                if kind == "upsert" and _available(change.upsert):
                    removed.discard(item_id)
                    self._pending.discard(item_id)
                    APPLIED.labels("upsert").inc()
                else:
                    removed.add(item_id)
                    self._pending.add(item_id)
                    APPLIED.labels("delete" if kind == "delete_item_id" else "unavailable").inc()
            self.removed = frozenset(removed)
            REMOVED.set(len(removed))
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(timeout=1.0)
            self._wake.clear()
            try:
                self.delete_pending()
            except Exception as exc:  # noqa: BLE001 - Milvus down: the in-memory filter still holds; retry
                log.warning("deleting removed items from milvus failed; will retry", extra={"error": str(exc)})
                self._wake.set()
                self._stop.wait(1.0)
            self._stop.wait(self.interval_s)  # gather the next batch

    def delete_pending(self) -> int:
        """Delete what is pending (everything removed, after a swap) from the active collection; returns how many."""
        version = self.active.current
        if version is None or not version.searchable:
            return 0
        collection = version.info.collection
        with self._lock:
            if collection != self._deleted_in:  # a new collection: every removed item again
                self._pending |= set(self.removed)
            ids = sorted(self._pending)
        for start in range(0, len(ids), DELETE_BATCH):
            batch = ids[start:start + DELETE_BATCH]
            self.active.milvus.client.delete(collection, ids=batch, timeout=10.0)
            MILVUS_DELETES.inc(len(batch))
        with self._lock:
            self._pending -= set(ids)
            self._deleted_in = collection
        return len(ids)
