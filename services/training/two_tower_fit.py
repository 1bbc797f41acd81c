"""The pieces of a two-tower fit shared by the in-process trainer (`two_tower.train_two_tower`) and the Ray Train
one (`ray_two_tower`): the training examples and feature tensors, and the loss of a batch (in-batch sampled softmax
with the log-Q correction, same-item collisions masked, ids dropped at random)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def standardise(mat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = mat.mean(axis=0) if len(mat) else np.zeros(mat.shape[1])
    std = mat.std(axis=0) if len(mat) else np.ones(mat.shape[1])
    return mean.astype(np.float32), np.where(std > 1e-6, std, 1.0).astype(np.float32)


def history_examples(
    user_rows: np.ndarray, item_rows: np.ndarray, timestamps: np.ndarray, history_len: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training pairs in time order: (user row, item row, the user's previous `history_len` item rows).

    Rows are 1-based (0 = padding). Returns users (N,), items (N,), history (N, history_len) oldest first,
    right-aligned.
    """
    order = np.lexsort((np.arange(len(user_rows)), timestamps, user_rows))
    users, items = user_rows[order], item_rows[order]
    hist = np.zeros((len(users), history_len), dtype=np.int64)
    starts = np.r_[0, np.flatnonzero(users[1:] != users[:-1]) + 1]
    pos = np.arange(len(users)) - np.repeat(starts, np.diff(np.r_[starts, len(users)]))
    for lag in range(1, history_len + 1):
        ok = pos >= lag
        hist[ok, history_len - lag] = items[np.flatnonzero(ok) - lag]
    return users, items, hist


@dataclass
class TrainingData:
    """What a fit walks: examples (1-based rows; 0 = unknown or padding) and standardised feature tables."""

    users: torch.Tensor  # (N,) user row of each example
    items: torch.Tensor  # (N,) item row
    hist: torch.Tensor  # (N, history_len) the user's previous item rows, right-aligned
    user_feats: torch.Tensor  # (n_users + 1, F_u), row 0 zeros
    item_feats: torch.Tensor  # (n_items + 1, F_i), row 0 zeros
    log_q: torch.Tensor  # (n_items + 1,) log of each item's share of the examples
    user_stats: tuple[np.ndarray, np.ndarray]  # (mean, std) the user features were standardised with
    item_stats: tuple[np.ndarray, np.ndarray]
    itf: np.ndarray  # (n_items, F_i) standardised item features in index order (what the model keeps)

    def __len__(self) -> int:
        return len(self.users)


def training_data(
    n_items: int, user_feats: np.ndarray, item_feats: np.ndarray, user_rows: np.ndarray, item_rows: np.ndarray,
    timestamps: np.ndarray, history_len: int,
    stats: tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None,
) -> TrainingData:
    """The examples of interactions given as 0-based rows, and the feature tables standardised with `stats` (user,
    item) when given (a fine-tuned model keeps its start's), else with their own mean and std."""
    user_stats, item_stats = stats if stats is not None else (standardise(user_feats), standardise(item_feats))
    uf = np.vstack([np.zeros((1, user_feats.shape[1])), (user_feats - user_stats[0]) / user_stats[1]])
    itf = ((item_feats - item_stats[0]) / item_stats[1]).astype(np.float32)
    itf_padded = np.vstack([np.zeros((1, item_feats.shape[1])), itf])
    u, it, hist = history_examples(user_rows + 1, item_rows + 1, timestamps, history_len)
    counts = np.bincount(it, minlength=n_items + 1).astype(np.float64)
    log_q = torch.from_numpy(np.log(np.maximum(counts, 1.0) / counts.sum()).astype(np.float32))
    return TrainingData(torch.from_numpy(u), torch.from_numpy(it), torch.from_numpy(hist),
                        torch.from_numpy(uf.astype(np.float32)), torch.from_numpy(itf_padded.astype(np.float32)),
                        log_q, user_stats, item_stats, itf)


def batch_loss(net: nn.Module, data: TrainingData, b: torch.Tensor, rng: np.random.Generator, id_dropout: float,
               temperature: float) -> torch.Tensor:
    """Mean in-batch softmax loss of examples `b` (indices into `data`) under `net` (a `TwoTowerNet`, maybe wrapped
    in DDP: its forward gives (user vectors, item vectors)). User ids are dropped to 0 with probability
    `id_dropout`, item ids with half that (drawn from `rng`, users first). The negatives of each example are the
    other items of `b`; logits are cos / temperature - log Q(item), and a negative that is the example's own item
    is masked."""
    bu, bi, bh = data.users[b], data.items[b], data.hist[b]
    drop_u = torch.from_numpy(rng.random(len(b)) < id_dropout)
    drop_i = torch.from_numpy(rng.random(len(b)) < id_dropout / 2)
    uv, iv = net(torch.where(drop_u, 0, bu), data.user_feats[bu], bh, torch.where(drop_i, 0, bi), data.item_feats[bi])
    logits = uv @ iv.T / temperature - data.log_q[bi][None, :]
    same = bi[:, None] == bi[None, :]
    same.fill_diagonal_(False)
    logits = logits.masked_fill(same, float("-inf"))
    return F.cross_entropy(logits, torch.arange(len(b)))
