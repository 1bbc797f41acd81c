"""The model versions one replica holds: the active version per ranker, plus a few others kept loaded.

Switching is a single reference swap done after the new versions are fully loaded, so a request that
already picked its model finishes on it and no request ever sees a half-loaded one. Versions that stop
being active stay in a small LRU cache, where requests naming them explicitly still find them.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

from recsys.common.errors import FailedPrecondition


class LoadedModel(Protocol):
    name: str
    version: str


class ModelStore:
    """Active and cached models of one replica; `loader(name, version)` reads one from the registry."""

    def __init__(
        self,
        loader: Callable[[str, str], LoadedModel],
        lister: Callable[[str], list[str]],
        cache_size: int = 2,
    ) -> None:
        self._loader = loader
        self._lister = lister
        self._cache_size = cache_size
        self._active: dict[str, LoadedModel] = {}
        self._cache: OrderedDict[tuple[str, str], LoadedModel] = OrderedDict()
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    def active_versions(self) -> dict[str, str]:
        return {name: model.version for name, model in self._active.items()}

    def available(self, name: str) -> list[str]:
        return self._lister(name)

    def _check_exists(self, name: str, version: str) -> None:
        available = self._lister(name)
        if version not in available:
            shown = ", ".join(available) if available else "none (train one first)"
            raise FailedPrecondition(f"model_version: {name} version {version!r} is not available; available: {shown}")

    def lookup(self, name: str, version: str = "") -> LoadedModel | None:
        """The loaded model without waiting: the active one (version "" or equal), or a cached one."""
        active = self._active.get(name)
        if active is not None and (not version or version == active.version):
            return active
        if not version:
            return None
        model = self._cache.get((name, version))
        if model is not None:
            self._cache.move_to_end((name, version))
        return model

    async def get(self, name: str, version: str = "") -> LoadedModel:
        """The model to score with; loads an explicitly requested version on first use."""
        model = self.lookup(name, version)
        if model is not None:
            return model
        if not version:
            shown = ", ".join(self._lister(name)) or "none (train one first)"
            raise FailedPrecondition(f"model: no active {name} version; available: {shown}")
        self._check_exists(name, version)
        key = (name, version)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            model = self.lookup(name, version)
            if model is None:
                model = await asyncio.to_thread(self._loader, name, version)
                self._remember(model)
        return model

    async def activate(self, versions: dict[str, str]) -> dict[str, str]:
        """Load every requested version that is not loaded yet, then make them active in one swap."""
        for name, version in versions.items():
            self._check_exists(name, version)
        new: dict[str, LoadedModel] = {}
        for name, version in versions.items():
            model = self.lookup(name, version)
            new[name] = model if model is not None else await asyncio.to_thread(self._loader, name, version)
        retired = [m for name, m in self._active.items() if new.get(name) is not m]
        self._active = new
        for model in retired:
            self._remember(model)
        for name, model in new.items():
            self._cache.pop((name, model.version), None)
        return self.active_versions()

    def _remember(self, model: LoadedModel) -> None:
        if self._cache_size <= 0:
            return
        self._cache[(model.name, model.version)] = model
        self._cache.move_to_end((model.name, model.version))
        same = [key for key in self._cache if key[0] == model.name]  # oldest first
        for key in same[: max(0, len(same) - self._cache_size)]:
            del self._cache[key]
