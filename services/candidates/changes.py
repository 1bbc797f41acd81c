"""Catalogue changes at the candidate service: new and changed items enter the index, removed ones leave every
source.

The items changelog (`recsys.common.kafka.changelog`) feeds `CatalogChanges.apply`; it keeps the latest
change per item and:
- hands the set of removed items to every request (`removed`: ANN answers, popularity fills and fallbacks skip
  them, whatever Milvus still holds);
- has new and changed items upserted into the active Milvus collection, embedded by the model's item tower from
  their content (`recsys.model.item_encoder`; a model without one leaves them to the gateway's FRESH source), and
  removed ones deleted: by an `ItemWriter` (writer.py; in the service, a child process of lower CPU priority,
  writer_child.py), one round of up to 250 upserts and every pending delete every `interval_s`, resting longer
  after a big round as `pace` says, and all again into a new collection when `recsys index` swaps one in.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable

from prometheus_client import Counter, Gauge

from recsys.candidates.active import ActiveIndex
from recsys.candidates.writer import UPSERT_BATCH, ItemWriter, MilvusWriter, WriteJob
from recsys.common.kafka.changelog import deciding, is_available
from recsys.common.pacing import DutyCycle
from recsys.v1 import catalog_pb2

log = logging.getLogger("recsys.candidates.changes")

APPLIED = Counter("recsys_candidates_item_changes_total", "Item changes applied, by kind", ["kind"])
REMOVED = Gauge("recsys_candidates_removed_items", "Items deleted or unavailable, never served")
MILVUS_DELETES = Counter("recsys_candidates_milvus_deletes_total", "Items deleted from the active collection")
MILVUS_UPSERTS = Counter("recsys_candidates_milvus_upserts_total", "Items embedded and upserted into the collection")


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

    def __init__(self, active: ActiveIndex, interval_s: float = 0.1, pace: DutyCycle | None = None,
                 writer: ItemWriter | None = None) -> None:
        self.active = active
        self.writer = writer or MilvusWriter(lambda: active.milvus.client)
        self.interval_s = interval_s
        self.pace = pace or DutyCycle(1.0)
        self.removed: frozenset[str] = frozenset()
        self._stamps: dict[str, int] = {}
        self._pending: set[str] = set()
        self._items: dict[str, catalog_pb2.Item] = {}  # the latest available upsert of each item
        self._pending_upserts: set[str] = set()
        self._deleted_in = ""  # the collection every removed item was deleted from (and every upsert went to)
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
        self.writer.close()

    def apply(self, changes: Iterable[catalog_pb2.ItemChange]) -> None:
        """Apply changes in topic order: the latest change per item decides (older ones are ignored)."""
        with self._lock:
            removed = set(self.removed)
            for item_id, change in deciding(changes, self._stamps):
                kind = change.WhichOneof("change")
                if kind == "upsert" and is_available(change.upsert):
                    removed.discard(item_id)
                    self._pending.discard(item_id)
                    self._items[item_id] = change.upsert
                    self._pending_upserts.add(item_id)
                    APPLIED.labels("upsert").inc()
                else:
                    removed.add(item_id)
                    self._pending.add(item_id)
                    self._items.pop(item_id, None)
                    self._pending_upserts.discard(item_id)
                    APPLIED.labels("delete" if kind == "delete_item_id" else "unavailable").inc()
            self.removed = frozenset(removed)
            REMOVED.set(len(removed))
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(timeout=1.0)
            self._wake.clear()
            started = time.monotonic()
            try:
                self.apply_pending()
            except Exception as exc:  # noqa: BLE001 - Milvus down: the in-memory filter still holds; retry
                log.warning("applying item changes to milvus failed; will retry", extra={"error": str(exc)})
                self._wake.set()
                self._stop.wait(1.0)
            # gather the next batch; after a big one, rest in proportion (a burst must not take serving's cores)
            self._stop.wait(max(self.interval_s, self.pace.rest_s(time.monotonic() - started)))

    def apply_pending(self) -> int:
        """Apply what is pending (everything, after a swap) to the active collection: upserts, then deletes;
        returns how many items were written."""
        version = self.active.current
        if version is None or not version.searchable:
            return 0
        collection = version.info.collection
        with self._lock:
            if collection != self._deleted_in:  # a new collection: every change again
                self._pending |= set(self.removed)
                self._pending_upserts |= set(self._items)
            ids = sorted(self._pending)
            # one writer call's worth of upserts per round (every interval_s, or longer: `pace`)
            items = [self._items[i] for i in sorted(self._pending_upserts)[:UPSERT_BATCH]]
        written = 0
        if items or ids:  # raises when Milvus (or the writer) fails: everything stays pending
            written = self.writer.write(WriteJob.of(collection, version.info.model_dir, version.info.genres, items,
                                                    ids))
        MILVUS_UPSERTS.inc(max(0, written - len(ids)))
        MILVUS_DELETES.inc(len(ids))
        with self._lock:
            self._pending -= set(ids)
            self._pending_upserts -= {item.item_id for item in items}
            self._deleted_in = collection
            if self._pending_upserts:
                self._wake.set()  # more next round
        return written
