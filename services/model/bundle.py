"""What one training run produces (`ModelBundle`), written and read through `recsys.model.layout`.

Saving needs the freshly trained torch two-tower model (training); loading gives the serving halves only
(numpy user tower, embeddings, rankers, feature tables), which is what batch inference and evaluation use.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

from recsys.model import rankers as ranker_modules
from recsys.model.ids import IdIndex
from recsys.model.layout import BundleLayout
from recsys.model.rankers import Ranker
from recsys.model.spec import FeatureSpec
from recsys.model.user_encoder import UserEncoder


class TowerExport(Protocol):
    """The trained two-tower model as far as saving it goes (`recsys.training.two_tower.TwoTowerModel`)."""

    def export(self, path: Path) -> None: ...


@dataclass
class ModelBundle:
    """Everything serving and batch inference need; `items` orders item_embeddings / item_features rows."""

    spec: FeatureSpec
    user_features: pd.DataFrame
    item_features: pd.DataFrame
    user_history: pd.DataFrame
    items: IdIndex
    item_embeddings: np.ndarray
    encoder: UserEncoder
    rankers: dict[str, Ranker]  # by folder name
    popularity: np.ndarray
    als_user_ids: list[str] = field(default_factory=list)
    als_user_factors: np.ndarray | None = None
    als_item_factors: np.ndarray | None = None
    two_tower: TowerExport | None = None
    config: dict = field(default_factory=dict)

    def item_feature_matrix(self) -> np.ndarray:
        """Raw item features (n_items, F_i) in `items` order."""
        frame = self.item_features.set_index(self.item_features["item_id"].astype(object))
        return frame.reindex(self.items.ids)[self.spec.item_features].fillna(0.0).to_numpy(np.float32)


def save_bundle(bundle: ModelBundle, path: Path) -> list[str]:
    """Write the bundle under `path`; returns the relative paths written."""
    out = BundleLayout(path)
    out.features_dir.mkdir(parents=True, exist_ok=True)
    out.spec.write_text(json.dumps(bundle.spec.to_dict(), indent=2))
    bundle.user_features.to_parquet(out.user_features, index=False)
    bundle.item_features.to_parquet(out.item_features, index=False)
    bundle.user_history.to_parquet(out.user_history, index=False)
    if bundle.two_tower is None:
        raise ValueError("only a freshly trained bundle (with its torch two-tower model) can be saved")
    bundle.two_tower.export(out.two_tower)
    out.popularity.parent.mkdir(exist_ok=True)
    order = np.argsort(-bundle.popularity, kind="stable")
    pd.DataFrame({"item_id": bundle.items.ids[order].astype(str), "count": bundle.popularity[order]}).to_parquet(
        out.popularity, index=False
    )
    if bundle.als_user_factors is not None:
        out.als.mkdir(exist_ok=True)
        np.save(out.als / "user_factors.npy", bundle.als_user_factors)
        np.save(out.als / "item_factors.npy", bundle.als_item_factors)
        (out.als / "user_ids.json").write_text(json.dumps(bundle.als_user_ids))
        (out.als / "config.json").write_text(json.dumps(bundle.config.get("als", {}), indent=2))
    for folder, ranker in bundle.rankers.items():
        ranker.save(out.ranker(folder))
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())


def load_spec(path: Path) -> FeatureSpec:
    """The feature spec of the model version in `path`."""
    return FeatureSpec.from_dict(json.loads(BundleLayout(path).spec.read_text()))


def load_item_ids(path: Path) -> list[str]:
    """The item ids of the version in `path`, in the order of its item embeddings."""
    return json.loads(BundleLayout(path).item_ids.read_text())


def load_rankers(path: Path) -> dict[str, Ranker]:
    """Every ranker the version in `path` holds, by folder name."""
    found = {}
    for name in ranker_modules.names():
        folder = ranker_modules.folder_of(name)
        if BundleLayout(path).ranker(folder).is_dir():
            found[folder] = ranker_modules.load(name, path)
    return found


def load_bundle(path: Path) -> ModelBundle:
    """Load a bundle written by `save_bundle` (no torch model for the towers: serving halves only)."""
    src = BundleLayout(path)
    items = IdIndex(load_item_ids(path))
    pop = pd.read_parquet(src.popularity)
    counts = np.zeros(len(items), dtype=np.float32)
    pos = items.lookup(pop["item_id"])
    counts[pos[pos >= 0]] = pop["count"].to_numpy()[pos >= 0]
    bundle = ModelBundle(
        spec=load_spec(path),
        user_features=pd.read_parquet(src.user_features),
        item_features=pd.read_parquet(src.item_features),
        user_history=pd.read_parquet(src.user_history),
        items=items,
        item_embeddings=np.load(src.item_embeddings),
        encoder=UserEncoder.load(src.user_tower),
        rankers=load_rankers(path),
        popularity=counts,
    )
    if src.als.is_dir():
        bundle.als_user_ids = json.loads((src.als / "user_ids.json").read_text())
        bundle.als_user_factors = np.load(src.als / "user_factors.npy")
        bundle.als_item_factors = np.load(src.als / "item_factors.npy")
    if src.manifest.exists():
        bundle.config = json.loads(src.manifest.read_text()).get("config", {})
    return bundle
