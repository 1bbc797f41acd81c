"""What one training run produces (`ModelBundle`) and its on-disk layout inside a registry version:

  feature_spec.json
  features/user_features.parquet, item_features.parquet, user_history.parquet   (Feast offline tables)
  two_tower/item_embeddings.npy, item_ids.json, user_tower.npz, model.pt, config.json
  popularity/popularity.parquet    item_id, count (descending): the gateway's fallback list
  als/user_factors.npy, item_factors.npy, user_ids.json, config.json   (MF baseline)
  dcn/model.pt, standardise.npz, config.json
  lgbm/model.txt, config.json
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.training.dcn import DCNRanker
from recsys.training.features import FeatureSpec
from recsys.training.ids import IdIndex
from recsys.training.lgbm import LGBMRankerModel
from recsys.training.two_tower import TwoTowerModel, UserEncoder

RANKERS = {"dcn": DCNRanker, "lgbm": LGBMRankerModel}


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
    rankers: dict[str, DCNRanker | LGBMRankerModel]
    popularity: np.ndarray
    als_user_ids: list[str] = field(default_factory=list)
    als_user_factors: np.ndarray | None = None
    als_item_factors: np.ndarray | None = None
    two_tower: TwoTowerModel | None = None
    config: dict = field(default_factory=dict)

    def item_feature_matrix(self) -> np.ndarray:
        """Raw item features (n_items, F_i) in `items` order."""
        frame = self.item_features.set_index(self.item_features["item_id"].astype(object))
        return frame.reindex(self.items.ids)[self.spec.item_features].fillna(0.0).to_numpy(np.float32)


def save_bundle(bundle: ModelBundle, path: Path) -> list[str]:
    """Write the bundle under `path`; returns the relative paths written."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "feature_spec.json").write_text(json.dumps(bundle.spec.to_dict(), indent=2))
    feats = path / "features"
    feats.mkdir(exist_ok=True)
    bundle.user_features.to_parquet(feats / "user_features.parquet", index=False)
    bundle.item_features.to_parquet(feats / "item_features.parquet", index=False)
    bundle.user_history.to_parquet(feats / "user_history.parquet", index=False)
    if bundle.two_tower is None:
        raise ValueError("only a freshly trained bundle (with its torch two-tower model) can be saved")
    bundle.two_tower.export(path / "two_tower")
    pop = path / "popularity"
    pop.mkdir(exist_ok=True)
    order = np.argsort(-bundle.popularity, kind="stable")
    pd.DataFrame({"item_id": bundle.items.ids[order].astype(str), "count": bundle.popularity[order]}).to_parquet(
        pop / "popularity.parquet", index=False
    )
    if bundle.als_user_factors is not None:
        als = path / "als"
        als.mkdir(exist_ok=True)
        np.save(als / "user_factors.npy", bundle.als_user_factors)
        np.save(als / "item_factors.npy", bundle.als_item_factors)
        (als / "user_ids.json").write_text(json.dumps(bundle.als_user_ids))
        (als / "config.json").write_text(json.dumps(bundle.config.get("als", {}), indent=2))
    for name, ranker in bundle.rankers.items():
        ranker.save(path / name)
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())


def load_bundle(path: Path) -> ModelBundle:
    """Load a bundle written by `save_bundle` (no torch model for the towers: serving halves only)."""
    spec = FeatureSpec.from_dict(json.loads((path / "feature_spec.json").read_text()))
    feats = path / "features"
    tt = path / "two_tower"
    items = IdIndex(json.loads((tt / "item_ids.json").read_text()))
    pop = pd.read_parquet(path / "popularity" / "popularity.parquet")
    counts = np.zeros(len(items), dtype=np.float32)
    pos = items.lookup(pop["item_id"])
    counts[pos[pos >= 0]] = pop["count"].to_numpy()[pos >= 0]
    rankers = {name: cls.load(path / name) for name, cls in RANKERS.items() if (path / name).is_dir()}
    bundle = ModelBundle(
        spec=spec,
        user_features=pd.read_parquet(feats / "user_features.parquet"),
        item_features=pd.read_parquet(feats / "item_features.parquet"),
        user_history=pd.read_parquet(feats / "user_history.parquet"),
        items=items,
        item_embeddings=np.load(tt / "item_embeddings.npy"),
        encoder=UserEncoder.load(tt),
        rankers=rankers,
        popularity=counts,
    )
    als = path / "als"
    if als.is_dir():
        bundle.als_user_ids = json.loads((als / "user_ids.json").read_text())
        bundle.als_user_factors = np.load(als / "user_factors.npy")
        bundle.als_item_factors = np.load(als / "item_factors.npy")
    manifest = path / "manifest.json"
    if manifest.exists():
        bundle.config = json.loads(manifest.read_text()).get("config", {})
    return bundle
