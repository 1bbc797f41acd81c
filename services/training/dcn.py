"""DCN-v2 ranker (Wang et al. 2021) in PyTorch: a full-rank cross network and a deep network in
parallel over the standardised ranking features, concatenated into one logit; trained with binary
cross-entropy, plus (when `listwise` > 0) a per-user softmax loss that rewards ordering each user's
positives above that user's negatives, which is what re-ranking needs. `predict_proba(X)` takes the
raw `ranking_inputs` matrix (standardisation is inside).
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

from recsys.training import optim

CLIP = 5.0


@dataclass
class DCNConfig:
    cross_layers: int = 3
    deep: tuple[int, ...] = (256, 128)
    dropout: float = 0.1
    epochs: int = 6
    batch_size: int = 1024
    min_steps_per_epoch: int = 50  # smaller batches on small data, so the model is not left underfit
    lr: float = 2e-3
    weight_decay: float = 1e-5
    listwise: float = 0.0
    seed: int = 0


class DCNv2(nn.Module):
    def __init__(self, n_in: int, cfg: DCNConfig) -> None:
        super().__init__()
        self.cross = nn.ModuleList(nn.Linear(n_in, n_in) for _ in range(cfg.cross_layers))
        layers: list[nn.Module] = []
        width = n_in
        for h in cfg.deep:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(cfg.dropout)]
            width = h
        self.deep = nn.Sequential(*layers)
        self.head = nn.Linear(n_in + width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x0, xl = x, x
        for layer in self.cross:
            xl = x0 * layer(xl) + xl
        return self.head(torch.cat([xl, self.deep(x)], dim=1)).squeeze(1)


class DCNRanker:
    """A trained DCN-v2 with its input standardisation; scores are click/interaction probabilities."""

    name = "dcn"

    def __init__(self, net: DCNv2, mean: np.ndarray, std: np.ndarray, cfg: DCNConfig, features: list[str]):
        self.net, self.mean, self.std, self.config, self.features = net, mean, std, cfg, features
        self.net.eval()

    def _prepare(self, x: np.ndarray) -> torch.Tensor:
        z = (np.asarray(x, dtype=np.float32) - self.mean) / self.std
        return torch.from_numpy(np.clip(np.nan_to_num(z), -CLIP, CLIP).astype(np.float32))

    @torch.no_grad()
    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Probability per row of the ranking-input matrix `x`."""
        return torch.sigmoid(self.net(self._prepare(x))).numpy().astype(np.float64)

    def score(self, x: np.ndarray) -> np.ndarray:
        return self.predict_proba(x)

    def save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        torch.save(self.net.state_dict(), path / "model.pt")
        np.savez(path / "standardise.npz", mean=self.mean, std=self.std)
        meta = {"config": asdict(self.config), "features": self.features}
        (path / "config.json").write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, path: Path) -> DCNRanker:
        meta = json.loads((path / "config.json").read_text())
        cfg = DCNConfig(**{**meta["config"], "deep": tuple(meta["config"]["deep"])})
        with np.load(path / "standardise.npz") as z:
            mean, std = z["mean"], z["std"]
        net = DCNv2(len(mean), cfg)
        net.load_state_dict(torch.load(path / "model.pt", weights_only=True))
        return cls(net, mean, std, cfg, meta["features"])


def _group_batches(groups: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Row-index batches of whole groups (users), groups in random order, ~batch_size rows each."""
    bounds = np.r_[0, np.flatnonzero(groups[1:] != groups[:-1]) + 1, len(groups)]
    out, current, size = [], [], 0
    for g in rng.permutation(len(bounds) - 1):
        current.append(np.arange(bounds[g], bounds[g + 1]))
        size += bounds[g + 1] - bounds[g]
        if size >= batch_size:
            out.append(np.concatenate(current))
            current, size = [], 0
    if current:
        out.append(np.concatenate(current))
    return out


def listwise_loss(logits: torch.Tensor, y: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
    """Mean over positives of -log softmax(logits within the positive's group)."""
    n_groups = int(group.max()) + 1
    top = torch.full((n_groups,), -torch.inf).scatter_reduce(0, group, logits.detach(), "amax")
    sums = torch.zeros(n_groups).index_add(0, group, torch.exp(logits - top[group]))
    lse = torch.log(sums) + top
    return -(y * (logits - lse[group])).sum() / y.sum().clamp(min=1.0)


def train_dcn(
    x: np.ndarray,
    y: np.ndarray,
    features: list[str],
    cfg: DCNConfig,
    progress: bool = True,
    groups: np.ndarray | None = None,
) -> DCNRanker:
    """Fit DCN-v2 on raw ranking inputs `x` (N, F) and binary labels `y`; `groups` (N,) holds each row's
    user (rows grouped contiguously), needed for the listwise loss."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    mean = x.mean(axis=0).astype(np.float32)
    std = x.std(axis=0)
    std = np.where(std > 1e-6, std, 1.0).astype(np.float32)
    net = DCNv2(x.shape[1], cfg)
    ranker = DCNRanker(net, mean, std, cfg, features)
    xt = ranker._prepare(x)
    yt = torch.from_numpy(np.asarray(y, dtype=np.float32))
    batch_size = int(min(cfg.batch_size, max(64, len(x) // max(cfg.min_steps_per_epoch, 1))))
    listwise = cfg.listwise > 0 and groups is not None
    if listwise:
        _, gt = np.unique(np.asarray(groups), return_inverse=True)
        gt = torch.from_numpy(gt.astype(np.int64))
        plan = lambda: _group_batches(np.asarray(groups), batch_size, rng)  # noqa: E731
    else:
        plan = lambda: list(torch.from_numpy(rng.permutation(len(x))).split(batch_size))  # noqa: E731
    epochs = [plan() for _ in range(cfg.epochs)]
    total = sum(len(e) for e in epochs)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=max(total, 1), pct_start=0.1)
    bar = tqdm(total=total, desc="dcn", unit="batch", disable=not progress, leave=False)
    for epoch, batches in enumerate(epochs):
        net.train()
        running = 0.0
        for b in batches:
            b = torch.as_tensor(b)
            logits = net(xt[b])
            loss = F.binary_cross_entropy_with_logits(logits, yt[b])
            if listwise:
                _, local = torch.unique(gt[b], return_inverse=True)
                loss = loss + cfg.listwise * listwise_loss(logits, yt[b], local)
            running += optim.step(loss, opt, sched, bar)
        bar.set_postfix(epoch=epoch + 1, loss=f"{running / max(len(batches), 1):.4f}")
    bar.close()
    net.eval()
    return ranker
