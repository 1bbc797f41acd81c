"""The live catalogue on the whole stack: CatalogService validates and acknowledges item changes; a deleted item
is never served again, by any source, from the moment its delete returns, also after the candidate service
restarts; a changed genre is honoured by the filters."""

from __future__ import annotations

import time

import grpc
import pytest

from recsys.client import RecsysClient
from recsys.common.clients import channel
from recsys.v1 import candidates_pb2, candidates_pb2_grpc, catalog_pb2

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
