"""Metric functions against cases computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from recsys.training import metrics as M
from recsys.training.matrix import top_k


def _one(ranked, relevant):
    ranked = np.array([ranked])
    return M.hits_matrix(ranked, [np.array(relevant)]), np.array([len(relevant)])


def test_top_k_metrics_one_user():
    # positions 2 and 4 are relevant
    hits, n = _one([3, 1, 2, 0], [1, 0])
    assert hits.tolist() == [[False, True, False, True]]
    assert M.recall_at_k(hits, n, 1) == 0.0
    assert M.recall_at_k(hits, n, 2) == 0.5
    assert M.recall_at_k(hits, n, 4) == 1.0
    assert M.hit_rate_at_k(hits, n, 1) == 0.0
    assert M.hit_rate_at_k(hits, n, 2) == 1.0
    assert M.mrr(hits, n) == 0.5
    # DCG@2 = 1/log2(3); ideal DCG@2 = 1 + 1/log2(3)
    assert M.ndcg_at_k(hits, n, 2) == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))
    # DCG@4 = 1/log2(3) + 1/log2(5); ideal = 1 + 1/log2(3)
    assert M.ndcg_at_k(hits, n, 4) == pytest.approx((1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3)))


def test_ndcg_ideal_is_capped_at_k_and_perfect_list_scores_one():
    hits, n = _one([5, 6, 7], [5, 6, 7, 8, 9])
    assert M.ndcg_at_k(hits, n, 3) == pytest.approx(1.0)
    assert M.recall_at_k(hits, n, 3) == pytest.approx(3 / 5)


def test_users_without_relevant_items_are_skipped_and_padding_never_hits():
    ranked = np.array([[0, 1], [2, -1], [4, 5]])
    hits = M.hits_matrix(ranked, [np.array([1]), np.array([-1, 2]), np.array([], dtype=np.int64)])
    n = np.array([1, 1, 0])
    assert hits.tolist() == [[False, True], [True, False], [False, False]]
    assert M.recall_at_k(hits, n, 1) == 0.5  # mean over the two users with relevant items
    assert M.mrr(hits, n) == pytest.approx((0.5 + 1.0) / 2)
    assert M.recall_at_k(hits, np.array([0, 0, 0]), 1) == 0.0


def test_coverage():
    ranked = np.array([[0, 1], [1, 2]])
    assert M.coverage(ranked, 1, 4) == 0.5
    assert M.coverage(ranked, 2, 4) == 0.75
    assert M.coverage(np.array([[0, -1]]), 2, 4) == 0.25


def test_auc_logloss_f1_by_hand():
    # positive 0.9 beats both negatives, positive 0.3 beats one: 3 of 4 pairs
    assert M.auc([1, 0, 1, 0], [0.9, 0.8, 0.3, 0.1]) == pytest.approx(0.75)
    assert M.auc([1, 0], [0.5, 0.5]) == pytest.approx(0.5)
    # 0.2 loses to 0.5, beats 0.1; 0.5 ties 0.5 (one half), beats 0.1
    assert M.auc([1, 1, 0, 0], [0.2, 0.5, 0.5, 0.1]) == pytest.approx((0 + 1 + 0.5 + 1) / 4)
    assert math.isnan(M.auc([1, 1], [0.1, 0.2]))
    assert M.logloss([1, 0], [0.8, 0.4]) == pytest.approx(-(math.log(0.8) + math.log(0.6)) / 2)
    # thresholds: top1 F1=2/3, top2 1/2, top3 4/5, top4 2/3, top5 4/7
    f1, threshold = M.best_f1([1, 0, 1, 0, 0], [0.9, 0.8, 0.7, 0.2, 0.1])
    assert f1 == pytest.approx(0.8) and threshold == 0.7
    # tied scores cannot be split by a threshold
    f1, threshold = M.best_f1([1, 0, 0], [0.5, 0.5, 0.1])
    assert f1 == pytest.approx(2 * 1 / (2 + 1)) and threshold == 0.5


def test_calibration_bins():
    bins = M.calibration_bins([0, 1, 1, 0], [0.05, 0.15, 0.95, 0.92], bins=10)
    assert [(b["bin"], b["n"]) for b in bins] == [(0, 1), (1, 1), (9, 2)]
    assert bins[2]["rate"] == 0.5 and bins[2]["mean_prob"] == pytest.approx(0.935)


def test_top_k_excludes_items_orders_ties_and_pads():
    scores = np.array([[0.1, 0.9, 0.9, 0.5], [1.0, 2.0, 3.0, 4.0]], dtype=np.float32)
    idx, val = top_k(scores.copy(), 3, [np.array([3]), np.array([0, 1, 2])])
    assert idx.tolist() == [[1, 2, 0], [3, -1, -1]]
    assert val[0].tolist() == pytest.approx([0.9, 0.9, 0.1])
    idx, _ = top_k(scores.copy(), 6)
    assert idx.shape == (2, 6) and idx[0, 4:].tolist() == [-1, -1]
