"""Two-tower retrieval model (PyTorch) and its numpy serving half.

User tower: user id embedding + standardised user features + mean of the embeddings of the user's
recent items -> MLP -> L2-normalised vector. Item tower: item id embedding + standardised item features
-> MLP -> L2-normalised vector. Trained on (history before t, item at t) pairs with in-batch sampled
softmax, logits = cos / temperature - log Q(item) (log-Q popularity correction), same-item collisions
masked. Index 0 of both id tables means "unknown": ids are dropped to 0 at random during training so
cold-start users (no id, no history) and new items still get useful vectors.

Export (`export(dir)`): item_embeddings.npy (float32, L2-normalised, rows in item_ids.json order) for
the vector index, and user_tower.npz which `UserEncoder` loads to embed a user online with numpy only.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from recsys.model import layout
from recsys.model.ids import IdIndex
from recsys.model.user_encoder import UserEncoder
from recsys.training import optim
from recsys.training.two_tower_fit import batch_loss, training_data


@dataclass
class TwoTowerConfig:
    dim: int = 64
    hidden: int = 128
    temperature: float = 0.1
    epochs: int = 8
    batch_size: int = 1024
    lr: float = 3e-3
    weight_decay: float = 1e-6
    history_len: int = 30
    id_dropout: float = 0.1
    seed: int = 0
    #: > 0: the final model starts from the one fit on the history before the label window (the ranker's
    #: candidates) and trains this many epochs instead of `epochs` from scratch: 40% less two-tower time, but its
    #: retrieval scores, a ranking feature, drift from those the rankers learned on (LightGBM's held-out AUC fell
    #: 0.9-1.6% on the quality sets), so off by default
    finetune_epochs: int = 0


class TwoTowerNet(nn.Module):
    def __init__(self, n_users: int, n_items: int, n_user_feats: int, n_item_feats: int, cfg: TwoTowerConfig):
        super().__init__()
        d, h = cfg.dim, cfg.hidden
        self.user_emb = nn.Embedding(n_users + 1, d)
        self.item_emb = nn.Embedding(n_items + 1, d)
        self.hist_emb = nn.Embedding(n_items + 1, d, padding_idx=0)
        for emb in (self.user_emb, self.item_emb, self.hist_emb):
            nn.init.normal_(emb.weight, 0.0, 0.05)
        with torch.no_grad():
            self.hist_emb.weight[0].zero_()
        self.user_mlp = nn.Sequential(nn.Linear(2 * d + n_user_feats, h), nn.ReLU(), nn.Linear(h, d))
        self.item_mlp = nn.Sequential(nn.Linear(d + n_item_feats, h), nn.ReLU(), nn.Linear(h, d))

    def user_vec(self, uidx: torch.Tensor, ufeat: torch.Tensor, hist: torch.Tensor) -> torch.Tensor:
        counts = (hist > 0).sum(dim=1, keepdim=True).clamp(min=1)
        hist_mean = self.hist_emb(hist).sum(dim=1) / counts
        x = torch.cat([self.user_emb(uidx), ufeat, hist_mean], dim=1)
        return F.normalize(self.user_mlp(x), dim=1)

    def item_vec(self, iidx: torch.Tensor, ifeat: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.item_mlp(torch.cat([self.item_emb(iidx), ifeat], dim=1)), dim=1)

    def forward(self, uidx: torch.Tensor, ufeat: torch.Tensor, hist: torch.Tensor, iidx: torch.Tensor,
                ifeat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(user vectors, item vectors) of a batch of pairs: one call, so that DDP can wrap the training step."""
        return self.user_vec(uidx, ufeat, hist), self.item_vec(iidx, ifeat)


class TwoTowerModel:
    """A trained two-tower model with its id indices and feature standardisation."""

    def __init__(self, net: TwoTowerNet, users: IdIndex, items: IdIndex, cfg: TwoTowerConfig,
                 user_stats: tuple[np.ndarray, np.ndarray], item_stats: tuple[np.ndarray, np.ndarray],
                 item_feats: np.ndarray) -> None:
        self.net, self.users, self.items, self.config = net, users, items, cfg
        self.user_mean, self.user_std = user_stats
        self.item_mean, self.item_std = item_stats
        self.item_feats = item_feats  # standardised, (n_items, F_i) in items order

    @torch.no_grad()
    def item_embeddings(self) -> np.ndarray:
        """(n_items, dim) float32, L2-normalised, rows in `items` order."""
        self.net.eval()
        idx = torch.arange(1, len(self.items) + 1)
        return self.net.item_vec(idx, torch.from_numpy(self.item_feats)).numpy().astype(np.float32)

    def encoder(self) -> UserEncoder:
        """The numpy user tower (what serving uses)."""
        return UserEncoder(self.user_tower_arrays())

    def user_tower_arrays(self) -> dict[str, np.ndarray]:
        net = self.net
        l1, l2 = net.user_mlp[0], net.user_mlp[2]
        return {
            "user_emb": net.user_emb.weight.detach().numpy().copy(),
            "hist_emb": net.hist_emb.weight.detach().numpy().copy(),
            "w1": l1.weight.detach().numpy().T.copy(),
            "b1": l1.bias.detach().numpy().copy(),
            "w2": l2.weight.detach().numpy().T.copy(),
            "b2": l2.bias.detach().numpy().copy(),
            "feat_mean": self.user_mean,
            "feat_std": self.user_std,
            "user_ids": np.array(self.users.to_list(), dtype=object).astype(str),
            "item_ids": np.array(self.items.to_list(), dtype=object).astype(str),
            "history_len": np.array(self.config.history_len),
        }

    def item_tower_arrays(self) -> dict[str, np.ndarray]:
        """The item tower for `ItemEncoder`: id embeddings (row 0 = unknown item), MLP and feature standardisation."""
        net = self.net
        l1, l2 = net.item_mlp[0], net.item_mlp[2]
        return {
            "item_emb": net.item_emb.weight.detach().numpy().copy(),
            "w1": l1.weight.detach().numpy().T.copy(),
            "b1": l1.bias.detach().numpy().copy(),
            "w2": l2.weight.detach().numpy().T.copy(),
            "b2": l2.bias.detach().numpy().copy(),
            "feat_mean": self.item_mean,
            "feat_std": self.item_std,
            "item_ids": np.array(self.items.to_list(), dtype=object).astype(str),
        }

    def export(self, path: Path) -> None:
        """Write item_embeddings.npy, item_ids.json, user_tower.npz, item_tower.npz, torch state and config."""
        path.mkdir(parents=True, exist_ok=True)
        np.save(path / layout.ITEM_EMBEDDINGS, self.item_embeddings())
        (path / layout.ITEM_IDS).write_text(json.dumps(self.items.to_list()))
        np.savez(path / layout.USER_TOWER, **self.user_tower_arrays())
        np.savez(path / layout.ITEM_TOWER, **self.item_tower_arrays())
        torch.save(self.net.state_dict(), path / "model.pt")
        (path / "config.json").write_text(json.dumps(asdict(self.config), indent=2))


