"""Request validation of the ranking service: every bad input names its field."""

from __future__ import annotations

import math

import numpy as np
import pytest

from recsys.common.errors import InvalidArgument
from recsys.ranking import inputs
from recsys.v1 import features_pb2, ranking_pb2

USER = ("u_a", "u_b")
ITEM = ("i_a", "i_b", "i_c")


def _items(ids: list[str], names=ITEM, values=None) -> features_pb2.FeatureMatrix:
    if values is None:
        values = np.arange(len(ids) * len(names), dtype=np.float32).tolist()
    return features_pb2.FeatureMatrix(names=list(names), entity_ids=ids, values=values)


def _field(exc: pytest.ExceptionInfo) -> str:
    return exc.value.field


def test_candidates_limit_and_retrieval_scores():
    req = ranking_pb2.RankRequest(item_ids=["a", "b", "c"])
    assert inputs.check_candidates(req, 3).retrieval_scores is None
    with pytest.raises(InvalidArgument) as exc:
        inputs.check_candidates(req, 2)
    assert _field(exc) == "item_ids" and "maximum of 2" in exc.value.message
    req.retrieval_scores.extend([0.1, 0.2])
    with pytest.raises(InvalidArgument) as exc:
        inputs.check_candidates(req, 10)
    assert _field(exc) == "retrieval_scores"
    req.retrieval_scores.append(math.inf)
    with pytest.raises(InvalidArgument) as exc:
        inputs.check_candidates(req, 10)
    assert _field(exc) == "retrieval_scores" and "'c'" in exc.value.message


def test_columns_are_matched_by_name_and_extra_columns_ignored():
    ids = ["x", "y"]
    names = ("i_c", "extra", "i_a", "i_b")
    values = [[3, 9, 1, 2], [30, 90, 10, 20]]
    m = _items(ids, names, np.array(values, dtype=np.float32).ravel().tolist())
    got = inputs.item_rows(m, ids, ITEM)
    np.testing.assert_array_equal(got, [[1, 2, 3], [10, 20, 30]])


def test_item_rows_length_mismatch_and_order():
    m = _items(["a", "b"])
    with pytest.raises(InvalidArgument) as exc:
        inputs.item_rows(m, ["a", "b", "c"], ITEM)
    assert _field(exc) == "item_features" and "2 rows for 3 item_ids" in exc.value.message
    with pytest.raises(InvalidArgument) as exc:
        inputs.item_rows(m, ["a", "z"], ITEM)
    assert _field(exc) == "item_features.entity_ids"
    ragged = features_pb2.FeatureMatrix(names=list(ITEM), values=[1.0] * 7)
    with pytest.raises(InvalidArgument) as exc:
        inputs.item_rows(ragged, ["a", "b"], ITEM)
    assert _field(exc) == "item_features.values"


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_features_are_rejected(bad):
    values = [0.0] * 6
    values[4] = bad
    with pytest.raises(InvalidArgument) as exc:
        inputs.item_rows(_items(["a", "b"], values=values), ["a", "b"], ITEM)
    assert _field(exc) == "item_features.values" and "'b'" in exc.value.message and "'i_b'" in exc.value.message
    user = features_pb2.FeatureMatrix(names=list(USER), entity_ids=["u"], values=[1.0, bad])
    with pytest.raises(InvalidArgument) as exc:
        inputs.user_row(user, USER)
    assert _field(exc) == "user_features.values"


def test_missing_names_and_user_rows():
    with pytest.raises(InvalidArgument) as exc:
        inputs.item_rows(_items(["a"], names=("i_a", "i_b")), ["a"], ITEM)
    assert _field(exc) == "item_features.names" and "i_c" in exc.value.message
    two = features_pb2.FeatureMatrix(names=list(USER), values=[1, 2, 3, 4])
    with pytest.raises(InvalidArgument) as exc:
        inputs.user_row(two, USER)
    assert _field(exc) == "user_features"
    one = features_pb2.FeatureMatrix(names=list(reversed(USER)), values=[2, 1])
    np.testing.assert_array_equal(inputs.user_row(one, USER), [1, 2])
    assert inputs.is_empty(features_pb2.FeatureMatrix(names=list(USER)))
