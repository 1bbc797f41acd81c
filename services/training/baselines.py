"""Simple retrieval baselines on the binary user-item matrix: popularity, PureSVD and EASE.

Each exposes `scores(rows) -> (len(rows), n_items)` over the rows of the InteractionMatrix it was fit on.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import scipy.sparse as sp
from scipy.sparse.linalg import svds

from recsys.training.matrix import InteractionMatrix


class Popularity:
    """Scores every item by its number of interactions (same list for every user)."""

    name = "popularity"

    def fit(self, matrix: InteractionMatrix) -> Popularity:
        self.matrix = matrix
        self.counts = matrix.item_counts().astype(np.float32)
        return self

    def scores(self, rows: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.counts, (len(rows), len(self.counts)))


class PureSVD:
    """Truncated SVD of the binary matrix X = U S V^T; a user's scores are X_u V V^T."""

    name = "puresvd"

    def __init__(self, factors: int = 50, seed: int = 0) -> None:
        self.factors, self.seed = factors, seed

    def fit(self, matrix: InteractionMatrix) -> PureSVD:
        self.matrix = matrix
        x = matrix.csr.astype(np.float64)
        k = max(1, min(self.factors, min(x.shape) - 1))
        v0 = np.random.default_rng(self.seed).uniform(-1, 1, min(x.shape))
        _, _, vt = svds(x, k=k, v0=v0)
        self.v = vt.T.astype(np.float32)
        return self

    def scores(self, rows: np.ndarray) -> np.ndarray:
        xu = self.matrix.csr[rows]
        return np.asarray((xu @ self.v) @ self.v.T)


class EASE:
    """Embarrassingly shallow autoencoder (Steck 2019): B = I - P diagMat(1 / diag(P)), P = (X^T X + l I)^-1.

    Fit on the items with at least one interaction; the others score 0.
    """

    name = "ease"

    def __init__(self, l2: float = 200.0) -> None:
        self.l2 = l2

    def fit(self, matrix: InteractionMatrix) -> EASE:
        self.matrix = matrix
        self.active = np.flatnonzero(matrix.item_counts() > 0)
        x = matrix.csr[:, self.active].astype(np.float64)
        g = (x.T @ x).toarray()
        g[np.diag_indices_from(g)] += self.l2
        p = scipy.linalg.inv(g, overwrite_a=True, check_finite=False)
        b = p / (-np.diag(p))
        b[np.diag_indices_from(b)] = 0.0
        self.b = b.astype(np.float32)
        return self

    def scores(self, rows: np.ndarray) -> np.ndarray:
        out = np.zeros((len(rows), self.matrix.csr.shape[1]), dtype=np.float32)
        xu = self.matrix.csr[rows][:, self.active]
        out[:, self.active] = sp.csr_matrix(xu, dtype=np.float32) @ self.b
        return out
