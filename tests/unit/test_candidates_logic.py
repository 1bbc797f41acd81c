"""Candidate-service logic without servers: filter validation and expressions, popularity lists."""

from __future__ import annotations

import time

import numpy as np
import pytest

from recsys.candidates import schema, settings
from recsys.candidates.catalog import ItemCatalog
from recsys.candidates.filters import FilterSpec, GenreVocabulary, milvus_expr, parse_filter
from recsys.candidates.popularity import PopularityIndex
from recsys.candidates.versions import VersionInfo, new_collection_name
from recsys.common.errors import InvalidArgument
from recsys.v1 import candidates_pb2

GENRES = ["Action", "Comedy", "Drama", "Sci-Fi"]


def _catalog() -> ItemCatalog:
    genres = [["Action"], ["Comedy", "Drama"], ["Drama"], ["Sci-Fi", "Action"], [], ["Comedy"]]
    return ItemCatalog.from_items(
        item_ids=[f"i{n}" for n in range(6)],
        embeddings=np.eye(6, 4, dtype=np.float32),
        item_genres=genres,
        available=[True, True, False, True, True, True],
        popularity=[10, 50, 40, 30, 20, 60],
        genres=GENRES,
    )


def test_genre_vocabulary_accepts_case_and_punctuation_variants():
    vocab = GenreVocabulary(GENRES)
    assert vocab.position("Sci-Fi") == vocab.position("sci_fi") == vocab.position("SCIFI") == 3
    assert vocab.position("Western") is None


def test_parse_filter_names_the_bad_field():
    vocab = GenreVocabulary(GENRES)
    ok = parse_filter(
        candidates_pb2.ItemFilter(include_genres=["drama", "Action"], exclude_genres=["sci-fi"], available_only=True),
        vocab,
        10,
    )
    assert ok == FilterSpec(include_genres=(0, 2), exclude_genres=(3,), available_only=True)
    cases = [
        (candidates_pb2.ItemFilter(include_genres=["Action", "Polka"]), "filter.include_genres[1]"),
        (candidates_pb2.ItemFilter(exclude_genres=["Nope"]), "filter.exclude_genres[0]"),
        (candidates_pb2.ItemFilter(exclude_item_ids=["a", ""]), "filter.exclude_item_ids[1]"),
        (candidates_pb2.ItemFilter(exclude_item_ids=["a\nb"]), "filter.exclude_item_ids[0]"),
        (candidates_pb2.ItemFilter(exclude_item_ids=[str(i) for i in range(11)]), "filter.exclude_item_ids"),
    ]
    for message, field in cases:
        with pytest.raises(InvalidArgument) as err:
            parse_filter(message, vocab, 10)
        assert err.value.field == field


def test_unknown_filter_field_is_rejected():
    raw = candidates_pb2.ItemFilter(available_only=True).SerializeToString() + bytes([0x48, 0x01])
    with pytest.raises(InvalidArgument) as err:
        parse_filter(candidates_pb2.ItemFilter.FromString(raw), GenreVocabulary(GENRES), 10)
    assert err.value.field == "filter" and "9" in err.value.message


def test_milvus_expression_uses_only_forms_milvus_lite_accepts():
    spec = FilterSpec(
        include_genres=(0, 2), exclude_genres=(3,), available_only=True, exclude_ids=frozenset({'a"b', "c\\d"})
    )
    expr = milvus_expr(spec)
    assert expr == (
        "available == true and (genre_0 == true or genre_2 == true) and genre_3 == false and "
        'item_id not in ["a\\"b", "c\\\\d"]'
    )
    assert "not (" not in expr and "!" not in expr
    assert milvus_expr(FilterSpec()) == ""


def test_catalog_rows_follow_the_collection_vocabulary():
    catalog = _catalog()
    rows = schema.catalog_rows(catalog, ["Drama", "Action", "Sci-Fi", "Comedy", "Horror"], 0, 2)
    assert rows[0]["item_id"] == "i0" and rows[0]["genre_1"] and not rows[0]["genre_0"]
    assert rows[1]["genre_0"] and rows[1]["genre_3"] and not rows[1]["genre_4"]
    assert rows[1]["popularity"] == 50.0 and rows[0]["available"] is True
    assert set(rows[0]) == {"item_id", "embedding", "available", "popularity", *[f"genre_{i}" for i in range(5)]}


def test_popularity_top_applies_the_same_filters():
    pop = PopularityIndex(_catalog(), GENRES)
    everything = pop.top(10, FilterSpec(), set())
    assert [p.item_id for p in everything] == ["i5", "i1", "i2", "i3", "i4", "i0"]
    available = pop.top(10, FilterSpec(available_only=True, exclude_ids=frozenset({"i5"})), {"i1"})
    assert [p.item_id for p in available] == ["i3", "i4", "i0"]
    no_action = pop.top(10, FilterSpec(exclude_genres=(0,)), set())
    assert [p.item_id for p in no_action] == ["i5", "i1", "i2", "i4"]
    drama_segment = pop.top(10, FilterSpec(), set(), genres=(2,))
    assert [p.item_id for p in drama_segment] == ["i1", "i2"]
    # a favourite-genre segment outside the requested genres is empty (the plain popular pass covers it)
    assert pop.top(10, FilterSpec(include_genres=(1,)), set(), genres=(3,)) == []
    pop.set_unavailable(["i3"])
    assert [p.item_id for p in pop.top(2, FilterSpec(available_only=True), {"i5", "i1"})] == ["i4", "i0"]


