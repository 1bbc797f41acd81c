"""The numpy item tower gives the vectors the trained torch tower gives, and embeds a new item from its content."""

from __future__ import annotations

import numpy as np
import torch

from recsys.model.ids import IdIndex
from recsys.model.item_encoder import ItemEncoder, content_features
from recsys.model.spec import FeatureSpec
from recsys.training.two_tower import TwoTowerConfig, TwoTowerModel, TwoTowerNet


def test_numpy_item_tower_matches_torch_and_embeds_unknown_items():
    torch.manual_seed(0)
    cfg = TwoTowerConfig(dim=8, hidden=16)
    items = IdIndex(["a", "b", "c"])
    net = TwoTowerNet(2, len(items), 3, 4, cfg)
    rng = np.random.default_rng(0)
    raw = rng.normal(size=(3, 4)).astype(np.float32)
    mean, std = raw.mean(axis=0), raw.std(axis=0) + 0.5
    model = TwoTowerModel(net, IdIndex(["u1", "u2"]), items, cfg, (np.zeros(3, np.float32), np.ones(3, np.float32)),
                          (mean, std), ((raw - mean) / std).astype(np.float32))
    encoder = ItemEncoder(model.item_tower_arrays())
    np.testing.assert_allclose(encoder.embed_batch(["a", "b", "c"], raw), model.item_embeddings(), atol=1e-5)
    with torch.no_grad():
        expected = net.item_vec(torch.zeros(1, dtype=torch.long), torch.zeros(1, 4)).numpy()
    np.testing.assert_allclose(encoder.embed_batch(["new"], np.full((1, 4), np.nan)), expected, atol=1e-5)


def test_content_features_from_genres_and_attributes():
    spec = FeatureSpec(user_features=[], item_features=["item_genre_drama", "item_genre_sci_fi", "item_year",
                                                        "item_log_count"],
                       genres=["Drama", "Sci-Fi"], genre_names=["drama", "sci_fi"])
    row = content_features(spec, ["Sci-Fi"], {"year": "1999", "colour": "red"})
    assert row[:3].tolist() == [0.0, 1.0, 1999.0] and np.isnan(row[3])
