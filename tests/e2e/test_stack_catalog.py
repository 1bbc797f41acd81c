"""The live catalogue on the whole stack: CatalogService validates and acknowledges item changes; a deleted item
is never served again, by any source, from the moment its delete returns, also after the candidate service
restarts; a changed genre is honoured by the filters."""

from __future__ import annotations

import time

import grpc
import pytest

from recsys.client import RecsysClient
from recsys.common.clients import channel
from recsys.v1 import candidates_pb2, candidates_pb2_grpc, catalog_pb2, features_pb2, features_pb2_grpc

pytestmark = pytest.mark.e2e


def _users(stack, n: int) -> list[str]:
    counts = stack.interactions.groupby("user_id").size()
    return [str(u) for u in counts[counts <= 150].index[:n]]


def _popular(stack, n: int) -> list[str]:
    return [str(i) for i in stack.interactions["item_id"].value_counts().index[:n]]


def _served(client: RecsysClient, users: list[str], **filters) -> tuple[set[str], int]:
    """Every item served to the users (and how many answers were degraded)."""
    items, degraded = set(), 0
    for user in users:
        recs = client.recommend(user, 10, **filters)
        items |= {i.item_id for i in recs.items}
        degraded += recs.degraded
    return items, degraded


@pytest.mark.parametrize("call, field", [
    (lambda c: c.upsert_items([]), "items"),
    (lambda c: c.upsert_items([catalog_pb2.Item(item_id="")]), "items[0].item_id"),
    (lambda c: c.upsert_items([catalog_pb2.Item(item_id="a", genres=[""])]), "items[0].genres[0]"),
    (lambda c: c.delete_items(["ok", "x" * 300]), "item_ids[1]"),
])
def test_bad_item_changes_get_invalid_argument_naming_the_field(stack, call, field):
    with RecsysClient(stack.gateway, timeout_s=5.0) as client, pytest.raises(grpc.RpcError) as err:
        call(client)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and err.value.details().startswith(field)


def test_deleted_items_are_never_served_from_the_moment_the_delete_returns(stack):
    users = _users(stack, 40)
    gone = _popular(stack, 5)  # what popularity fills and every fallback would serve first
    with RecsysClient(stack.gateway, timeout_s=2.0) as client:
        before, _ = _served(client, users)
        assert before & set(gone), "the test needs items that are served"
        assert client.delete_items(gone) == len(gone)
        after, _ = _served(client, users)
        assert not after & set(gone)
        cold, _ = _served(client, [f"cold-{i}" for i in range(10)])  # cold start: popularity first
        assert not cold & set(gone)
    with channel(stack.cfg.address("candidates")) as ch:  # the candidate service too, ANN and popularity fills
        stub = candidates_pb2_grpc.CandidateServiceStub(ch)
        deadline = time.monotonic() + 10
        while True:
            got = {c.item_id for u in users[:10] for c in stub.Retrieve(
                candidates_pb2.RetrieveRequest(user_id=u, k=50), timeout=5).candidates}
            try:  # deleted from the Milvus collection as well: the item has no vector to search by any more
                stub.SimilarItems(candidates_pb2.SimilarItemsRequest(item_id=gone[0], k=5), timeout=5)
                in_milvus = True
            except grpc.RpcError as err:
                in_milvus = err.code() != grpc.StatusCode.NOT_FOUND
            if (not got & set(gone) and not in_milvus) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert not got & set(gone) and not in_milvus


def test_deletions_survive_a_restart_of_the_candidate_service(stack):
    gone = _popular(stack, 8)[5:8]
    users = _users(stack, 10)
    with RecsysClient(stack.gateway, timeout_s=2.0) as client:
        client.delete_items(gone)
    stack.supervisor.kill("candidates")
    with channel(stack.cfg.address("candidates")) as ch:
        stub = candidates_pb2_grpc.CandidateServiceStub(ch)
        deadline = time.monotonic() + 120
        while True:  # the supervisor restarts it; it re-reads the changelog before and while it serves
            try:
                got = {c.item_id for u in users for c in stub.Retrieve(
                    candidates_pb2.RetrieveRequest(user_id=u, k=50), timeout=5).candidates}
                break
            except grpc.RpcError:
                assert time.monotonic() < deadline, stack.supervisor.tail("candidates")
                time.sleep(1)
        time.sleep(2)  # the changelog caught up
        got |= {c.item_id for u in users for c in stub.Retrieve(
            candidates_pb2.RetrieveRequest(user_id=u, k=50), timeout=5).candidates}
    assert not got & set(gone)


