"""Several model versions measured the same way on one held-out window (the champion / challenger comparison).

Every version sees the same users, the same ground truth and the same ranking examples:

- users: those of the window with history and at least one window item they had not interacted with before;
  what each version knows of them (features, recent items, seen items) comes from the history only;
- two-stage: each version's two-tower top-`candidates` (seen items excluded), re-ordered by its default ranker
  (`config.default_ranker`), cut at K: Recall@K, NDCG@K, HitRate@K; relevant = the user's new window items, by
  id, so an item a version does not know counts as a miss, not as absent. The two-tower order alone is reported
  too (`retrieval`);
- ranking: one set of (user, item, label) pairs shared by all versions: positives are window items that some
  version retrieved, hard negatives other items of the versions' candidate lists (their union), plus random
  catalogue items; only items every version knows. Each version scores the pairs with its own features and
  embeddings; AUC, logloss etc. of every ranker (`rankers`), and of the default one at the top level;
- served: when the window carries logged impressions (a dataset built from the event log), the same metrics on
  what users were really shown: each (user, item) shown in the window, labelled by whether it was clicked (or
  bought). That is the distribution a click probability is used on, so the gate reads AUC and logloss there;
  the constructed pairs above mimic how rankers are trained, which favours whichever version was trained on the
  same construction (a challenger that also learned from exposures is calibrated to another mix).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from recsys.model.bundle import ModelBundle
from recsys.model.ids import IdIndex
from recsys.model.inputs import ranking_inputs_batch
from recsys.model.rankers import folder_of
from recsys.training.evaluate import classification_metrics, topk_metrics
from recsys.training.matrix import InteractionMatrix, batches
from recsys.training.pipeline import DatasetError, TrainConfig
from recsys.training.two_stage import TwoStage, UserState
from recsys.training.window import HeldOutWindow

SCORE_BATCH = 100_000  # ranking-input rows scored at once


@dataclass
class Truth:
    """The window's ground truth in a catalogue shared by every version (`catalogue` indices)."""

    catalogue: IdIndex
    users: list[str]
    seen: list[np.ndarray]
    relevant: list[np.ndarray]
    cold_users: int


@dataclass
class Pairs:
    """Ranking examples shared by every version: user row, catalogue item, label, hard negative."""

    user: np.ndarray
    item: np.ndarray
    y: np.ndarray
    hard: np.ndarray


def default_ranker(bundle: ModelBundle) -> str:
    """The key in `bundle.rankers` of the ranker the version serves with."""
    name = str(bundle.config.get("default_ranker", "dcn"))
    return name if name in bundle.rankers else folder_of(name)


def window_truth(held: HeldOutWindow, bundles: Mapping[str, ModelBundle]) -> Truth:
    """Users to measure, their seen and relevant items, in the union of the dataset's and the versions' items."""
    ids = [held.history.items["item_id"].astype(object).to_numpy(), *(b.items.ids for b in bundles.values())]
    catalogue = IdIndex(pd.unique(np.concatenate(ids)))
    hist = held.history.interactions
    window_users = pd.unique(held.window["user_id"].astype(object))
    known = set(hist["user_id"].astype(object))
    users = IdIndex([u for u in window_users if u in known])
    seen = InteractionMatrix.from_interactions(hist, catalogue, users).seen(np.arange(len(users)))
    new = InteractionMatrix.from_interactions(held.window, catalogue, users).seen(np.arange(len(users)))
    relevant = [np.setdiff1d(n, s) for n, s in zip(new, seen, strict=True)]
    keep = [j for j, r in enumerate(relevant) if len(r)]
    if not keep:
        raise DatasetError("no user of the held-out window has history and a new item there: nothing to measure")
    return Truth(catalogue, [users.ids[j] for j in keep], [seen[j] for j in keep], [relevant[j] for j in keep],
                 cold_users=len(window_users) - len(users))


class VersionView:
    """One version over the truth's users: its state, its candidates (in catalogue indices) and item mapping."""

    def __init__(self, bundle: ModelBundle, held: HeldOutWindow, truth: Truth, candidates: int) -> None:
        self.stage = TwoStage(bundle)
        self.ranker = default_ranker(bundle)
        self.state: UserState = self.stage.state(held.history, truth.users)
        self.to_catalogue = truth.catalogue.lookup(self.stage.items.ids)
        self.from_catalogue = self.stage.items.lookup(truth.catalogue.ids)
        self.cand, self.cand_scores = self.stage.retrieve(self.state, candidates)

    def catalogue_ids(self, idx: np.ndarray) -> np.ndarray:
        """Version item indices (-1 padded) -> catalogue indices."""
        return np.where(idx >= 0, self.to_catalogue[np.maximum(idx, 0)], -1)

    def two_stage(self, truth: Truth, k: int) -> dict:
        ranked, _ = self.stage.rank(self.state, self.cand, self.cand_scores, self.ranker)
        n = len(truth.catalogue)
        ours = topk_metrics(self.catalogue_ids(ranked[:, :k]), truth.relevant, n, ks=(k,))
        retrieval = topk_metrics(self.catalogue_ids(self.cand[:, :k]), truth.relevant, n, ks=(k,))
        keys = (f"recall@{k}", f"ndcg@{k}", f"hit_rate@{k}")
        return {**{key: ours[key] for key in keys}, "retrieval": {key: retrieval[key] for key in keys}}

    def ranking(self, pairs: Pairs) -> dict[str, dict]:
        """Classification metrics of every ranker of the version on the shared pairs."""
        emb = self.stage.user_embeddings(self.state)
        out = {}
        for name, model in self.stage.bundle.rankers.items():
            prob, score = np.empty(len(pairs.y)), np.empty(len(pairs.y))
            for b in batches(len(pairs.y), SCORE_BATCH):
                u, i = pairs.user[b], self.from_catalogue[pairs.item[b]]
                x = ranking_inputs_batch(self.state.features[u], self.stage.item_feats[i], self.stage.spec,
                                         np.einsum("ij,ij->i", emb[u], self.stage.item_emb[i]))
                prob[b], score[b] = model.predict_proba(x), model.score(x)
            out[name] = classification_metrics(pairs.y, prob, score, pairs.user, pairs.hard)
        return out