@torch.no_grad()
def _start_from(net: TwoTowerNet, init: TwoTowerModel, users: IdIndex, items: IdIndex) -> None:
    """Copy `init`'s weights into `net`: the MLPs as they are, id embeddings row by row where the id is known to
    both (row 0, the unknown id, too); ids new to `net` keep their fresh initialisation."""
    net.user_mlp.load_state_dict(init.net.user_mlp.state_dict())
    net.item_mlp.load_state_dict(init.net.item_mlp.state_dict())
    for table, old_table, new_ids, old_ids in (
        (net.user_emb, init.net.user_emb, users, init.users),
        (net.item_emb, init.net.item_emb, items, init.items),
        (net.hist_emb, init.net.hist_emb, items, init.items),
    ):
        old_rows = old_ids.lookup(new_ids.ids)  # -1 where new
        known = np.flatnonzero(old_rows >= 0)
        table.weight[0] = old_table.weight[0]
        table.weight[torch.from_numpy(known + 1)] = old_table.weight[torch.from_numpy(old_rows[known] + 1)]


def new_net(users: IdIndex, items: IdIndex, n_user_feats: int, n_item_feats: int, cfg: TwoTowerConfig,
            init: TwoTowerModel | None = None) -> tuple[TwoTowerNet, int]:
    """The net a fit starts from, initialised from `cfg.seed` (and `init`'s weights when given), and its epochs."""
    torch.manual_seed(cfg.seed)
    net = TwoTowerNet(len(users), len(items), n_user_feats, n_item_feats, cfg)
    if init is None:
        return net, cfg.epochs
    _start_from(net, init, users, items)
    return net, cfg.finetune_epochs


def train_two_tower(
    users: IdIndex,
    items: IdIndex,
    user_feats: np.ndarray,
    item_feats: np.ndarray,
    user_rows: np.ndarray,
    item_rows: np.ndarray,
    timestamps: np.ndarray,
    cfg: TwoTowerConfig,
    progress: bool = True,
    init: TwoTowerModel | None = None,
) -> TwoTowerModel:
    """Fit the two towers on interactions given as 0-based positions into `users` / `items`.

    `user_feats` (n_users, F_u) and `item_feats` (n_items, F_i) are raw feature rows in index order. With
    `init` (a model fit on an earlier part of the same data) training starts from its weights, matched by user
    and item id, keeps its feature standardisation, and runs `cfg.finetune_epochs` epochs instead of `epochs`.
    """
    if len(user_rows) == 0:
        raise ValueError("no interactions to train the two-tower model on")
    rng = np.random.default_rng(cfg.seed)
    data = training_data(len(items), user_feats, item_feats, user_rows, item_rows, timestamps, cfg.history_len,
                         None if init is None else ((init.user_mean, init.user_std), (init.item_mean, init.item_std)))
    net, epochs = new_net(users, items, user_feats.shape[1], item_feats.shape[1], cfg, init)
    opt = optim.adam(net.parameters(), cfg.lr, cfg.weight_decay)
    n = len(data)
    steps = (n + cfg.batch_size - 1) // cfg.batch_size
    total = epochs * steps
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total, pct_start=0.1)
    bar = tqdm(total=total, desc="two-tower", unit="batch", disable=not progress, leave=False)
    for epoch in range(epochs):
        net.train()
        perm = torch.from_numpy(rng.permutation(n))
        running = 0.0
        for s in range(steps):
            b = perm[s * cfg.batch_size : (s + 1) * cfg.batch_size]
            loss = batch_loss(net, data, b, rng, cfg.id_dropout, cfg.temperature)
            running += optim.step(loss, opt, sched, bar)
        bar.set_postfix(epoch=epoch + 1, loss=f"{running / steps:.3f}")
    bar.close()
    net.eval()
    return TwoTowerModel(net, users, items, cfg, data.user_stats, data.item_stats, data.itf)
