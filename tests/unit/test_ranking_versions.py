"""The replica's model store: atomic switches, explicit versions, unknown versions."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import grpc
import pytest

from recsys.common.errors import FailedPrecondition
from recsys.ranking.versions import ModelStore


@dataclass(frozen=True)
class Fake:
    name: str
    version: str


REGISTRY = {"dcn": ["v1", "v2", "v3"], "lightgbm": ["v1"]}


def _store(cache: int = 1) -> tuple[ModelStore, list]:
    loads: list = []

    def load(name: str, version: str) -> Fake:
        loads.append((name, version))
        return Fake(name, version)

    return ModelStore(load, lambda name: REGISTRY.get(name, []), cache_size=cache), loads


def test_activate_swaps_and_keeps_retired_versions_cached():
    store, loads = _store()

    async def run():
        assert await store.activate({"dcn": "v1", "lightgbm": "v1"}) == {"dcn": "v1", "lightgbm": "v1"}
        old = await store.get("dcn")
        await store.activate({"dcn": "v2", "lightgbm": "v1"})
        assert (await store.get("dcn")).version == "v2"
        assert await store.get("dcn", "v1") is old  # retired, still loaded
        assert (await store.get("dcn", "v3")).version == "v3"  # loaded on demand
        assert store.lookup("dcn", "v1") is None  # cache of 1 per model: v1 evicted by v3
        await store.activate({"dcn": "v3", "lightgbm": "v1"})  # from cache: no reload

    asyncio.run(run())
    assert loads == [("dcn", "v1"), ("lightgbm", "v1"), ("dcn", "v2"), ("dcn", "v3")]


def test_unknown_version_lists_available():
    store, _ = _store()

    async def run():
        await store.activate({"dcn": "v1"})
        with pytest.raises(FailedPrecondition) as exc:
            await store.get("dcn", "v9")
        assert exc.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert "v1, v2, v3" in exc.value.message
        with pytest.raises(FailedPrecondition):
            await store.activate({"dcn": "v9"})
        assert store.active_versions() == {"dcn": "v1"}  # a failed switch changes nothing
        with pytest.raises(FailedPrecondition) as exc:
            await store.get("lightgbm")
        assert "no active lightgbm" in exc.value.message

    asyncio.run(run())
