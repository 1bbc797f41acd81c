"""IdIndex: the per-id path for small lookups agrees with pandas' vectorised one."""

import numpy as np
import pytest

from recsys.model.ids import SMALL_LOOKUP, IdIndex


def test_small_and_large_lookups_agree_and_mark_unknown_ids():
    index = IdIndex([f"i{n}" for n in range(1000)])
    wanted = ["i5", "nope", "i999", "i0", "i5"]
    small = index.lookup(wanted)
    large = index.lookup(wanted * (SMALL_LOOKUP // len(wanted) + 1))  # above SMALL_LOOKUP: pandas' path
    assert small.dtype == np.int64
    assert small.tolist() == [5, -1, 999, 0, 5]
    assert large.tolist() == small.tolist() * (SMALL_LOOKUP // len(wanted) + 1)
    assert index.lookup(np.array(wanted, dtype=object)).tolist() == small.tolist()
    assert index.lookup([]).tolist() == []


def test_non_string_ids_are_unknown_on_both_paths():
    index = IdIndex(["1", "2"])
    assert index.lookup([1]).tolist() == [-1]
    assert index.lookup([1] * (SMALL_LOOKUP + 1)).tolist() == [-1] * (SMALL_LOOKUP + 1)


def test_duplicate_ids_are_refused():
    with pytest.raises(ValueError, match="duplicate"):
        IdIndex(["a", "b", "a"])
