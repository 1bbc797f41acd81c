"""Matrix-factorisation baseline: implicit ALS (Hu, Koren & Volinsky 2008) on the binary matrix.

Confidence c_ui = 1 + alpha for observed pairs (1 otherwise), preference p_ui = 1 observed / 0 not;
alternating exact least-squares solves with L2 regularisation.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from tqdm.auto import tqdm

from recsys.training.matrix import InteractionMatrix


@dataclass
class ALSConfig:
    factors: int = 64
    iterations: int = 12
    reg: float = 5.0
    alpha: float = 10.0
    seed: int = 0


def _solve_rows(x: sp.csr_matrix, fixed: np.ndarray, cfg: ALSConfig) -> np.ndarray:
    """Least-squares update of every row of `x` given the other side's factors `fixed`."""
    d = fixed.shape[1]
    base = fixed.T @ fixed + cfg.reg * np.eye(d)
    out = np.zeros((x.shape[0], d))
    for r in range(x.shape[0]):
        idx = x.indices[x.indptr[r] : x.indptr[r + 1]]
        if len(idx) == 0:
            continue
        y = fixed[idx]
        a = base + cfg.alpha * (y.T @ y)
        out[r] = np.linalg.solve(a, (1.0 + cfg.alpha) * y.sum(axis=0))
    return out


class ALS:
    """Implicit ALS; `scores(rows)` = user factors . item factors."""

    name = "als"

    def __init__(self, config: ALSConfig | None = None) -> None:
        self.config = config or ALSConfig()

    def fit(self, matrix: InteractionMatrix, progress: bool = True) -> ALS:
        cfg = self.config
        self.matrix = matrix
        x = matrix.csr.tocsr()
        xt = x.T.tocsr()
        rng = np.random.default_rng(cfg.seed)
        self.item_factors = rng.normal(0, 0.01, (x.shape[1], cfg.factors))
        self.user_factors = np.zeros((x.shape[0], cfg.factors))
        for _ in tqdm(range(cfg.iterations), desc="als", unit="iter", disable=not progress, leave=False):
            self.user_factors = _solve_rows(x, self.item_factors, cfg)
            self.item_factors = _solve_rows(xt, self.user_factors, cfg)
        self.user_factors = self.user_factors.astype(np.float32)
        self.item_factors = self.item_factors.astype(np.float32)
        return self

    def scores(self, rows: np.ndarray) -> np.ndarray:
        return self.user_factors[rows] @ self.item_factors.T

    def save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        np.save(path / "user_factors.npy", self.user_factors)
        np.save(path / "item_factors.npy", self.item_factors)
        (path / "config.json").write_text(json.dumps(asdict(self.config)))
