"""extend_floats fills a packed float field exactly as assigning the Python list does."""

import numpy as np
import pytest

from recsys.common.packed import extend_floats
from recsys.v1 import features_pb2, ranking_pb2


@pytest.mark.parametrize("shape", [(0,), (1,), (300, 30), (17, 1000)])  # 1000 floats: a two-byte length varint
def test_same_message_as_assigning_the_list(shape):
    values = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    if values.size:
        values.flat[0] = np.nan
    fast = features_pb2.FeatureMatrix(names=["a"], entity_ids=["x"])
    extend_floats(fast, "values", values)
    slow = features_pb2.FeatureMatrix(names=["a"], entity_ids=["x"], values=values.ravel().tolist())
    assert fast.SerializeToString() == slow.SerializeToString()
    np.testing.assert_array_equal(np.asarray(fast.values, dtype=np.float32), values.ravel())


def test_appends_to_what_is_there_and_converts_float64():
    message = ranking_pb2.RankResponse(scores=[1.5])
    extend_floats(message, "scores", np.array([2.25, -3.0], dtype=np.float64))
    assert list(message.scores) == [1.5, 2.25, -3.0]


def test_refuses_a_field_that_is_not_packed_float():
    with pytest.raises(TypeError, match="entity_ids"):
        extend_floats(features_pb2.FeatureMatrix(), "entity_ids", np.zeros(2))
