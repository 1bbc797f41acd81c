"""A registry version whose catalogue is a trained version's items plus generated ones, for benchmarks at 1M items.

Training the two-tower model with an id table of 1M items is too slow on 2 cores, so the extra items come from a
second synthetic dataset and are embedded by the *trained item tower* from their features (its unknown-id row),
as a production system embeds items that arrived after training. Users keep their trained towers and
histories; the rankers score the new items from their features. The version is a full copy of the trained one
(rankers included, ALS left out: its item factors would no longer line up) with the two-tower item table, the
item features and the popularity counts extended. Versions are cached in the registry by their parameters.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from recsys.model import layout

#: The files of the trained version that the extended one writes anew (the rest is copied, ALS left out).
_REPLACED = {f"{layout.TWO_TOWER}/{layout.ITEM_IDS}", f"{layout.TWO_TOWER}/{layout.ITEM_EMBEDDINGS}",
             f"{layout.FEATURES}/{layout.ITEM_FEATURES}", f"{layout.POPULARITY}/{layout.POPULARITY_TABLE}",
             layout.MANIFEST}


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cached_version(root: Path, params: dict) -> Path | None:
    """The newest version of the registry at `root` whose manifest's `benchmark` entry equals `params`."""
    from recsys.model.registry import Registry

    registry = Registry(root)
    for version in reversed(registry.versions()):
        if registry.manifest(version).get("benchmark") == params:
            return registry.path(version)
    return None


def _embed_new_items(trained: Path, extra: int):
    """(new ids, their item feature rows, their embeddings, their popularity) for `extra` generated items."""
    import pandas as pd
    import torch

    from recsys.model.bundle import load_item_ids, load_spec
    from recsys.model.layout import BundleLayout
    from recsys.training.data import generate
    from recsys.training.features import build_item_features
    from recsys.training.two_tower import TwoTowerConfig, TwoTowerNet

    version = BundleLayout(trained)
    spec = load_spec(trained)
    cfg = TwoTowerConfig(**json.loads((version.two_tower / "config.json").read_text()))
    trained_ids = load_item_ids(trained)
    item_frame = pd.read_parquet(version.item_features)
    raw = item_frame.set_index(item_frame["item_id"].astype(object)).reindex(trained_ids)[spec.item_features]
    raw = raw.fillna(0.0).to_numpy(np.float32)
    mean, std = raw.mean(axis=0), raw.std(axis=0)
    std = np.where(std > 1e-6, std, 1.0)  # the standardisation train_two_tower applied
    with np.load(version.user_tower) as arrays:
        n_users = len(arrays["user_ids"])
    net = TwoTowerNet(n_users, len(trained_ids), len(spec.user_features), len(spec.item_features), cfg)
    net.load_state_dict(torch.load(version.two_tower / "model.pt"))
    net.eval()

    ds = generate(max(extra // 3, 10_000), n_items=extra, seed=1)
    new_ids = ("x" + ds.items["item_id"].astype(str)).tolist()
    feats = build_item_features(ds, spec)
    feats["item_id"] = new_ids
    x = (feats[spec.item_features].to_numpy(np.float32) - mean) / std
    vectors = []
    with torch.no_grad():
        for start in range(0, len(x), 65536):
            chunk = torch.from_numpy(x[start : start + 65536])
            vectors.append(net.item_vec(torch.zeros(len(chunk), dtype=torch.long), chunk).numpy())
    counts = ds.interactions["item_id"].astype(str).value_counts()
    new_counts = counts.reindex(ds.items["item_id"].astype(str)).fillna(0).to_numpy()
    popularity = pd.DataFrame({"item_id": new_ids, "count": new_counts})
    return new_ids, feats[item_frame.columns], np.concatenate(vectors).astype(np.float32), popularity


def extend_catalogue(trained: Path, root: Path, n_items: int) -> Path:
    """The version (in the registry at `root`, made `latest`) with `n_items` items; built unless cached."""
    import pandas as pd

    from recsys.model.bundle import load_item_ids
    from recsys.model.layout import BundleLayout
    from recsys.model.registry import Registry

    params = {"items": n_items, "from": str(trained), "seed": 1}
    found = cached_version(root, params)
    if found is not None:
        _log(f"catalogue: reusing {found}")
        return found
    started = time.perf_counter()
    src = BundleLayout(trained)
    trained_ids = load_item_ids(trained)
    _log(f"catalogue: generating {n_items - len(trained_ids):,} more items, embedded by the trained item tower")
    new_ids, new_features, new_embeddings, new_popularity = _embed_new_items(trained, n_items - len(trained_ids))

    def write(path: Path) -> list[str]:
        for source in trained.rglob("*"):
            relative = source.relative_to(trained)
            if source.is_file() and str(relative) not in _REPLACED and relative.parts[0] != layout.ALS:
                (path / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(source, path / relative)
        out = BundleLayout(path)
        out.two_tower.mkdir(exist_ok=True)
        out.item_ids.write_text(json.dumps(trained_ids + new_ids))
        np.save(out.item_embeddings, np.concatenate([np.load(src.item_embeddings), new_embeddings]))
        out.features_dir.mkdir(exist_ok=True)
        item_frame = pd.read_parquet(src.item_features)
        pd.concat([item_frame, new_features], ignore_index=True).to_parquet(out.item_features, index=False)
        out.popularity.parent.mkdir(exist_ok=True)
        pop = pd.concat([pd.read_parquet(src.popularity), new_popularity], ignore_index=True)
        pop.sort_values("count", ascending=False, kind="stable").to_parquet(out.popularity)
        return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())

    manifest = {k: v for k, v in Registry(trained.parent).manifest(trained.name).items()
                if k not in ("version", "created_at", "files")}
    version = Registry(root).create(write, {**manifest, "benchmark": params})
    _log(f"catalogue: {n_items:,} items in {time.perf_counter() - started:.0f}s -> {root / version}")
    return root / version
