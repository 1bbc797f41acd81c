"""The gateway's live catalogue: CatalogService validation and the state of removed items and changed genres."""

from __future__ import annotations

import pytest

from recsys.common.errors import InvalidArgument
from recsys.common.kafka.changelog import item_key
from recsys.gateway.items import LiveCatalog, validate_deletes, validate_upserts
from recsys.v1 import catalog_pb2


def upsert(item_id: str, ts: int, available: bool | None = True, genres=("Drama",)) -> catalog_pb2.ItemChange:
    item = catalog_pb2.Item(item_id=item_id, genres=list(genres))
    if available is not None:
        item.available = available
    return catalog_pb2.ItemChange(change_id=f"{item_id}-{ts}", timestamp_ms=ts, upsert=item)


def delete(item_id: str, ts: int) -> catalog_pb2.ItemChange:
    return catalog_pb2.ItemChange(change_id=f"d-{item_id}-{ts}", timestamp_ms=ts, delete_item_id=item_id)


@pytest.mark.parametrize("items, field", [
    ([], "items"),
    ([catalog_pb2.Item(item_id="")], "items[0].item_id"),
    ([catalog_pb2.Item(item_id="a"), catalog_pb2.Item(item_id="a")], "items[1].item_id"),
    ([catalog_pb2.Item(item_id="a", genres=["ok", " "])], "items[0].genres[1]"),
    ([catalog_pb2.Item(item_id="a", title="t" * 600)], "items[0].title"),
    ([catalog_pb2.Item(item_id="a", published_at_ms=-1)], "items[0]"),
    ([catalog_pb2.Item(item_id="x" * 200)], "items[0].item_id"),
])
def test_bad_upserts_name_the_field(items, field):
    with pytest.raises(InvalidArgument) as err:
        validate_upserts(items)
    assert err.value.field == field


def test_upserts_are_normalised_and_explicit():
    [change] = validate_upserts([catalog_pb2.Item(item_id="i1", genres=["Sci-Fi", "sci_fi", "Drama"])], now_ms=5)
    assert list(change.upsert.genres) == ["sci_fi", "drama"]
    assert change.upsert.HasField("available") and change.upsert.available  # unset = available, said explicitly
    assert change.upsert.updated_at_ms == 5 and change.timestamp_ms == 5 and change.change_id
    assert item_key(change) == "i1"


def test_deletes_validate_and_dedupe():
    with pytest.raises(InvalidArgument) as err:
        validate_deletes(["a", ""])
    assert err.value.field == "item_ids[1]"
    changes = validate_deletes(["a", "b", "a"], now_ms=7)
    assert [c.delete_item_id for c in changes] == ["a", "b"] and item_key(changes[0]) == "a"


def test_removed_items_follow_the_latest_change_per_item():
    live = LiveCatalog({"old": frozenset({"comedy"})})
    live.apply([upsert("a", 1), delete("b", 2), upsert("c", 3, available=False), upsert("d", 4, available=None)])
    assert live.removed == {"b", "c"}  # d: availability unset = available
    live.apply([delete("a", 10)])           # this gateway's own acknowledged delete ...
    live.apply([upsert("a", 5)])            # ... is not undone by an older change the changelog brings later
    assert "a" in live.removed
    live.apply([upsert("a", 11)])           # a newer upsert brings it back
    assert "a" not in live.removed


def test_genres_of_upserted_items_override_the_models():
    live = LiveCatalog({"old": frozenset({"comedy"}), "kept": frozenset({"drama"})})
    live.apply([upsert("old", 1, genres=("Horror",)), upsert("new", 2, genres=("Sci-Fi",))])
    assert live.genres.get("old") == {"horror"} and live.genres.get("new") == {"sci_fi"}
    assert live.genres.get("kept") == {"drama"} and live.genres.get("nope", frozenset()) == frozenset()
    assert len(live.genres) == 3


def test_new_items_are_fresh_until_removed_and_only_within_the_window():
    from dataclasses import replace

    from recsys.gateway import fresh
    from recsys.gateway.experiments import Variant
    from recsys.gateway.rerank import FilterSpec, Scored
    from recsys.gateway.settings import GatewaySettings

    live = LiveCatalog({"known": frozenset({"drama"})})
    live.apply([upsert("known", 1), upsert("new1", 2), upsert("new2", 3, genres=("Horror",)), upsert("gone", 4)])
    live.apply([delete("gone", 5)])
    assert [i for _, i in live.fresh] == ["new2", "new1"]  # newest first; the model's own item is not new
    assert live.fresh_items(10, 1.0, lambda i: True, 5) == ["new2", "new1"]
    assert live.fresh_items(10, 0.0075, lambda i: True, 5) == ["new2"]  # 7.5 ms window: published at 3 ms only
    assert live.fresh_items(10, 1.0, lambda i: i != "new2", 5) == ["new1"]

    settings = replace(GatewaySettings.from_env(), fresh_window_s=1e12)  # the test's items date from 1970
    assert fresh.slots(Variant("v", 1.0), 10, settings, live) == 1  # the default share 0.1
    assert fresh.slots(Variant("v", 1.0, fresh_share=0.3), 10, settings, live) == 3
    assert fresh.slots(Variant("v", 1.0, fresh_share=0.0), 10, settings, live) == 0
    horror = fresh.candidates(live, settings, FilterSpec(include_genres=frozenset({"horror"})), frozenset())
    assert [c.item_id for c in horror] == ["new2"] and horror[0].source == fresh.FRESH

    top = [Scored(f"i{n}", 10.0 - n, 1) for n in range(4)]
    ranked = top + [Scored("new1", 0.5, fresh.FRESH), Scored("new2", 0.9, fresh.FRESH)]
    assert [c.item_id for c in fresh.reserve(top, ranked, 1, 4)] == ["i0", "i1", "i2", "new2"]
    assert [c.item_id for c in fresh.reserve(top[:2], ranked, 2, 4)] == ["i0", "i1", "new2", "new1"]


def test_a_new_item_retrieval_found_keeps_its_fresh_claim():
    from recsys.gateway import fresh
    from recsys.gateway.rerank import Scored

    merged = fresh.merge([Scored("a", 1.0, 1), Scored("new", 0.5, 1)], [Scored("new", 0.0, fresh.FRESH),
                                                                        Scored("new2", 0.0, fresh.FRESH)])
    assert [(c.item_id, c.source) for c in merged] == [("a", 1), ("new", fresh.FRESH), ("new2", fresh.FRESH)]
    assert merged[1].score == 0.5
