"""Thin adapter from the training code's rankers to the service: load one ranker of one registry version
and score (user row, item rows, retrieval scores) -> one score per item.

Nothing here re-implements a feature or a model: the input matrix is `recsys.training.features.ranking_inputs`
with the `FeatureSpec` saved in the version, and the score is the loaded model's own `score` (DCN-v2: the
interaction probability; LightGBM: the raw lambdarank score, the order the offline pipeline ranks by), so
the service's scores equal those of the model loaded directly.

Registry layout (`recsys.training.registry`): `<models_dir>/vNNNN/` holds one training run with
`feature_spec.json`, `dcn/` and `lgbm/`; `latest` names the version to serve. A ranker's versions are the
registry versions that contain its folder; the service calls LightGBM "lightgbm" (the registry folder is
"lgbm").
"""

from __future__ import annotations

import importlib.abc
import json
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from recsys.ranking.settings import canonical
from recsys.training.features import FeatureSpec, ranking_inputs
from recsys.training.registry import Registry, RegistryError

FOLDERS = {"dcn": "dcn", "lightgbm": "lgbm"}


def configure_threads(torch_threads: int) -> None:
    """Intra-op threads of torch in this process (one replica)."""
    import torch

    torch.set_num_threads(max(1, torch_threads))


class _NoSklearn(importlib.abc.MetaPathFinder):
    """Makes `sklearn` unimportable while LightGBM is imported (see `import_lightgbm`)."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "sklearn" or name.startswith("sklearn."):
            raise ImportError(f"{name} is not imported by the ranking service's LightGBM")
        return None


def import_lightgbm() -> None:
    """Import LightGBM without its optional scikit-learn integration (once per process).

    `lightgbm.compat` imports scikit-learn (and SciPy) only for the `LGBMModel` wrappers; the service uses
    `lightgbm.Booster` alone. Measured on 2 cores: `import lightgbm` 1.38 s -> 0.18 s, on the replica's start
    path. scikit-learn stays importable afterwards; only LightGBM's sklearn wrappers are off in this process.
    A process that already imported LightGBM (training, tests) is left as it is.
    """
    if "lightgbm" in sys.modules:
        return
    blocker = _NoSklearn()
    sys.meta_path.insert(0, blocker)
    try:
        import lightgbm  # noqa: F401
    finally:
        sys.meta_path.remove(blocker)


def list_versions(models_dir: str, name: str) -> list[str]:
    """Registry versions holding ranker `name`, oldest first."""
    registry = Registry(models_dir)
    folder = FOLDERS[canonical(name)]
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
    model: Any
    torch_model: bool
    #: Replaces `model.score` when set (LightGBM: the compiled forest, see `compiled_forest`).
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
        if self.torch_model:
            import torch

            with torch.inference_mode():
                return np.asarray(self.model.score(model_input), dtype=np.float32)
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
    """Load ranker `name` ("dcn" | "lightgbm") of registry `version`; with compile_dir, a LightGBM forest is
    compiled (or loaded compiled from there) in the background and scores with it once verified."""
    name = canonical(name)
    if name not in FOLDERS:
        raise ValueError(f"unknown ranker {name!r}; one of {', '.join(FOLDERS)}")
    path = Registry(models_dir).path(version)
    folder = path / FOLDERS[name]
    if not folder.is_dir():
        raise RegistryError(f"version {version} in {models_dir} has no {name} ranker")
    spec = FeatureSpec.from_dict(json.loads((path / "feature_spec.json").read_text()))
    if name == "dcn":
        from recsys.training.dcn import DCNRanker

        model = DCNRanker.load(folder)
        model.net.eval()
        torch_model = True
    else:
        import_lightgbm()
        from recsys.training.lgbm import LGBMRankerModel

        model = LGBMRankerModel.load(folder)
        model.config.threads = max(1, lgbm_threads)
        torch_model = False
    _check_features(model, spec, folder)
    scorer = None
    if name == "lightgbm" and compile_dir:
        from recsys.ranking.compiled_forest import ForestScorer

        scorer = ForestScorer(model.score, folder / "model.txt", Path(compile_dir), model.booster.num_feature()).start()
    return Ranker(name=name, version=version, spec=spec, model=model, torch_model=torch_model, scorer=scorer)


def compile_lightgbm(models_dir: str, version: str, compile_dir: str):
    """Compile the LightGBM forest of `version` into compile_dir (or load it from there); its scorer, once
    ready: `.compiled` tells whether it serves, `.error` why not."""
    ranker = load_ranker(models_dir, "lightgbm", version, compile_dir=compile_dir)
    ranker.scorer.ready.wait()
    return ranker.scorer


def _check_features(model: Any, spec: FeatureSpec, folder: Path) -> None:
    trained_on = list(getattr(model, "features", []) or [])
    if trained_on and trained_on != spec.ranking_features:
        raise RegistryError(f"{folder}: the model's features differ from the version's feature_spec.json")
