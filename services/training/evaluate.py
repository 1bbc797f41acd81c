"""Offline evaluation: split, train everything on the train part, measure on the held-out part.

- retrieval (two-tower, ALS, popularity, PureSVD, EASE): Recall@K, NDCG@K, HitRate@K, coverage@K for K
  in KS, and MRR over the top max(KS); seen (train) items are never recommended;
- ranking (DCN-v2, LightGBM): AUC, logloss, F1 at the best threshold (and per-user AUC) on held-out
  examples built like the training ones (test positives among the retrieval candidates, other
  candidates as hard negatives, plus random items), and AUC on the hard part alone (positives vs.
  candidate negatives);
- two-stage (two-tower top-C re-ranked by each ranker): Recall@K and NDCG@K.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from recsys.model.ids import IdIndex
from recsys.training import metrics as M
from recsys.training.baselines import EASE, Popularity, PureSVD
from recsys.training.data.schema import Dataset
from recsys.training.examples import build_examples
from recsys.training.matrix import InteractionMatrix, recommend_top_k
from recsys.training.pipeline import TrainConfig, train_all, validate_dataset
from recsys.training.split import split_dataset
from recsys.training.two_stage import TwoStage

KS = (10, 20, 50, 100, 300)
EASE_MAX_ITEMS = 20_000


def topk_metrics(ranked: np.ndarray, relevant: list[np.ndarray], n_items: int, ks=KS) -> dict:
    """Recall/NDCG/HitRate/coverage at each k (keys like 'recall@20') and MRR over the whole list."""
    hits = M.hits_matrix(ranked, relevant)
    n_rel = np.array([len(r) for r in relevant])
    out: dict[str, float] = {}
    for k in ks:
        if k > ranked.shape[1]:
            continue
        out[f"recall@{k}"] = M.recall_at_k(hits, n_rel, k)
        out[f"ndcg@{k}"] = M.ndcg_at_k(hits, n_rel, k)
        out[f"hit_rate@{k}"] = M.hit_rate_at_k(hits, n_rel, k)
        out[f"coverage@{k}"] = M.coverage(ranked, k, n_items)
    out["mrr"] = M.mrr(hits, n_rel)
    return out


def classification_metrics(y: np.ndarray, prob: np.ndarray, score: np.ndarray, group: np.ndarray,
                           hard: np.ndarray) -> dict:
    """AUC (pooled, per-user mean, hard part only), logloss and best-threshold F1."""
    f1, threshold = M.best_f1(y, prob)
    per_user = [M.auc(y[group == g], score[group == g]) for g in np.unique(group)]
    per_user = [a for a in per_user if not np.isnan(a)]
    hard_part = hard | (y > 0)
    return {
        "auc": M.auc(y, score),
        "gauc": float(np.mean(per_user)) if per_user else float("nan"),
        "auc_hard": M.auc(y[hard_part], score[hard_part]),
        "logloss": M.logloss(y, prob),
        "f1": f1,
        "f1_threshold": threshold,
        "positive_rate": float(np.mean(y)),
        "n_examples": int(len(y)),
    }


def evaluate(ds: Dataset, split: str = "temporal", cfg: TrainConfig | None = None, progress: bool = True,
             baselines: bool = True) -> dict:
    """Split `ds`, train on the train part, measure on the test part. Returns the results dict
    (`report` holds the extra data the HTML report plots)."""
    cfg = cfg or TrainConfig()
    validate_dataset(ds)
    parts = split_dataset(ds, split)
    if len(parts.test) == 0:
        raise ValueError(f"the {split} split of {ds.name!r} holds out no interactions (too few per user)")
    t0 = time.perf_counter()
    bundle, timings = train_all(parts.train, cfg, progress)
    train_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    stage = TwoStage(bundle)
    items = stage.items
    test_users = list(pd.unique(parts.test["user_id"].astype(object)))
    state = stage.state(parts.train, test_users)
    relevant = InteractionMatrix.from_interactions(parts.test, items, IdIndex(test_users)).seen(
        np.arange(len(test_users))
    )
    kmax = max(max(KS), cfg.candidates)
    cand, cand_scores = stage.retrieve(state, kmax)
    retrieval = {"two_tower": topk_metrics(cand, relevant, len(items))}

    train_m = InteractionMatrix.from_interactions(parts.train.interactions, items)
    rows = train_m.users.lookup(test_users)
    seen = train_m.seen(rows)
    models = [Popularity(), PureSVD(50, seed=cfg.seed)]
    if baselines and len(items) <= EASE_MAX_ITEMS:
        models.append(EASE())
    for model in models:
        model.fit(train_m)
        ranked, _ = recommend_top_k(model.scores, rows, kmax, seen)
        retrieval[model.name] = topk_metrics(ranked, relevant, len(items))
    als_rows = IdIndex(bundle.als_user_ids).lookup(test_users)
    ranked, _ = recommend_top_k(lambda r: bundle.als_user_factors[r] @ bundle.als_item_factors.T,
                                als_rows, kmax, seen)
    retrieval["als"] = topk_metrics(ranked, relevant, len(items))

    rng = np.random.default_rng(cfg.seed + 1)
    examples = build_examples(
        stage.spec, state.features, stage.item_feats, stage.user_embeddings(state), stage.item_emb,
        cand[:, : cfg.candidates], relevant, state.seen, cfg.n_hard, cfg.n_random, cfg.max_pos, rng,
        cfg.outside_positives,
    )
    ranking, two_stage, report = {}, {}, {"score_hist": {}, "calibration": {}}
    for name, ranker in bundle.rankers.items():
        prob = ranker.predict_proba(examples.x)
        score = ranker.score(examples.x)
        ranking[name] = classification_metrics(examples.y, prob, score, examples.group, examples.hard)
        report["score_hist"][name] = {
            "positive": np.histogram(prob[examples.y > 0], bins=20, range=(0, 1))[0].tolist(),
            "negative": np.histogram(prob[examples.y == 0], bins=20, range=(0, 1))[0].tolist(),
        }
        report["calibration"][name] = M.calibration_bins(examples.y, prob)
        ranked, _ = stage.rank(state, cand[:, : cfg.candidates], cand_scores[:, : cfg.candidates], name)
        two_stage[name] = {k: v for k, v in topk_metrics(ranked, relevant, len(items)).items()
                           if k.startswith(("recall", "ndcg", "hit_rate", "coverage"))}
    eval_s = time.perf_counter() - t0
    return {
        "dataset": ds.name,
        "split": split,
        "n_users": ds.n_users,
        "n_items": ds.n_items,
        "n_train": int(len(parts.train.interactions)),
        "n_test": int(len(parts.test)),
        "n_test_users": len(test_users),
        "seed": cfg.seed,
        "default_ranker": cfg.default_ranker,
        "retrieval": retrieval,
        "ranking": ranking,
        "two_stage": two_stage,
        "timings": {**timings, "train_s": round(train_s, 2), "evaluate_s": round(eval_s, 2)},
        "report": report,
    }
