"""Evaluation metrics as pure functions (numpy in, float out).

Top-K metrics work on a boolean `hits` matrix (users x ranked positions: True where the item at that
position is relevant) and `n_relevant` (relevant items per user); users without relevant items are
skipped. Conventions: Recall@K = hits in top K / n_relevant; NDCG@K with binary gains, log2 discount
and the ideal DCG over min(K, n_relevant) items; MRR = 1 / rank of the first hit in the list (0 if
none); coverage = distinct items in all top-K lists / catalogue size.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def hits_matrix(ranked: np.ndarray, relevant: Sequence) -> np.ndarray:
    """hits[u, j] = ranked[u, j] is in relevant[u] (ranked holds item indices, -1 for padding)."""
    ranked = np.asarray(ranked)
    hits = np.zeros(ranked.shape, dtype=bool)
    for u, rel in enumerate(relevant):
        if len(rel):
            hits[u] = np.isin(ranked[u], np.fromiter(rel, dtype=ranked.dtype, count=len(rel)))
    return hits & (ranked >= 0)


def _valid(n_relevant: np.ndarray) -> np.ndarray:
    return np.asarray(n_relevant) > 0


def recall_at_k(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> float:
    """Mean over users of (relevant items in the top k) / (relevant items)."""
    valid = _valid(n_relevant)
    if not valid.any():
        return 0.0
    found = hits[valid, :k].sum(axis=1)
    return float(np.mean(found / np.asarray(n_relevant)[valid]))


def ndcg_at_k(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> float:
    """Mean over users of DCG@k / ideal DCG@k with binary relevance."""
    valid = _valid(n_relevant)
    if not valid.any():
        return 0.0
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    h = hits[valid, :k].astype(np.float64)
    dcg = h @ discounts[: h.shape[1]]
    ideal_n = np.minimum(np.asarray(n_relevant)[valid], k)
    ideal = np.cumsum(discounts)[ideal_n - 1]
    return float(np.mean(dcg / ideal))


def hit_rate_at_k(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> float:
    """Share of users with at least one relevant item in the top k."""
    valid = _valid(n_relevant)
    if not valid.any():
        return 0.0
    return float(np.mean(hits[valid, :k].any(axis=1)))


def mrr(hits: np.ndarray, n_relevant: np.ndarray) -> float:
    """Mean reciprocal rank of the first relevant item in each list (0 when none is in the list)."""
    valid = _valid(n_relevant)
    if not valid.any():
        return 0.0
    h = hits[valid]
    first = np.argmax(h, axis=1)
    rr = np.where(h.any(axis=1), 1.0 / (first + 1), 0.0)
    return float(np.mean(rr))


def coverage(ranked: np.ndarray, k: int, n_items: int) -> float:
    """Distinct items appearing in any top-k list, as a share of the catalogue."""
    top = np.asarray(ranked)[:, :k]
    return float(len(np.unique(top[top >= 0])) / max(n_items, 1))


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U; ties count one half). NaN with a single class."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores), dtype=np.float64)
    # average ranks over ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def logloss(labels: np.ndarray, probs: np.ndarray, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy (natural log) with probabilities clipped to [eps, 1 - eps]."""
    y = np.asarray(labels, dtype=np.float64)
    p = np.clip(np.asarray(probs, dtype=np.float64), eps, 1 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def best_f1(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """The highest F1 over all thresholds "score >= t", and that threshold."""
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    n_pos = int(y.sum())
    if n_pos == 0 or len(s) == 0:
        return 0.0, float("nan")
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    tp = np.cumsum(y_sorted)
    predicted = np.arange(1, len(s) + 1)
    # only thresholds at the last position of each run of equal scores are reachable
    last_of_run = np.r_[s_sorted[1:] != s_sorted[:-1], True]
    f1 = np.where(last_of_run, 2 * tp / (predicted + n_pos), -1.0)
    best = int(np.argmax(f1))
    return float(f1[best]), float(s_sorted[best])


def calibration_bins(labels: np.ndarray, probs: np.ndarray, bins: int = 10) -> list[dict]:
    """Reliability diagram data: per probability bin, mean predicted probability, observed rate, count."""
    y = np.asarray(labels, dtype=np.float64)
    p = np.asarray(probs, dtype=np.float64)
    idx = np.minimum((p * bins).astype(int), bins - 1)
    out = []
    for b in range(bins):
        m = idx == b
        if m.any():
            out.append({"bin": b, "mean_prob": float(p[m].mean()), "rate": float(y[m].mean()), "n": int(m.sum())})
    return out
