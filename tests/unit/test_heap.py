"""Freezing the start-up heap, and thawing it again after a swap so that dead frozen cycles are freed."""

from __future__ import annotations

import gc
import weakref

from recsys.common.heap import freeze_heap, refreeze_heap


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


def test_frozen_cycles_survive_collections_until_refrozen():
    try:
        node = _Node()
        ref = weakref.ref(node)
        freeze_heap()
        assert gc.get_freeze_count() > 0
        del node
        gc.collect()
        assert ref() is not None  # frozen: the full pass skips it
        refreeze_heap()
        assert ref() is None  # thawed, collected, and the rest frozen again
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
