"""Matrix-factorisation baseline: implicit ALS (Hu, Koren & Volinsky 2008) on the binary matrix.

Confidence c_ui = 1 + alpha for observed pairs (1 otherwise), preference p_ui = 1 observed / 0 not, L2
regularisation. Fit with the `implicit` library's CPU solver: conjugate-gradient steps per row (Takacs et al.
2011) in native code on every core, instead of an exact dense solve per row in a Python loop (5.5 s on
ml-latest-small before, a fraction of a second now).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from recsys.training.matrix import InteractionMatrix


@dataclass
class ALSConfig:
    factors: int = 64
    iterations: int = 12
    reg: float = 5.0
    alpha: float = 10.0
    seed: int = 0
    threads: int = 0  # 0 = every core


class ALS:
    """Implicit ALS; `scores(rows)` = user factors . item factors."""

    name = "als"

    def __init__(self, config: ALSConfig | None = None) -> None:
        self.config = config or ALSConfig()

    def fit(self, matrix: InteractionMatrix, progress: bool = True) -> ALS:
        """Factorise `matrix` (users x items, any positive value = observed)."""
        from implicit.cpu.als import AlternatingLeastSquares

        cfg = self.config
        self.matrix = matrix
        x = sp.csr_matrix(matrix.csr, dtype=np.float32, copy=True)
        x.data[:] = 1.0
        # implicit reads each stored value times `alpha` as the confidence c_ui itself (1 where nothing is stored)
        # its BLAS calls are tiny: a BLAS thread pool only contends with its own threads
        with threadpool_limits(1, "blas"):
            model = AlternatingLeastSquares(
                factors=cfg.factors, regularization=cfg.reg, alpha=1.0 + cfg.alpha, iterations=cfg.iterations,
                use_cg=True, random_state=cfg.seed, num_threads=cfg.threads, dtype=np.float32,
            )
            model.fit(x, show_progress=progress)
        self.user_factors = np.ascontiguousarray(model.user_factors, dtype=np.float32)
        self.item_factors = np.ascontiguousarray(model.item_factors, dtype=np.float32)
        return self

    def scores(self, rows: np.ndarray) -> np.ndarray:
        return self.user_factors[rows] @ self.item_factors.T

    def save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        np.save(path / "user_factors.npy", self.user_factors)
        np.save(path / "item_factors.npy", self.item_factors)
        (path / "config.json").write_text(json.dumps(asdict(self.config)))
