"""The final two-tower fit in a child process: the same model as a one-thread fit in this process, the same for the
same seed, chosen by size and setting, and a clear error when the child fails."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from recsys.training.data.synthetic import generate
from recsys.training.features import build_feature_spec
from recsys.training.final_fit import MIN_INTERACTIONS, FinalFit, in_child
from recsys.training.pipeline import TrainConfig, fit_two_tower, torch_threads, train_all
from recsys.training.two_tower import TwoTowerConfig

SMALL_TT = TwoTowerConfig(epochs=2, batch_size=256, hidden=32, dim=16)


@pytest.fixture(scope="module")
def dataset():
    return generate(n_interactions=3000, n_users=120, n_items=200, seed=5)


def test_child_fit_equals_a_one_thread_fit_here(dataset):
    spec = build_feature_spec(dataset)
    child = FinalFit(dataset, spec, SMALL_TT, seed=11)
    import torch

    torch.manual_seed(11)
    with torch_threads(1):
        here = fit_two_tower(dataset, spec, SMALL_TT, progress=False)
    there = child.result()
    assert there.items.to_list() == here.items.to_list()
    np.testing.assert_array_equal(there.item_embeddings(), here.item_embeddings())
    np.testing.assert_array_equal(there.user_tower_arrays()["w1"], here.user_tower_arrays()["w1"])


def test_train_all_with_the_child_is_deterministic(dataset):
    cfg = TrainConfig(n_hard=30, final_fit_in_child="on", two_tower=SMALL_TT).with_seed(3)
    cfg = replace(cfg, dcn=replace(cfg.dcn, epochs=1, deep=(16,)), lgbm=replace(cfg.lgbm, n_estimators=10))
    a, _ = train_all(dataset, cfg, progress=False)
    b, _ = train_all(dataset, cfg, progress=False)
    np.testing.assert_array_equal(a.item_embeddings, b.item_embeddings)


def test_when_the_child_is_used():
    assert in_child(2, MIN_INTERACTIONS, "auto") and not in_child(1, MIN_INTERACTIONS, "auto")
    assert not in_child(2, MIN_INTERACTIONS - 1, "auto")
    assert in_child(1, 10, "on") and not in_child(8, 10**9, "off")
    with pytest.raises(ValueError, match="final_fit_in_child"):
        in_child(2, 10, "sometimes")


def test_a_failing_child_raises_with_its_last_words(dataset):
    spec = build_feature_spec(dataset)
    empty = replace(dataset, interactions=dataset.interactions.iloc[:0])
    with pytest.raises(RuntimeError, match="no interactions to train the two-tower model on"):
        FinalFit(empty, spec, SMALL_TT, seed=0).result()
