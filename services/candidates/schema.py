"""The item collection's fields, index and rows.

Genres are one BOOL field per genre of the vocabulary (`genre_<i>`): Milvus Lite 2.5.1 has no unary
`not` in filter expressions and inserts ARRAY fields about 30x slower than scalars, so "has none of
these genres" is written `genre_3 == false and genre_7 == false` and "has any" as an `or` of `== true`.
"""

from __future__ import annotations

from collections.abc import Iterator

from pymilvus import DataType, MilvusClient

from recsys.candidates.catalog import ItemCatalog

ID_FIELD = "item_id"
VECTOR_FIELD = "embedding"
AVAILABLE_FIELD = "available"
POPULARITY_FIELD = "popularity"
METRIC = "IP"  # the two-tower vectors are L2-normalised: inner product = cosine
MAX_ID_LENGTH = 256
# Milvus allows 64 fields per collection by default; 4 are taken by the fields above.
MAX_GENRE_FIELDS = 56


def genre_field(position: int) -> str:
    return f"genre_{position}"


def item_schema(dim: int, n_genres: int):
    """Primary key, vector, availability, popularity and one BOOL per genre."""
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field(ID_FIELD, DataType.VARCHAR, is_primary=True, max_length=MAX_ID_LENGTH)
    schema.add_field(VECTOR_FIELD, DataType.FLOAT_VECTOR, dim=dim)
    schema.add_field(AVAILABLE_FIELD, DataType.BOOL)
    schema.add_field(POPULARITY_FIELD, DataType.FLOAT)
    for i in range(n_genres):
        schema.add_field(genre_field(i), DataType.BOOL)
    return schema


def index_params(client: MilvusClient, index_type: str, params: dict):
    """Vector index from configuration (metric IP)."""
    out = client.prepare_index_params()
    out.add_index(field_name=VECTOR_FIELD, index_type=index_type.upper(), metric_type=METRIC, params=params)
    return out


def search_params(configured: dict, k: int) -> dict:
    """Search params for top-k: HNSW's `ef` must be at least k."""
    params = dict(configured)
    if "ef" in params:
        params["ef"] = max(int(params["ef"]), k)
    return {"metric_type": METRIC, "params": params}


def catalog_rows(catalog: ItemCatalog, vocabulary: list[str], start: int, stop: int) -> list[dict]:
    """Rows [start, stop) of the catalog as entities of a collection whose genre fields follow `vocabulary`."""
    field_of = {genre: i for i, genre in enumerate(vocabulary[:MAX_GENRE_FIELDS])}
    mapped = [(g, field_of[genre]) for g, genre in enumerate(catalog.genres) if genre in field_of]
    rows = []
    for row in range(start, stop):
        entity = {
            ID_FIELD: str(catalog.item_ids[row]),
            VECTOR_FIELD: catalog.embeddings[row],
            AVAILABLE_FIELD: bool(catalog.available[row]),
            POPULARITY_FIELD: float(catalog.popularity[row]),
        }
        for position in field_of.values():
            entity[genre_field(position)] = False
        flags = catalog.genre_matrix[row]
        for g, position in mapped:
            if flags[g]:
                entity[genre_field(position)] = True
        rows.append(entity)
    return rows


def batches(n: int, size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, n, size):
        yield start, min(n, start + size)
