"""The live catalogue at the gateway: CatalogService's validation (INVALID_ARGUMENT naming the field), the
ItemChange records it produces, and the set of items this gateway must never serve (deleted or unavailable).

`LiveCatalog` is fed by the items changelog (every change, from the topic's beginning) and, for this gateway's
own DeleteItems / unavailable upserts, directly once Kafka acknowledged them: from the answer on, no source (ANN,
popularity, batch lists, fallbacks) gets an item of it into a response of this gateway.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence

from recsys.common.errors import InvalidArgument
from recsys.common.kafka.changelog import deciding, is_available
from recsys.model.spec import feature_name
from recsys.v1 import catalog_pb2

MAX_ITEMS_PER_CALL = 1000
MAX_ID_CHARS = 128
MAX_TITLE_CHARS = 512
MAX_GENRES = 64
MAX_ATTRIBUTES = 64


def _check_id(value: str, where: str) -> None:
    if not value.strip():
        raise InvalidArgument(where, "required")
    if len(value) > MAX_ID_CHARS or any(ord(c) < 32 for c in value):
        raise InvalidArgument(where, f"at most {MAX_ID_CHARS} printable characters")


def validate_upserts(items: Sequence[catalog_pb2.Item], now_ms: int | None = None) -> list[catalog_pb2.ItemChange]:
    """One ItemChange per valid item (genres normalised, updated_at_ms filled); raises InvalidArgument naming
    the first bad field."""
    if not items:
        raise InvalidArgument("items", "must not be empty")
    if len(items) > MAX_ITEMS_PER_CALL:
        raise InvalidArgument("items", f"at most {MAX_ITEMS_PER_CALL} per call (got {len(items)})")
    now_ms = now_ms or int(time.time() * 1000)
    seen: set[str] = set()
    out = []
    for i, item in enumerate(items):
        _check_id(item.item_id, f"items[{i}].item_id")
        if item.item_id in seen:
            raise InvalidArgument(f"items[{i}].item_id", f"{item.item_id!r} appears twice in the call")
        seen.add(item.item_id)
        if len(item.title) > MAX_TITLE_CHARS:
            raise InvalidArgument(f"items[{i}].title", f"at most {MAX_TITLE_CHARS} characters")
        if len(item.genres) > MAX_GENRES:
            raise InvalidArgument(f"items[{i}].genres", f"at most {MAX_GENRES}")
        for g, genre in enumerate(item.genres):
            if not genre.strip() or len(genre) > 64:
                raise InvalidArgument(f"items[{i}].genres[{g}]", "non-empty, at most 64 characters")
        if len(item.attributes) > MAX_ATTRIBUTES:
            raise InvalidArgument(f"items[{i}].attributes", f"at most {MAX_ATTRIBUTES} entries")
        for key, value in item.attributes.items():
            if not key or len(key) > 64 or len(value) > 1024:
                raise InvalidArgument(f"items[{i}].attributes[{key[:64]}]", "key 1..64, value up to 1024 characters")
        if item.published_at_ms < 0 or item.updated_at_ms < 0:
            raise InvalidArgument(f"items[{i}]", "published_at_ms / updated_at_ms must not be negative")
        copy = catalog_pb2.Item()
        copy.CopyFrom(item)
        del copy.genres[:]
        copy.genres.extend(dict.fromkeys(feature_name(g) for g in item.genres))  # normalised, order kept, unique
        if not copy.updated_at_ms:
            copy.updated_at_ms = now_ms
        if not copy.HasField("available"):
            copy.available = True  # explicit on the topic: consumers need not know the default
        out.append(catalog_pb2.ItemChange(change_id=uuid.uuid4().hex, timestamp_ms=now_ms, upsert=copy))
    return out


def validate_deletes(item_ids: Sequence[str], now_ms: int | None = None) -> list[catalog_pb2.ItemChange]:
    """One delete ItemChange per id; raises InvalidArgument naming the first bad one."""
    if not item_ids:
        raise InvalidArgument("item_ids", "must not be empty")
    if len(item_ids) > MAX_ITEMS_PER_CALL:
        raise InvalidArgument("item_ids", f"at most {MAX_ITEMS_PER_CALL} per call (got {len(item_ids)})")
    now_ms = now_ms or int(time.time() * 1000)
    for i, item_id in enumerate(item_ids):
        _check_id(item_id, f"item_ids[{i}]")
    return [catalog_pb2.ItemChange(change_id=uuid.uuid4().hex, timestamp_ms=now_ms, delete_item_id=item_id)
            for item_id in dict.fromkeys(item_ids)]


class LiveCatalog:
    """The catalogue changes this gateway knows beyond its model's catalogue: items never to serve (deleted, or
    upserted unavailable; a later available upsert brings one back) and the genres of upserted items (new or
    changed: business filters and the genre cap use them).

    Each item keeps the time of the change that decided its state: an older change (the changelog catching up
    on what came before this gateway's own acknowledged delete) does not undo a newer one. Readers on the
    serving path take immutable snapshots (no lock)."""

    def __init__(self, base_genres: Mapping[str, frozenset[str]] | None = None) -> None:
        self.base_genres: Mapping[str, frozenset[str]] = base_genres or {}
        self.removed: frozenset[str] = frozenset()
        self.genres: GenresView = GenresView(self.base_genres, {})
        self.vocabulary: frozenset[str] = frozenset()  # genres of upserted items
        #: items the model has never seen (not in its catalogue), available, newest first: (published_ms, item_id)
        self.fresh: tuple[tuple[int, str], ...] = ()
        self._fresh: dict[str, int] = {}
        self._stamps: dict[str, int] = {}
        self._lock = threading.Lock()

    def apply(self, changes: Iterable[catalog_pb2.ItemChange]) -> None:
        """Apply changes (the changelog's in topic order, or this gateway's own once acknowledged)."""
        with self._lock:
            removed = set(self.removed)
            overrides = dict(self.genres.overrides)
            for item_id, change in deciding(changes, self._stamps):
                if change.WhichOneof("change") == "upsert":
                    overrides[item_id] = frozenset(feature_name(g) for g in change.upsert.genres)
                    if is_available(change.upsert):
                        removed.discard(item_id)
                        if item_id not in self.base_genres:
                            self._fresh[item_id] = change.upsert.published_at_ms or change.timestamp_ms
                        continue
                removed.add(item_id)
                self._fresh.pop(item_id, None)
            self.removed = frozenset(removed)
            self.genres = GenresView(self.base_genres, overrides)
            self.vocabulary = frozenset(g for gs in overrides.values() for g in gs)
            self.fresh = tuple(sorted(((ms, i) for i, ms in self._fresh.items()), reverse=True))

    def fresh_items(self, now_ms: int, window_s: float, admits: Callable[[str], bool], limit: int) -> list[str]:
        """Up to `limit` new items published within the last window_s (not in the future), newest first, that
        `admits` lets through."""
        oldest = now_ms - int(window_s * 1000)
        out: list[str] = []
        for published, item_id in self.fresh:
            if published > now_ms:
                continue
            if published < oldest or len(out) >= limit:
                break
            if admits(item_id):
                out.append(item_id)
        return out


class GenresView(Mapping[str, frozenset[str]]):
    """An item's genres: from its latest upsert when it had one, else from the model's catalogue."""

    def __init__(self, base: Mapping[str, frozenset[str]], overrides: dict[str, frozenset[str]]) -> None:
        self.base = base
        self.overrides = overrides

    def __getitem__(self, item_id: str) -> frozenset[str]:
        found = self.overrides.get(item_id)
        return found if found is not None else self.base[item_id]

    def get(self, item_id: str, default=None):  # the serving path's lookup: two dict probes
        found = self.overrides.get(item_id)
        return found if found is not None else self.base.get(item_id, default)

    def __iter__(self):
        return iter({**self.base, **self.overrides})

    def __len__(self) -> int:
        return len(set(self.base) | set(self.overrides))