def shared_pairs(views: list[VersionView], truth: Truth, cfg: TrainConfig, rng: np.random.Generator) -> Pairs:
    """The ranking examples every version is scored on (see the module docstring)."""
    everywhere = np.all([v.from_catalogue >= 0 for v in views], axis=0)
    pool = np.flatnonzero(everywhere)
    users, items, labels, hard = [], [], [], []
    for u, relevant in enumerate(truth.relevant):
        union = np.unique(np.concatenate([v.catalogue_ids(v.cand[u]) for v in views]))
        union = union[(union >= 0) & everywhere[np.maximum(union, 0)]]
        pos = relevant[everywhere[relevant]]
        pos = pos if cfg.outside_positives else pos[np.isin(pos, union)]
        if len(pos) == 0:
            continue
        if len(pos) > cfg.max_pos:
            pos = np.sort(rng.choice(pos, cfg.max_pos, replace=False))
        neg_hard = union[~np.isin(union, pos)]
        if len(neg_hard) > cfg.n_hard:
            neg_hard = np.sort(rng.choice(neg_hard, cfg.n_hard, replace=False))
        drawn = pool[rng.integers(0, len(pool), size=2 * cfg.n_random + 8)] if len(pool) else pool
        neg_rand = np.unique(drawn[~np.isin(drawn, np.concatenate([pos, truth.seen[u], neg_hard]))])[: cfg.n_random]
        chosen = np.concatenate([pos, neg_hard, neg_rand])
        users.append(np.full(len(chosen), u))
        items.append(chosen)
        labels.append(np.r_[np.ones(len(pos)), np.zeros(len(chosen) - len(pos))])
        hard.append(np.r_[np.zeros(len(pos), bool), np.ones(len(neg_hard), bool), np.zeros(len(neg_rand), bool)])
    if not users:
        return Pairs(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, bool))
    return Pairs(np.concatenate(users), np.concatenate(items).astype(np.int64),
                 np.concatenate(labels).astype(np.float32), np.concatenate(hard))


def served_pairs(views: list[VersionView], truth: Truth, held: HeldOutWindow) -> Pairs | None:
    """The window's logged impressions as examples (label: clicked), for measured users and items every version
    knows; None when the window has no logged impression with both labels."""
    shown = held.exposures
    if shown is None or len(shown) == 0:
        return None
    row = {u: j for j, u in enumerate(truth.users)}
    user = shown["user_id"].astype(object).map(row)
    item = truth.catalogue.lookup(shown["item_id"].astype(object).to_numpy())
    everywhere = np.all([v.from_catalogue >= 0 for v in views], axis=0)
    keep = user.notna().to_numpy() & (item >= 0)
    keep[keep] &= everywhere[item[keep]]
    y = shown["label"].to_numpy(np.float32)[keep]
    if len(y) == 0 or y.min() == y.max():
        return None
    return Pairs(user.to_numpy()[keep].astype(np.int64), item[keep].astype(np.int64), y, np.zeros(len(y), bool))


def measure(bundles: Mapping[str, ModelBundle], held: HeldOutWindow, k: int, cfg: TrainConfig) -> dict:
    """Metrics of every version (by the name given in `bundles`) on the window, plus `window`: what was measured.

    A version's flat keys are what the gate reads: recall@K, ndcg@K (two-stage, default ranker), auc, logloss
    (default ranker: on the served impressions when the window has them, else on the shared pairs)."""
    truth = window_truth(held, bundles)
    views = {name: VersionView(b, held, truth, max(cfg.candidates, k)) for name, b in bundles.items()}
    pairs = shared_pairs(list(views.values()), truth, cfg, np.random.default_rng(cfg.seed + 1))
    served = served_pairs(list(views.values()), truth, held)
    out: dict = {"window": {"users": len(truth.users), "cold_users": truth.cold_users,
                            "relevant": int(sum(len(r) for r in truth.relevant)), "k": k,
                            "candidates": max(cfg.candidates, k), "examples": int(len(pairs.y)),
                            "positives": int(pairs.y.sum()),
                            "served_examples": int(len(served.y)) if served else 0,
                            "served_clicks": int(served.y.sum()) if served else 0,
                            "ranking_metrics_on": "served impressions" if served else "constructed pairs"}}
    for name, view in views.items():
        rankers = view.ranking(pairs)
        gated = rankers[view.ranker]
        result = {"ranker": view.ranker, **view.two_stage(truth, k), "rankers": rankers}
        if served is not None:
            result["served"] = view.ranking(served)
            gated = result["served"][view.ranker]
        out[name] = {**result, **{m: gated[m] for m in ("auc", "gauc", "auc_hard", "logloss")}}
    return out
