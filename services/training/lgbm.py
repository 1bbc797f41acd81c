"""Fitting the LightGBM lambdarank ranker (`recsys.model.rankers.lightgbm`) and its Platt calibration."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
from tqdm.auto import tqdm

from recsys.model.rankers.lightgbm import LGBMConfig, LGBMRankerModel
from recsys.training.examples import normalized_weights


def platt(
    scores: np.ndarray, labels: np.ndarray, iterations: int = 100, weights: np.ndarray | None = None
) -> tuple[float, float]:
    """Fit p = sigmoid(a * s + b) by Newton's method on the (weighted) log-loss.

    The targets are Platt's smoothed labels, (N+ + 1) / (N+ + 2) for positives and 1 / (N- + 2) for negatives
    (Platt 1999), so that the fit stays finite when the scores separate the labels (a ranker's own training
    scores often do: the plain maximum-likelihood slope then grows without bound); steps are halved until the
    loss decreases.
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    c = np.ones_like(s) if weights is None else np.asarray(weights, dtype=np.float64)
    n_pos, n_neg = float(np.sum(c * (y > 0))), float(np.sum(c * (y <= 0)))
    t = np.where(y > 0, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0))

    def loss(a: float, b: float) -> float:
        z = a * s + b
        return float(np.sum(c * (np.logaddexp(0.0, z) - t * z)))

    a, b = 1.0, 0.0
    current = loss(a, b)
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(a * s + b)))
        w = c * p * (1 - p)
        grad = np.array([np.sum(c * (p - t) * s) + 1e-6 * a, np.sum(c * (p - t))])
        hess = np.array([[np.sum(w * s * s) + 1e-6, np.sum(w * s)], [np.sum(w * s), np.sum(w) + 1e-9]])
        step = np.linalg.solve(hess, grad)
        scale = 1.0
        while scale > 1e-6 and loss(a - scale * step[0], b - scale * step[1]) > current + 1e-12:
            scale /= 2.0
        a, b = a - scale * step[0], b - scale * step[1]
        previous, current = current, loss(a, b)
        if np.abs(scale * step).max() < 1e-8 or previous - current < 1e-12 * max(1.0, abs(previous)):
            break
    return float(a), float(b)


def query_sizes(groups: np.ndarray) -> np.ndarray:
    """The row count of each query, in order, for `groups` giving each row's query (rows grouped contiguously)."""
    groups = np.asarray(groups)
    boundaries = np.r_[0, np.flatnonzero(groups[1:] != groups[:-1]) + 1, len(groups)]
    return np.diff(boundaries)


def lgbm_params(cfg: LGBMConfig, threads: int) -> dict:
    """LightGBM's training parameters for `cfg` (lambdarank), fit on `threads` threads."""
    return {
        "objective": "lambdarank",
        "learning_rate": cfg.learning_rate,
        "num_leaves": cfg.num_leaves,
        "min_data_in_leaf": cfg.min_child_samples,
        "bagging_fraction": cfg.subsample,
        "bagging_freq": 1 if cfg.subsample < 1 else 0,
        "feature_fraction": cfg.colsample_bytree,
        "lambda_l2": cfg.reg_lambda,
        "num_threads": threads,
        "seed": cfg.seed,
        "deterministic": True,
        "force_row_wise": True,
        "verbosity": -1,
        "lambdarank_truncation_level": cfg.truncation_level,
        "eval_at": [20],
    }


def calibrated(booster: lgb.Booster, x: np.ndarray, y: np.ndarray, cfg: LGBMConfig,
               features: list[str]) -> LGBMRankerModel:
    """The ranker of `booster` with its Platt calibration fit, unweighted, on (x, y)."""
    model = LGBMRankerModel(booster, 1.0, 0.0, cfg, features)
    model.a, model.b = platt(model.score(x), y)
    return model


def train_lgbm(x: np.ndarray, y: np.ndarray, groups: np.ndarray, features: list[str], cfg: LGBMConfig,
               progress: bool = False, weights: np.ndarray | None = None,
               threads: int | None = None) -> LGBMRankerModel:
    """Fit lambdarank with one query per user; `groups` gives each row's user (rows grouped contiguously);
    `weights` (N,) scale each row's gradients (lambdarank takes per-row weights), mean 1: they shape the order.
    The calibration is fit unweighted, to the labels as observed, so that probabilities (logloss, the retrain
    gate) stay comparable with a ranker trained without weights (inverse-propensity weights inflate positives).
    `threads` overrides `cfg.threads` for the fit only (the model keeps `cfg.threads` for scoring)."""
    params = lgbm_params(cfg, threads or cfg.threads)
    w = None if weights is None else normalized_weights(weights, len(y))
    data = lgb.Dataset(np.asarray(x, dtype=np.float32), label=np.asarray(y), group=query_sizes(groups),
                       feature_name=features, weight=w)
    with tqdm(total=cfg.n_estimators, desc="lightgbm", unit="tree", disable=not progress, leave=False) as bar:
        booster = lgb.train(params, data, num_boost_round=cfg.n_estimators, callbacks=[lambda env: bar.update(1)])
    return calibrated(booster, x, y, cfg, features)
