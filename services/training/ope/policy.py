"""A candidate model as a policy over the logged lists: it re-ranks each list's logged pool and shows its top k.

The model sees what it would have seen when serving: the user's features and recent items from the history
(the data before the evaluated traffic), the items' features and embeddings of its own version, and the
two-tower similarity as the retrieval score. Items its version does not know go last (it cannot score them).

Its predicted probabilities, scaled so that they explain the logged clicks on average (one factor, fitted on
the shown items with the position bias), are the reward model of the doubly robust estimator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recsys.model.bundle import ModelBundle
from recsys.model.inputs import ranking_inputs_batch
from recsys.training.data.schema import Dataset
from recsys.training.ope.logged import LoggedLists
from recsys.training.two_stage import TwoStage

SCORE_BATCH = 50_000  # (list, pool item) rows scored at once


@dataclass
class PolicyScores:
    """The model's view of each logged pool: score and probability per (list, pool item); -inf / 0 = unknown."""

    score: np.ndarray  # float64 [R, P]
    proba: np.ndarray  # float64 [R, P]
    known: np.ndarray  # bool [R, P]: the item is in the pool and the version knows it

    def slates(self, k: int) -> np.ndarray:
        """int64 [R, k]: the pool index the model shows at each position (its top k of the pool; -1 = none)."""
        order = np.argsort(-self.score, axis=1, kind="stable")[:, :k]
        top = np.take_along_axis(self.known, order, axis=1)
        out = np.where(top, order, -1)
        if out.shape[1] < k:
            out = np.pad(out, ((0, 0), (0, k - out.shape[1])), constant_values=-1)
        return out


def score_pools(bundle: ModelBundle, history: Dataset, logged: LoggedLists, ranker: str | None = None) -> PolicyScores:
    """Score every logged pool item with the version's ranker (its default one unless `ranker` names another)."""
    stage = TwoStage(bundle)
    name = ranker or str(bundle.config.get("default_ranker", "dcn"))
    if name not in bundle.rankers:
        raise KeyError(f"the version has no ranker {name!r} (it has {', '.join(sorted(bundle.rankers))})")
    model = bundle.rankers[name]
    users = sorted(set(logged.user_id))
    state = stage.state(history, users)
    user_row = {u: i for i, u in enumerate(state.user_ids)}
    emb = stage.user_embeddings(state)
    r, p = len(logged), logged.p
    item_idx = np.full((r, p), -1, dtype=np.int64)
    for j, pool in enumerate(logged.pool):
        item_idx[j, : len(pool)] = stage.items.lookup(np.asarray(pool, dtype=object))
    rows = np.array([user_row.get(u, -1) for u in logged.user_id], dtype=np.int64)
    known = (item_idx >= 0) & (rows[:, None] >= 0)
    flat_list, flat_pos = np.nonzero(known)
    score = np.full((r, p), -np.inf)
    proba = np.zeros((r, p))
    for start in range(0, len(flat_list), SCORE_BATCH):
        lists, cols = flat_list[start:start + SCORE_BATCH], flat_pos[start:start + SCORE_BATCH]
        users_b, items_b = rows[lists], item_idx[lists, cols]
        retrieval = np.einsum("ij,ij->i", emb[users_b], stage.item_emb[items_b])
        x = ranking_inputs_batch(state.features[users_b], stage.item_feats[items_b], stage.spec, retrieval)
        score[lists, cols] = model.score(x)
        proba[lists, cols] = model.predict_proba(x)
    return PolicyScores(score, proba, known)


def reward_model(scores: PolicyScores, logged: LoggedLists, theta: np.ndarray) -> np.ndarray:
    """float64 [R, P] relevance estimates for DR: the model's probabilities times the one factor that makes
    sum(theta_position * q(shown)) equal the logged clicks."""
    shown = logged.shown
    valid = shown >= 0
    q_shown = np.take_along_axis(scores.proba, np.maximum(shown, 0), axis=1)
    expected = float((q_shown * theta[None, : shown.shape[1]] * valid).sum())
    factor = float(logged.clicks.sum()) / expected if expected > 0 else 0.0
    return np.clip(scores.proba * factor, 0.0, 1.0)
