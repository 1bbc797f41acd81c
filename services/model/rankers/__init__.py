"""The rankers: one module per ranker, each implementing `Ranker` and naming its class `RANKER`.

A ranker's name is its module's name here ("dcn", "lightgbm"); `names()` lists them without importing
any (the gateway validates experiment variants with it and imports neither torch nor LightGBM).
Adding a ranker is one new module: its class (score, save, load, `folder` in the bundle) as `RANKER`,
and a `train_<name>` in `recsys.training`.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np

#: Old spellings still accepted (the registry's folder name of LightGBM).
ALIASES = {"lgbm": "lightgbm"}


class UnknownRanker(ValueError):
    """A ranker name that no module in `recsys.model.rankers` defines."""


@runtime_checkable
class Ranker(Protocol):
    """A trained ranker: scores rows of the ranking-input matrix (`recsys.model.inputs.ranking_inputs`)."""

    #: The service's and the CLI's name (the module's name).
    name: ClassVar[str]
    #: Its folder inside a model version (`recsys.model.layout.BundleLayout.ranker`).
    folder: ClassVar[str]
    #: The ranking features it was trained on, in column order.
    features: list[str]

    def score(self, x: np.ndarray) -> np.ndarray:
        """One ranking score per row (higher = better; what serving orders by)."""
        ...

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """One calibrated interaction probability per row."""
        ...

    def save(self, path: Path) -> None:
        """Write the ranker into the folder `path`."""
        ...

    @classmethod
    def load(cls, path: Path, threads: int | None = None) -> Ranker:
        """Load a ranker saved by `save`; `threads` (when given) sets its prediction threads."""
        ...


def names() -> tuple[str, ...]:
    """Every ranker's name (the modules of this package), without importing them."""
    return tuple(sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")))


def canonical(name: str) -> str:
    """The ranker's name as the services use it: case and surrounding spaces ignored, aliases resolved."""
    name = name.strip().lower()
    return ALIASES.get(name, name)


def ranker_class(name: str) -> type[Ranker]:
    """The class of ranker `name` (imports its module, hence torch or LightGBM)."""
    name = canonical(name)
    if name not in names():
        raise UnknownRanker(f"unknown ranker {name!r}; one of {', '.join(names())}")
    return importlib.import_module(f"{__name__}.{name}").RANKER


def folder_of(name: str) -> str:
    """The folder of ranker `name` inside a model version."""
    return ranker_class(name).folder


def load(name: str, version_dir: str | Path, threads: int | None = None) -> Ranker:
    """Load ranker `name` from a model version's folder."""
    cls = ranker_class(name)
    return cls.load(Path(version_dir) / cls.folder, threads)
