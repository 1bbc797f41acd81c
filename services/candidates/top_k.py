"""ANN top-k searches returning only (item id, score) pairs, one list per query vector.

`MilvusClient.search` turns every hit into a `Hit` dict behind decorator layers: about a third of the
candidate service's Python time per 300-hit request. The candidate service reads nothing but ids and
scores, so this builds the request with pymilvus' own `Prepare` and consistency rules, sends it on the
client's gRPC stub (same channel, auth and database), and reads the two columns of the response.
Both deployments (Lite and server) answer it; `tests/integration/test_candidates.py` checks it against
`MilvusClient.search`.
"""

from __future__ import annotations

import numpy as np
from pymilvus import MilvusClient
from pymilvus.client import ts_utils
from pymilvus.client.call_context import _api_level_md
from pymilvus.client.prepare import Prepare
from pymilvus.client.utils import check_status

from recsys.candidates import schema


def search_top_k(
    client: MilvusClient,
    collection: str,
    vector: np.ndarray,
    *,
    limit: int,
    filter: str = "",  # noqa: A002 - MilvusClient.search's name for it
    search_params: dict | None = None,
    timeout: float | None = None,
) -> list[tuple[str, float]]:
    """[(item id, score)] best first for one query vector; raises MilvusException on an error status."""
    return search_top_k_many(
        client, collection, [vector], limit=limit, filter=filter, search_params=search_params, timeout=timeout
    )[0]


def search_top_k_many(
    client: MilvusClient,
    collection: str,
    vectors: list[np.ndarray],
    *,
    limit: int,
    filter: str = "",  # noqa: A002 - MilvusClient.search's name for it
    search_params: dict | None = None,
    timeout: float | None = None,
) -> list[list[tuple[str, float]]]:
    """One Milvus request for several query vectors (nq > 1) sharing a filter: per vector, [(item id, score)]
    best first. Raises MilvusException on an error status."""
    handler = client._get_connection()
    context = client._generate_call_context()
    consistency: dict = {}
    use_default = ts_utils.construct_guarantee_ts(
        collection, consistency, handler.server_address, context.get_db_name()
    )
    request = Prepare.search_requests_with_expr(
        collection_name=collection,
        anns_field=schema.VECTOR_FIELD,
        param=search_params or {},
        limit=limit,
        data=[vector.tolist() for vector in vectors],
        expr=filter or None,
        use_default_consistency=use_default,
        **consistency,
    )
    response = handler._stub.Search(request, timeout=timeout, metadata=_api_level_md(context))
    check_status(response.status)
    results = response.results
    ids = results.ids.str_id.data if results.ids.HasField("str_id") else results.ids.int_id.data
    scores = results.scores
    per_query: list[list[tuple[str, float]]] = []
    start = 0
    for n in results.topks or [len(ids)]:
        end = start + n
        per_query.append([(str(i), float(s)) for i, s in zip(ids[start:end], scores[start:end], strict=True)])
        start = end
    per_query.extend([] for _ in range(len(vectors) - len(per_query)))
    return per_query
