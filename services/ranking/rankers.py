"""The ranking service's view of a ranker: one loaded ranker version, its spec and model, scoring
(user row, item rows, retrieval scores) -> one score per item.

Nothing here re-implements a feature or a model: the input matrix is `recsys.model.inputs.ranking_inputs`
with the `FeatureSpec` saved in the version, and the score is the loaded model's own `score` (DCN-v2: the
interaction probability; LightGBM: the raw lambdarank score, the order the offline pipeline ranks by), so
the service's scores equal those of the model loaded directly. Which rankers exist, and how each loads, is
`recsys.model.rankers`: this module names none of them.

A ranker's versions are the registry versions that contain its folder (`recsys.model.rankers.folder_of`);
`latest` names the version to serve.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from recsys.model import rankers as ranker_modules
from recsys.model.bundle import load_spec
from recsys.model.inputs import ranking_inputs
from recsys.model.rankers import Ranker as RankerModel
from recsys.model.registry import Registry, RegistryError
from recsys.model.spec import FeatureSpec


def configure_threads(torch_threads: int) -> None:
    """Intra-op threads of torch in this process (one replica)."""
    import torch

    torch.set_num_threads(max(1, torch_threads))


@runtime_checkable
class CompilableForest(Protocol):
    """A ranker whose trees the ranking service can compile to native code (`compiled_forest`)."""

    forest_file: str
    forest_inputs: int

    def score(self, x: np.ndarray) -> np.ndarray: ...


def list_versions(models_dir: str, name: str) -> list[str]:
    """Registry versions holding ranker `name`, oldest first."""
    registry = Registry(models_dir)
    folder = ranker_modules.folder_of(name)
    return [v for v in registry.versions() if (registry.root / v / folder).is_dir()]


def latest_version(models_dir: str, name: str) -> str | None:
    """The registry's `latest` when it holds ranker `name`, else the newest version that does."""
    available = list_versions(models_dir, name)
    latest = Registry(models_dir).latest()
    if latest in available:
        return latest
    return available[-1] if available else None


@dataclass
class Ranker:
    """One loaded ranker version: its spec and model; `inputs` builds the model input, `predict` scores."""

    name: str
    version: str
    spec: FeatureSpec
    model: RankerModel
    #: Replaces `model.score` when set (a compiled forest, see `compiled_forest`).
    scorer: Callable[[np.ndarray], np.ndarray] | None = None

    @cached_property
    def user_features(self) -> tuple[str, ...]:
        return tuple(self.spec.user_features)

    @cached_property
    def item_features(self) -> tuple[str, ...]:
        return tuple(self.spec.item_features)

    def inputs(
        self,
        user: np.ndarray,
        items: np.ndarray,
        retrieval_scores: np.ndarray | None = None,
        context: Mapping[str, str] | None = None,
    ) -> np.ndarray:
        """The model input (N, F) for one user row and N item rows (training's `ranking_inputs`).

        `context` is accepted for rankers that use request context; the current feature set has none.
        """
        return ranking_inputs(user, items, self.spec, retrieval_scores)

    def predict(self, model_input: np.ndarray) -> np.ndarray:
        """One float32 score per row."""
        return np.asarray((self.scorer or self.model.score)(model_input), dtype=np.float32)

    def score(
        self,
        user: np.ndarray,
        items: np.ndarray,
        retrieval_scores: np.ndarray | None = None,
        context: Mapping[str, str] | None = None,
    ) -> np.ndarray:
        """(user row, item rows, retrieval scores, context) -> one score per item."""
        return self.predict(self.inputs(user, items, retrieval_scores, context))


def load_ranker(
    models_dir: str, name: str, version: str, lgbm_threads: int = 1, compile_dir: str | None = None
) -> Ranker:
    """Load ranker `name` of registry `version`; with compile_dir, a compilable forest (LightGBM) is
    compiled (or loaded compiled from there) in the background and scores with it once verified."""
    name = ranker_modules.canonical(name)
    cls = ranker_modules.ranker_class(name)
    path = Registry(models_dir).path(version)
    folder = path / cls.folder
    if not folder.is_dir():
        raise RegistryError(f"version {version} in {models_dir} has no {name} ranker")
    spec = load_spec(path)
    model = cls.load(folder, lgbm_threads)
    _check_features(model, spec, folder)
    scorer = None
    if compile_dir and isinstance(model, CompilableForest):
        from recsys.ranking.compiled_forest import ForestScorer

        forest = folder / model.forest_file
        scorer = ForestScorer(model.score, forest, Path(compile_dir), model.forest_inputs).start()
    return Ranker(name=name, version=version, spec=spec, model=model, scorer=scorer)


def compile_lightgbm(models_dir: str, version: str, compile_dir: str):
    """Compile the LightGBM forest of `version` into compile_dir (or load it from there); its scorer, once
    ready: `.compiled` tells whether it serves, `.error` why not."""
    ranker = load_ranker(models_dir, "lightgbm", version, compile_dir=compile_dir)
    ranker.scorer.ready.wait()
    return ranker.scorer


def _check_features(model: RankerModel, spec: FeatureSpec, folder: Path) -> None:
    trained_on = list(getattr(model, "features", []) or [])
    if trained_on and trained_on != spec.ranking_features:
        raise RegistryError(f"{folder}: the model's features differ from the version's feature spec")
