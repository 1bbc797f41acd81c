"""The rankers' input matrix: [user features | item features | cross features] for one user and N items.

The ranking service builds it online for every request and training builds its examples with the same code
(no train/serve skew), so it is vectorised numpy only.
"""

from __future__ import annotations

import numpy as np

from recsys.model.spec import CROSS_FEATURES, FeatureSpec


def _cross(user: np.ndarray, item_mat: np.ndarray, spec: FeatureSpec, retrieval_scores) -> np.ndarray:
    """Cross features; `user` is one row (nu,) broadcast over the items, or (N, nu) aligned with them."""
    layout = spec._layout
    cross = np.empty((len(item_mat), len(CROSS_FEATURES)), dtype=np.float32)
    affinity = (item_mat[:, layout["i_genres"]] * user[..., layout["u_genres"]]).sum(axis=-1)
    cross[:, 0] = affinity
    cross[:, 1] = affinity / np.maximum(item_mat[:, layout["i_ngenres"]], 1.0)
    cross[:, 2] = np.abs(item_mat[:, layout["i_year"]] - user[..., layout["u_year"]])
    cross[:, 3] = item_mat[:, layout["i_pop"]] - user[..., layout["u_pop"]]
    cross[:, 4] = item_mat[:, layout["i_rating"]] - user[..., layout["u_rating"]]
    cross[:, 5] = 0.0 if retrieval_scores is None else np.asarray(retrieval_scores, dtype=np.float32)
    return cross


def ranking_inputs(
    user_vec: np.ndarray,
    item_mat: np.ndarray,
    spec: FeatureSpec,
    retrieval_scores: np.ndarray | None = None,
) -> np.ndarray:
    """The rankers' input for one user and N items: [user features | item features | cross features].

    `user_vec` holds spec.user_features in order, `item_mat` (N, len(spec.item_features)) the item rows,
    `retrieval_scores` (N,) the retrieval model's scores (zeros when absent). Returns float32 (N, F) with
    columns spec.ranking_features.
    """
    user_vec = np.asarray(user_vec, dtype=np.float32).reshape(-1)
    item_mat = np.asarray(item_mat, dtype=np.float32)
    n, nu, ni = item_mat.shape[0], user_vec.shape[0], item_mat.shape[1]
    out = np.empty((n, nu + ni + len(CROSS_FEATURES)), dtype=np.float32)
    out[:, :nu] = user_vec
    out[:, nu : nu + ni] = item_mat
    out[:, nu + ni :] = _cross(user_vec, item_mat, spec, retrieval_scores)
    return out


def ranking_inputs_batch(
    user_mat: np.ndarray,
    item_mat: np.ndarray,
    spec: FeatureSpec,
    retrieval_scores: np.ndarray | None = None,
) -> np.ndarray:
    """Row-aligned variant for building training sets: row r pairs user_mat[r] with item_mat[r]."""
    user_mat = np.asarray(user_mat, dtype=np.float32)
    item_mat = np.asarray(item_mat, dtype=np.float32)
    return np.concatenate([user_mat, item_mat, _cross(user_mat, item_mat, spec, retrieval_scores)], axis=1)
