"""DCN-v2 ranker (Wang et al. 2021) in PyTorch: a full-rank cross network and a deep network in
parallel over the standardised ranking features, concatenated into one logit; trained with binary
cross-entropy, plus (when `listwise` > 0) a per-user softmax loss that rewards ordering each user's
positives above that user's negatives, which is what re-ranking needs. `predict_proba(X)` takes the
raw `ranking_inputs` matrix (standardisation is inside).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

CLIP = 5.0


@dataclass
class DCNConfig:
    cross_layers: int = 3
    deep: tuple[int, ...] = (256, 128)
    dropout: float = 0.1
    epochs: int = 6
    batch_size: int = 1024
    min_steps_per_epoch: int = 50  # smaller batches on small data, so the model is not left underfit
    lr: float = 2e-3
    weight_decay: float = 1e-5
    listwise: float = 0.0
    seed: int = 0


class MaskDropout(nn.Module):
    """Inverted dropout whose masks come from numpy's PCG64 generator (seeded): the same distribution as
    `nn.Dropout`, but drawing the mask costs ~2.5x less than torch's CPU bernoulli, which was a third of a
    DCN-v2 training step. A no-op in eval mode; no parameters, so saved models load either way."""

    def __init__(self, p: float, seed: int = 0) -> None:
        super().__init__()
        self.p = p
        self.rng = np.random.default_rng(seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p <= 0:
            return x
        mask = (self.rng.random(tuple(x.shape), dtype=np.float32) >= self.p).astype(np.float32)
        mask *= np.float32(1.0 / (1.0 - self.p))
        return x * torch.from_numpy(mask)


class DCNv2(nn.Module):
    def __init__(self, n_in: int, cfg: DCNConfig) -> None:
        super().__init__()
        self.cross = nn.ModuleList(nn.Linear(n_in, n_in) for _ in range(cfg.cross_layers))
        layers: list[nn.Module] = []
        width = n_in
        for i, h in enumerate(cfg.deep):
            layers += [nn.Linear(width, h), nn.ReLU(), MaskDropout(cfg.dropout, cfg.seed + i)]
            width = h
        self.deep = nn.Sequential(*layers)
        self.head = nn.Linear(n_in + width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x0, xl = x, x
        for layer in self.cross:
            xl = x0 * layer(xl) + xl
        return self.head(torch.cat([xl, self.deep(x)], dim=1)).squeeze(1)


class DCNRanker:
    """A trained DCN-v2 with its input standardisation; scores are click/interaction probabilities."""

    name = "dcn"
    folder = "dcn"

    def __init__(self, net: DCNv2, mean: np.ndarray, std: np.ndarray, cfg: DCNConfig, features: list[str]):
        self.net, self.mean, self.std, self.config, self.features = net, mean, std, cfg, features
        self.net.eval()

    def _prepare(self, x: np.ndarray) -> torch.Tensor:
        z = (np.asarray(x, dtype=np.float32) - self.mean) / self.std
        return torch.from_numpy(np.clip(np.nan_to_num(z), -CLIP, CLIP).astype(np.float32))

    @torch.inference_mode()
    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Probability per row of the ranking-input matrix `x`."""
        return torch.sigmoid(self.net(self._prepare(x))).numpy().astype(np.float64)

    def score(self, x: np.ndarray) -> np.ndarray:
        return self.predict_proba(x)

    def save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        torch.save(self.net.state_dict(), path / "model.pt")
        np.savez(path / "standardise.npz", mean=self.mean, std=self.std)
        meta = {"config": asdict(self.config), "features": self.features}
        (path / "config.json").write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, path: Path, threads: int | None = None) -> DCNRanker:
        """Load a saved ranker (`threads` is the process's torch setting, not the model's: ignored)."""
        meta = json.loads((path / "config.json").read_text())
        cfg = DCNConfig(**{**meta["config"], "deep": tuple(meta["config"]["deep"])})
        with np.load(path / "standardise.npz") as z:
            mean, std = z["mean"], z["std"]
        net = DCNv2(len(mean), cfg)
        net.load_state_dict(torch.load(path / "model.pt", weights_only=True))
        return cls(net, mean, std, cfg, meta["features"])


RANKER = DCNRanker