def test_a_changed_genre_is_honoured_by_the_filters(stack):
    users = _users(stack, 30)
    item = _popular(stack, 12)[10]
    with RecsysClient(stack.gateway, timeout_s=2.0) as client:
        assert client.upsert_items([catalog_pb2.Item(item_id=item, title="moved", genres=["Film-Noir-Revival"])]) == 1
        excluded, _ = _served(client, users, exclude_genres=["Film-Noir-Revival"])
        assert item not in excluded
        only, _ = _served(client, users[:10], include_genres=["Film-Noir-Revival"])
        assert only <= {item}  # the only item of that new genre
        back, _ = _served(client, users)  # still served without the filter (the upsert kept it available)
        assert client.upsert_items([catalog_pb2.Item(item_id=item, available=False)]) == 1
        hidden, _ = _served(client, users)
        assert item not in hidden
    assert back is not None


def test_similar_items_within_the_budget_ranked_for_a_user_and_never_a_removed_item(stack):
    users = _users(stack, 20)
    items = _popular(stack, 60)[20:50]
    with RecsysClient(stack.gateway, timeout_s=2.0) as client:
        answers = [client.similar(item, 10) for item in items]
        for item, recs in zip(items, answers, strict=True):
            ids = [i.item_id for i in recs.items]
            assert len(ids) == 10 and len(set(ids)) == 10 and item not in ids
        fine = [r for r in answers if not r.degraded]
        assert len(fine) >= 25, [r.degraded_reasons for r in answers if r.degraded]
        assert {i.source for r in fine for i in r.items} >= {"ann"}
        totals = sorted(r.timings_ms["total"] for r in answers)
        assert totals[int(0.99 * (len(totals) - 1))] < 100
        ranked = client.similar(items[0], 10, user_id=users[0])
        assert ranked.model and {"similar", "user_features", "item_features", "rank"} <= set(ranked.timings_ms)
        removed = _popular(stack, 5)  # deleted by the test above
        assert not {i.item_id for r in answers for i in r.items} & set(removed)
        unknown = client.similar("no-such-item", 5)  # unknown: popular items, not an error
        assert len(unknown.items) == 5 and not unknown.degraded
        with pytest.raises(grpc.RpcError) as err:
            client.similar("", 5)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and err.value.details().startswith("item_id")


def _item_features(stack, item_id: str) -> dict[str, float]:
    with channel(stack.cfg.address("features")) as ch:
        m = features_pb2_grpc.FeatureServiceStub(ch).GetItemFeatures(
            features_pb2.GetItemFeaturesRequest(item_ids=[item_id]), timeout=5).features
    return dict(zip(m.names, m.values, strict=True)) if m.found and m.found[0] else {}


def test_a_new_item_takes_its_fresh_slot_from_the_moment_its_upsert_returns(stack):
    users = _users(stack, 20)
    genre = next(n for n in _item_features(stack, _popular(stack, 1)[0]) if n.startswith("item_genre_"))
    genre = genre.removeprefix("item_genre_")
    with RecsysClient(stack.gateway, timeout_s=2.0) as client:
        try:
            started = time.monotonic()
            new = catalog_pb2.Item(item_id="brand-new-1", title="New", genres=[genre], attributes={"year": "2026"})
            assert client.upsert_items([new]) == 1
            answers = [client.recommend(u, 10) for u in users]
            similar = client.similar(_popular(stack, 30)[25], 10)
            with channel(stack.cfg.address("candidates")) as ch:  # embedded by the item tower, upserted into Milvus
                stub = candidates_pb2_grpc.CandidateServiceStub(ch)
                while True:
                    try:
                        near = stub.SimilarItems(candidates_pb2.SimilarItemsRequest(item_id="brand-new-1", k=5),
                                                 timeout=5)
                        break
                    except grpc.RpcError as err:
                        assert err.code() == grpc.StatusCode.NOT_FOUND and time.monotonic() - started < 5, err
                        time.sleep(0.1)
            assert len(near.candidates) == 5
            written_by = time.monotonic() + 5
            while not _item_features(stack, "brand-new-1"):  # its content features, online for the rankers
                assert time.monotonic() < written_by, "item features not written"
                time.sleep(0.1)
            features = _item_features(stack, "brand-new-1")
            assert features[f"item_genre_{genre}"] == 1.0 and features.get("item_year", 2026.0) == 2026.0
        finally:
            client.delete_items(["brand-new-1"])  # later tests train on the logged traffic: leave no new item
        after = [client.recommend(u, 10) for u in users[:5]]
    for recs in answers:  # k=10 at the default share 0.1: one slot, and this is the only new item
        fresh = [i for i in recs.items if i.item_id == "brand-new-1"]
        assert len(fresh) == 1 and fresh[0].source == "fresh", recs
    assert sum(r.degraded for r in answers) <= 2, [r.degraded_reasons for r in answers if r.degraded]
    assert "brand-new-1" not in {i.item_id for i in similar.items}  # more-like-this has no fresh slots
    assert not {i.item_id for r in after for i in r.items} & {"brand-new-1"}
