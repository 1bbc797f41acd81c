"""Which item collection is live: a version pointer kept in Milvus itself.

Milvus Lite 2.5.1 does not implement aliases (create_alias answers UNIMPLEMENTED), so instead of an
alias the pointer is a row in a tiny metadata collection `<base>_meta`, the same on Milvus Lite and a
Milvus server: key "active" holds the live collection and the activation history (for rollback), and
key "version:<collection>" describes each built collection (model version, genre fields, size).
Readers (the candidate service) cache the pointer and re-read it every few hundred milliseconds;
collections are swapped only after they are loaded, and the previous ones stay for rollback.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field

from pymilvus import DataType, MilvusClient

META_KEY_FIELD = "key"
META_VALUE_FIELD = "value"
META_VECTOR_FIELD = "unused_vector"  # every Milvus collection needs one vector field
ACTIVE_KEY = "active"
MAX_VALUE_LENGTH = 65535


class NoActiveVersion(LookupError):
    """No index has been built (or activated) yet."""


@dataclass
class VersionInfo:
    """One built item collection."""

    collection: str
    model_version: str
    model_dir: str
    dim: int
    genres: list[str]  # genre field i holds genres[i]
    count: int
    index_type: str
    built_at: float = field(default_factory=time.time)
    build_seconds: float = 0.0

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> VersionInfo:
        data = json.loads(text)
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


@dataclass
class Pointer:
    """The live collection and the previously live ones, most recent last."""

    active: str
    history: list[str] = field(default_factory=list)
    updated_at: float = field(default_factory=time.time)


def meta_collection(base: str) -> str:
    return f"{base}_meta"


def new_collection_name(base: str, model_version: str) -> str:
    """`<base>_<model version>_<utc timestamp, ms>`: letters, digits and underscores only."""
    tag = re.sub(r"[^0-9A-Za-z_]+", "_", model_version).strip("_")[:60] or "model"
    now = time.time()
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(now)) + f"{int(now * 1000) % 1000:03d}"
    return f"{base}_{tag}_{stamp}"


class VersionStore:
    """Reads and writes the pointer and version records of one base name."""

    def __init__(self, client: MilvusClient, base: str) -> None:
        self.client = client
        self.base = base
        self.meta = meta_collection(base)

    def ensure(self) -> None:
        """Create and load the metadata collection when missing."""
        if not self.client.has_collection(self.meta):
            schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field(META_KEY_FIELD, DataType.VARCHAR, is_primary=True, max_length=512)
            schema.add_field(META_VALUE_FIELD, DataType.VARCHAR, max_length=MAX_VALUE_LENGTH)
            schema.add_field(META_VECTOR_FIELD, DataType.FLOAT_VECTOR, dim=2)
            params = self.client.prepare_index_params()
            params.add_index(field_name=META_VECTOR_FIELD, index_type="FLAT", metric_type="L2")
            self.client.create_collection(self.meta, schema=schema, index_params=params, consistency_level="Strong")
        self.client.load_collection(self.meta)

    def _get(self, key: str, timeout: float | None = None) -> str | None:
        if not self.client.has_collection(self.meta, timeout=timeout):
            return None
        rows = self.client.get(self.meta, ids=[key], output_fields=[META_VALUE_FIELD], timeout=timeout)
        return rows[0][META_VALUE_FIELD] if rows else None

    def _put(self, key: str, value: str) -> None:
        if len(value) > MAX_VALUE_LENGTH:
            raise ValueError(f"metadata record {key!r} is too long ({len(value)} characters)")
        self.client.upsert(self.meta, [{META_KEY_FIELD: key, META_VALUE_FIELD: value, META_VECTOR_FIELD: [0.0, 0.0]}])

    def pointer(self, timeout: float | None = None) -> Pointer | None:
        text = self._get(ACTIVE_KEY, timeout=timeout)
        if text is None:
            return None
        data = json.loads(text)
        return Pointer(active=data["active"], history=list(data.get("history", [])), updated_at=data["updated_at"])

    def set_pointer(self, pointer: Pointer) -> None:
        pointer.updated_at = time.time()
        self._put(ACTIVE_KEY, json.dumps(asdict(pointer)))

    def version(self, collection: str, timeout: float | None = None) -> VersionInfo | None:
        text = self._get(f"version:{collection}", timeout=timeout)
        return None if text is None else VersionInfo.from_json(text)

    def put_version(self, info: VersionInfo) -> None:
        self._put(f"version:{info.collection}", info.to_json())

    def delete_version(self, collection: str) -> None:
        self.client.delete(self.meta, ids=[f"version:{collection}"])

    def active(self, timeout: float | None = None) -> VersionInfo:
        """The live version, or NoActiveVersion."""
        pointer = self.pointer(timeout=timeout)
        if pointer is None:
            raise NoActiveVersion(f"no active index for {self.base!r}: run `recsys index`")
        info = self.version(pointer.active, timeout=timeout)
        if info is None:
            raise NoActiveVersion(f"the active collection {pointer.active!r} has no version record")
        return info

    def built_versions(self) -> list[str]:
        """Collections of this base name that exist in Milvus, oldest first."""
        pattern = re.compile(rf"^{re.escape(self.base)}_[0-9A-Za-z_]+_\d{{17}}$")
        names = [c for c in self.client.list_collections() if pattern.match(c)]
        return sorted(names, key=lambda c: c[-17:])
