"""The final two-tower model starts from the one fit on the history: weights matched by id, new ids fresh, and the
fine-tuning runs `finetune_epochs` (0 = from scratch, as before)."""

from __future__ import annotations

import numpy as np
import torch

from recsys.model.ids import IdIndex
from recsys.training.two_tower import TwoTowerConfig, TwoTowerNet, _start_from, train_two_tower

CFG = TwoTowerConfig(dim=8, hidden=16, epochs=2, batch_size=16, finetune_epochs=1)


def _fit(users: list[str], items: list[str], pairs: list[tuple[int, int]], cfg: TwoTowerConfig = CFG, init=None):
    rng = np.random.default_rng(0)
    u = np.array([p[0] for p in pairs])
    i = np.array([p[1] for p in pairs])
    return train_two_tower(IdIndex(users), IdIndex(items), rng.random((len(users), 3)).astype(np.float32),
                           rng.random((len(items), 2)).astype(np.float32), u, i, np.arange(len(pairs)), cfg,
                           progress=False, init=init)


def test_weights_are_copied_by_id_and_new_ids_keep_their_initialisation():
    old = _fit(["a", "b", "c"], ["x", "y", "z"], [(0, 0), (1, 1), (2, 2), (0, 1), (1, 2)] * 8)
    users, items = IdIndex(["c", "new", "a"]), IdIndex(["z", "x", "y", "w"])
    torch.manual_seed(5)
    net = TwoTowerNet(len(users), len(items), 3, 2, CFG)
    fresh_new_user = net.user_emb.weight[2].detach().clone()  # row of "new" (1-based: position 1 -> row 2)
    _start_from(net, old, users, items)
    old_user, new_user = old.net.user_emb.weight, net.user_emb.weight
    assert torch.equal(new_user[1], old_user[3]) and torch.equal(new_user[3], old_user[1])  # c, a
    assert torch.equal(new_user[2], fresh_new_user) and torch.equal(new_user[0], old_user[0])
    for table in ("item_emb", "hist_emb"):
        new_t, old_t = getattr(net, table).weight, getattr(old.net, table).weight
        assert torch.equal(new_t[1], old_t[3]) and torch.equal(new_t[2], old_t[1]) and torch.equal(new_t[3], old_t[2])
    for name, value in old.net.user_mlp.state_dict().items():
        assert torch.equal(net.user_mlp.state_dict()[name], value)


def test_fine_tuning_keeps_the_standardisation_and_runs_its_own_epochs():
    pairs = [(0, 0), (1, 1), (2, 2), (0, 1), (1, 2)] * 8
    old = _fit(["a", "b", "c"], ["x", "y", "z"], pairs)
    tuned = _fit(["a", "b", "c"], ["x", "y", "z"], pairs, init=old)
    assert np.array_equal(tuned.user_mean, old.user_mean) and np.array_equal(tuned.item_std, old.item_std)
    again = _fit(["a", "b", "c"], ["x", "y", "z"], pairs, init=old)
    assert np.array_equal(tuned.item_embeddings(), again.item_embeddings())  # same seed, same result
    scratch = _fit(["a", "b", "c"], ["x", "y", "z"], pairs, cfg=CFG)
    assert not np.array_equal(tuned.item_embeddings(), scratch.item_embeddings())
