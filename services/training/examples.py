"""Ranker training / evaluation examples: per user, the positives (interactions in a label window) and
negatives drawn from the retrieval stage's own candidates (hard negatives) plus random catalogue items, and,
when the data comes with the event log's exposures, the items the user was shown and did not click
(exposure-aware negatives) and an inverse-propensity weight per example.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recsys.model.inputs import ranking_inputs_batch
from recsys.model.spec import FeatureSpec
from recsys.training.exposures import LoggedFeedback


@dataclass
class RankingExamples:
    """Rows grouped contiguously by user: x (N, F) ranking inputs, y (N,) labels, group (N,) user row,
    item (N,) item index, hard (N,) True for negatives taken from the retrieval candidates; weight (N,) the
    training weight (1 / propensity for logged clicks, 1 otherwise), None when nothing was logged."""

    x: np.ndarray
    y: np.ndarray
    group: np.ndarray
    item: np.ndarray
    hard: np.ndarray
    weight: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.y)


def normalized_weights(weights: np.ndarray, n: int) -> np.ndarray:
    """Per-row training weights scaled to mean 1; ValueError unless there are `n` finite, positive ones."""
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n,) or not np.all(np.isfinite(w)) or (w <= 0).any():
        raise ValueError(f"weights must be {n} finite positive numbers")
    return w / w.mean() if n else w


def build_examples(
    spec: FeatureSpec,
    user_feats: np.ndarray,
    item_feats: np.ndarray,
    user_emb: np.ndarray,
    item_emb: np.ndarray,
    candidates: np.ndarray,
    positives: list[np.ndarray],
    seen: list[np.ndarray],
    n_hard: int,
    n_random: int,
    max_pos: int,
    rng: np.random.Generator,
    outside_positives: bool = False,
    logged: LoggedFeedback | None = None,
    max_exposed: int = 100,
) -> RankingExamples:
    """Examples for every user row with positives.

    user_feats (U, Fu) and user_emb (U, d) are per user row; item_feats (I, Fi) and item_emb (I, d) per
    item; candidates (U, C) the retrieval top-C item indices (-1 padded); positives / seen per user row.
    At most `max_pos` positives per user (a random subset) so heavy users do not dominate; `n_hard`
    negatives from the candidates (all when n_hard >= C) and `n_random` uniform catalogue items the
    user has neither seen nor liked. The retrieval score of each pair is the embedding dot product.
    `outside_positives=False` keeps only the positives the retrieval stage found (what the ranker sees
    when serving). `logged` (per user row) adds at most `max_exposed` of the items the user was shown and
    did not click as negatives (none the user liked or had seen) and weighs logged clicks by their IPW weight.
    """
    n_items = item_feats.shape[0]
    users, items, labels, hard, weights = [], [], [], [], []
    for u, pos in enumerate(positives):
        if len(pos) == 0:
            continue
        pos = np.unique(pos)
        cands = candidates[u][candidates[u] >= 0]
        if not outside_positives:
            pos = pos[np.isin(pos, cands)]
            if len(pos) == 0:
                continue
        if len(pos) > max_pos:
            pos = np.sort(rng.choice(pos, max_pos, replace=False))
        neg_hard = cands[~np.isin(cands, pos)]
        if len(neg_hard) > n_hard:
            neg_hard = np.sort(rng.choice(neg_hard, n_hard, replace=False))
        neg_shown = np.zeros(0, dtype=np.int64)
        if logged is not None:
            neg_shown = np.setdiff1d(logged.exposed[u], np.concatenate([positives[u], seen[u], neg_hard]))
            if len(neg_shown) > max_exposed:
                neg_shown = np.sort(rng.choice(neg_shown, max_exposed, replace=False))
        excluded = np.concatenate([pos, seen[u], neg_hard, neg_shown])
        neg_rand = rng.integers(0, n_items, size=2 * n_random + 8)
        neg_rand = np.unique(neg_rand[~np.isin(neg_rand, excluded)])[:n_random]
        chosen = np.concatenate([pos, neg_hard, neg_shown, neg_rand])
        users.append(np.full(len(chosen), u))
        items.append(chosen)
        labels.append(np.r_[np.ones(len(pos)), np.zeros(len(chosen) - len(pos))])
        hard.append(np.r_[np.zeros(len(pos), bool), np.ones(len(neg_hard), bool),
                          np.zeros(len(neg_shown) + len(neg_rand), bool)])
        if logged is not None:
            weights.append(np.r_[logged.weights(u, pos), np.ones(len(chosen) - len(pos))])
    weight = None if logged is None else np.concatenate([np.zeros(0), *weights]).astype(np.float32)
    if not users:
        empty = np.zeros(0, dtype=np.int64)
        return RankingExamples(np.zeros((0, len(spec.ranking_features)), np.float32), empty.astype(np.float32),
                               empty, empty, empty.astype(bool), weight)
    u = np.concatenate(users)
    i = np.concatenate(items).astype(np.int64)
    scores = np.einsum("ij,ij->i", user_emb[u], item_emb[i])
    x = ranking_inputs_batch(user_feats[u], item_feats[i], spec, scores)
    return RankingExamples(x, np.concatenate(labels).astype(np.float32), u, i, np.concatenate(hard), weight)
