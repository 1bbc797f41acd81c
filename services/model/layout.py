"""Every path of a model version's folder (a registry version, or a bundle written anywhere).

  feature_spec.json
  features/user_features.parquet, item_features.parquet, user_history.parquet   (Feast offline tables)
  two_tower/item_embeddings.npy, item_ids.json, user_tower.npz, model.pt, config.json
  popularity/popularity.parquet    item_id, count (descending): the gateway's fallback list
  als/user_factors.npy, item_factors.npy, user_ids.json, config.json   (MF baseline)
  <ranker folder>/...              one folder per ranker (`recsys.model.rankers`): dcn/, lgbm/
  manifest.json                    written by the registry

Nothing else spells these names: training writes through `BundleLayout`, serving reads through it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MANIFEST = "manifest.json"
SPEC = "feature_spec.json"
FEATURES = "features"
USER_FEATURES = "user_features.parquet"
ITEM_FEATURES = "item_features.parquet"
USER_HISTORY = "user_history.parquet"
TWO_TOWER = "two_tower"
ITEM_EMBEDDINGS = "item_embeddings.npy"
ITEM_IDS = "item_ids.json"
USER_TOWER = "user_tower.npz"
ITEM_TOWER = "item_tower.npz"
POPULARITY = "popularity"
POPULARITY_TABLE = "popularity.parquet"
ALS = "als"


@dataclass(frozen=True)
class BundleLayout:
    """The paths inside one model version's folder `root`."""

    root: Path

    def __init__(self, root: str | Path) -> None:
        object.__setattr__(self, "root", Path(root))

    @property
    def manifest(self) -> Path:
        return self.root / MANIFEST

    @property
    def spec(self) -> Path:
        return self.root / SPEC

    @property
    def features_dir(self) -> Path:
        """The Feast offline tables (what `recsys features materialize` loads)."""
        return self.root / FEATURES

    @property
    def user_features(self) -> Path:
        return self.features_dir / USER_FEATURES

    @property
    def item_features(self) -> Path:
        return self.features_dir / ITEM_FEATURES

    @property
    def user_history(self) -> Path:
        return self.features_dir / USER_HISTORY

    @property
    def two_tower(self) -> Path:
        return self.root / TWO_TOWER

    @property
    def item_embeddings(self) -> Path:
        return self.two_tower / ITEM_EMBEDDINGS

    @property
    def item_ids(self) -> Path:
        return self.two_tower / ITEM_IDS

    @property
    def user_tower(self) -> Path:
        return self.two_tower / USER_TOWER

    @property
    def item_tower(self) -> Path:
        """The item tower's arrays (`ItemEncoder`): new or changed items are embedded online from them."""
        return self.two_tower / ITEM_TOWER

    @property
    def popularity(self) -> Path:
        return self.root / POPULARITY / POPULARITY_TABLE

    @property
    def als(self) -> Path:
        return self.root / ALS

    def ranker(self, folder: str) -> Path:
        """The folder of one ranker (`recsys.model.rankers.folder_of`)."""
        return self.root / folder