def test_genres_of_items_counts_index_genres():
    pop = PopularityIndex(_catalog(), ["Drama", "Action", "Western"])
    assert pop.genres_of_items(["i1", "i2", "i3", "unknown"]).tolist() == [2.0, 1.0, 0.0]


def test_version_records_round_trip_and_names_are_milvus_safe():
    info = VersionInfo("items_v0001_x", "v0001", "/m", 16, GENRES, 10, "FLAT")
    assert VersionInfo.from_json(info.to_json()) == info
    name = new_collection_name("items", "v0001/seed-1")
    assert name.startswith("items_v0001_seed_1_") and name.replace("_", "").isalnum()


def test_search_params_raise_hnsw_ef_to_k():
    assert schema.search_params({"ef": 64}, 300) == {"metric_type": "IP", "params": {"ef": 300}}
    assert schema.search_params({"nprobe": 16}, 300)["params"] == {"nprobe": 16}
    with pytest.raises(ValueError):
        settings.parse_params("[1]", "X")


def test_segment_lists_walk_their_own_order_with_the_same_filters():
    pop = PopularityIndex(_catalog(), GENRES)
    segment = pop.rows_of(["i0", "i2", "i4"])  # a segment's own ranking
    picks = pop.top(5, FilterSpec(available_only=True), set(), positions=segment)
    assert [p.item_id for p in picks] == ["i0", "i4"]


def test_demographic_segment_of_a_user():
    from recsys.candidates.segments import DemographicSegments, one_hot_groups
    from recsys.model.spec import FeatureSpec

    spec = FeatureSpec(
        user_features=["user_log_count", "user_demo_age", "user_demo_g_f", "user_demo_g_m", "user_demo_o_a",
                       "user_demo_o_b", "user_demo_o_c"],
        item_features=[], genres=[], genre_names=[], numeric_demographics=["age"],
        categorical_demographics={"g": ["F", "M"], "o": ["a", "b", "c"]},
    )  # fmt: skip
    groups = one_hot_groups(spec)
    assert groups == [[2, 3], [4, 5, 6]]
    segments = DemographicSegments(groups=groups, lists={3: np.array([0]), 5: np.array([1])})
    assert segments.segment_of(np.array([1, 30, 0, 1, 0, 1, 0], dtype=np.float32)) == 3
    assert segments.segment_of(np.array([1, 30, np.nan, np.nan, 0, 1, 0], dtype=np.float32)) == 5
    assert segments.segment_of(np.array([1, 30, 1, 0, 0, 0, 0], dtype=np.float32)) is None  # no list for 2
    assert segments.segment_of(None) is None


class _RecordingSearch:
    """Stands in for Retriever._search: ranks fixed hits, records each call's limit and expression."""

    def __init__(self, hits):
        self.hits, self.calls = hits, []

    def _search(self, version, vector, limit, expr, timeout):
        self.calls.append((limit, expr))
        return self.hits[:limit]


def test_excluded_ids_are_dropped_from_an_over_fetched_answer():
    from recsys.candidates.service import POST_FILTER_MAX, Retriever

    hits = [(f"i{j}", 1.0 - j / 100) for j in range(100)]
    search = _RecordingSearch(hits)
    spec = FilterSpec(available_only=True, exclude_ids=frozenset({"i0", "i2", "i5"}))
    got = Retriever._ann(search, None, None, 5, spec, 0.1)
    assert [item for item, _ in got] == ["i1", "i3", "i4", "i6", "i7"]
    assert search.calls == [(8, "available == true")]  # k + excluded, no id list in the expression

    many = FilterSpec(exclude_ids=frozenset(f"x{j}" for j in range(POST_FILTER_MAX)))
    Retriever._ann(search, None, None, 5, many, 0.1)
    assert search.calls[-1][0] == 5 and "not in" in search.calls[-1][1]  # too many: Milvus filters them


def test_a_milvus_rpc_error_becomes_a_short_reason():
    import grpc

    from recsys.candidates.service import _short_reason

    class Rpc(grpc.RpcError):
        def code(self):
            return grpc.StatusCode.DEADLINE_EXCEEDED

        def details(self):
            return "Deadline Exceeded"

        def __str__(self):
            return "<_InactiveRpcError debug_error_string = ...>"

    assert _short_reason(Rpc()) == "DEADLINE_EXCEEDED: Deadline Exceeded"
    assert _short_reason(ValueError("bad   things\n happen")) == "bad things happen"


class _LaggingStore:
    """A version store whose record shows only on the `shows_on`-th read (Milvus Lite right after a big index)."""

    def __init__(self, shows_on: int | None) -> None:
        self.shows_on, self.reads = shows_on, 0

    def version(self, collection: str):
        self.reads += 1
        if self.shows_on is None or self.reads < self.shows_on:
            return None
        return VersionInfo(collection=collection, model_version="v1", model_dir="/m", dim=2, genres=[], count=1,
                           index_type="FLAT")


def test_a_version_record_that_shows_late_is_waited_for_and_a_missing_one_is_not_found():
    from recsys.candidates.indexer import _version_record

    late = _LaggingStore(shows_on=3)
    assert _version_record(late, "items_v1", wait_s=5.0).collection == "items_v1"
    assert late.reads == 3
    started = time.monotonic()
    assert _version_record(_LaggingStore(shows_on=None), "items_v1", wait_s=0.5) is None
    assert 0.5 <= time.monotonic() - started < 3.0
