"""Fitting the DCN-v2 ranker (`recsys.model.rankers.dcn`): binary cross-entropy plus, when `listwise` > 0, a
per-user softmax loss that rewards ordering each user's positives above that user's negatives; both weighted
per example when weights are given (inverse-propensity weights of logged clicks)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from recsys.model.rankers.dcn import DCNConfig, DCNRanker, DCNv2
from recsys.training import optim
from recsys.training.examples import normalized_weights


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


def listwise_loss(
    logits: torch.Tensor, y: torch.Tensor, group: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """(Weighted) mean over positives of -log softmax(logits within the positive's group)."""
    n_groups = int(group.max()) + 1
    top = torch.full((n_groups,), -torch.inf).scatter_reduce(0, group, logits.detach(), "amax")
    sums = torch.zeros(n_groups).index_add(0, group, torch.exp(logits - top[group]))
    lse = torch.log(sums) + top
    y = y if weight is None else y * weight
    return -(y * (logits - lse[group])).sum() / y.sum().clamp(min=1.0)


def new_ranker(x: np.ndarray, features: list[str], cfg: DCNConfig) -> DCNRanker:
    """An untrained DCN-v2 (weights from torch's current seed) with the standardisation of the raw inputs `x`."""
    mean = x.mean(axis=0).astype(np.float32)
    std = x.std(axis=0)
    std = np.where(std > 1e-6, std, 1.0).astype(np.float32)
    return DCNRanker(DCNv2(x.shape[1], cfg), mean, std, cfg, features)


def train_dcn(
    x: np.ndarray,
    y: np.ndarray,
    features: list[str],
    cfg: DCNConfig,
    progress: bool = True,
    groups: np.ndarray | None = None,
    weights: np.ndarray | None = None,
) -> DCNRanker:
    """Fit DCN-v2 on raw ranking inputs `x` (N, F) and binary labels `y`; `groups` (N,) holds each row's
    user (rows grouped contiguously), needed for the listwise loss; `weights` (N,) weigh each row's loss
    (scaled to mean 1, so the learning rate means the same with and without them)."""
    with flushed_denormals():
        return _train_dcn(x, y, features, cfg, progress, groups, weights)


@contextmanager
def flushed_denormals() -> Iterator[None]:
    """Denormal floats flushed to zero in this thread inside the block, as they were after (the processor's
    state is per thread and global to everything running on it: hypothesis, for one, refuses to run with it).

    Denormals appear in DCN-v2's gradients after a few hundred steps and made each step ~3x slower (the demo's
    ranker examples: 52 s -> 19 s); flushing them changes nothing measurable (AUC equal to the third decimal)."""
    tiny = torch.tensor([1e-40], dtype=torch.float32)
    before = bool((tiny * 1.0).item() == 0.0)  # already flushed
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(before)


def _train_dcn(
    x: np.ndarray,
    y: np.ndarray,
    features: list[str],
    cfg: DCNConfig,
    progress: bool,
    groups: np.ndarray | None,
    weights: np.ndarray | None,
) -> DCNRanker:
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    ranker = new_ranker(x, features, cfg)
    net = ranker.net
    xt = ranker._prepare(x)
    yt = torch.from_numpy(np.asarray(y, dtype=np.float32))
    wt = None if weights is None else torch.from_numpy(normalized_weights(weights, len(y)).astype(np.float32))
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
    opt = optim.adam(net.parameters(), cfg.lr, cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=max(total, 1), pct_start=0.1)
    bar = tqdm(total=total, desc="dcn", unit="batch", disable=not progress, leave=False)
    for epoch, batches in enumerate(epochs):
        net.train()
        running = 0.0
        for b in batches:
            b = torch.as_tensor(b)
            logits = net(xt[b])
            wb = None if wt is None else wt[b]
            loss = F.binary_cross_entropy_with_logits(logits, yt[b], weight=wb)
            if listwise:
                _, local = torch.unique(gt[b], return_inverse=True)
                loss = loss + cfg.listwise * listwise_loss(logits, yt[b], local, wb)
            running += optim.step(loss, opt, sched, bar)
        bar.set_postfix(epoch=epoch + 1, loss=f"{running / max(len(batches), 1):.4f}")
    bar.close()
    net.eval()
    return ranker
