"""Catalogue changes at the candidate service: the removed set and its deletion from Milvus (a small fake of the
active index and the Milvus client; the real path is in tests/integration/test_catalog.py)."""

from __future__ import annotations

from types import SimpleNamespace

from recsys.candidates.changes import CatalogChanges, Skip
from recsys.v1 import catalog_pb2


class FakeClient:
    def __init__(self) -> None:
        self.deleted: list[tuple[str, list[str]]] = []
        self.fail = False

    def delete(self, collection: str, ids: list[str], timeout: float) -> None:
        if self.fail:
            raise ConnectionError("milvus down")
        self.deleted.append((collection, list(ids)))


def active(collection: str, client: FakeClient):
    # no item tower: no upserts
    info = SimpleNamespace(collection=collection, model_dir="/nonexistent-model", genres=[])
    current = SimpleNamespace(searchable=True, info=info)
    return SimpleNamespace(current=current, milvus=SimpleNamespace(client=client))


def change(item_id: str, ts: int, kind: str) -> catalog_pb2.ItemChange:
    if kind == "delete":
        return catalog_pb2.ItemChange(change_id=f"{item_id}{ts}", timestamp_ms=ts, delete_item_id=item_id)
    item = catalog_pb2.Item(item_id=item_id, available=(kind == "available"))
    return catalog_pb2.ItemChange(change_id=f"{item_id}{ts}", timestamp_ms=ts, upsert=item)


def test_deleted_and_unavailable_items_are_removed_and_deleted_from_milvus_once():
    client = FakeClient()
    changes = CatalogChanges(active("items_v1", client))
    changes.apply([change("a", 1, "delete"), change("b", 2, "unavailable"), change("c", 3, "available")])
    assert changes.removed == {"a", "b"}
    assert changes.apply_pending() == 2 and client.deleted == [("items_v1", ["a", "b"])]
    assert changes.apply_pending() == 0  # nothing pending any more
    changes.apply([change("a", 0, "available")])  # older than the delete: ignored
    assert "a" in changes.removed
    changes.apply([change("b", 5, "available")])
    assert changes.removed == {"a"}


def test_a_new_collection_gets_every_removed_item_deleted_again_and_failures_are_retried():
    client = FakeClient()
    index = active("items_v1", client)
    changes = CatalogChanges(index)
    changes.apply([change("a", 1, "delete")])
    client.fail = True
    try:
        changes.apply_pending()
    except ConnectionError:
        pass
    client.fail = False
    assert changes.apply_pending() == 1
    index.current.info.collection = "items_v2"  # `recsys index` swapped in a rebuild of the model's catalogue
    assert changes.apply_pending() == 1 and client.deleted[-1] == ("items_v2", ["a"])


def test_skip_joins_seen_and_removed_without_copying():
    seen = {"x"}
    skip = Skip(seen, frozenset({"gone"}))
    skip.add("y")
    assert "x" in skip and "y" in skip and "gone" in skip and "z" not in skip and seen == {"x", "y"}
