"""The serving side of the two-tower model's user tower: numpy only, so that the candidate service does not
import torch (about 1.3 s of every start, and a restart is an outage until it serves again)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recsys.model.ids import IdIndex
from recsys.model.layout import USER_TOWER


class UserEncoder:
    """Embeds a user with numpy only, from (user id, user feature row, recent item ids).

    Unknown or missing user ids use the learned "unknown user" vector; missing features use the
    training means; unknown history items are ignored; no history is allowed (cold start).
    """

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.a = {k: v for k, v in arrays.items() if k not in ("user_ids", "item_ids")}
        self.users = IdIndex(arrays["user_ids"].tolist())
        self.items = IdIndex(arrays["item_ids"].tolist())
        self.history_len = int(arrays["history_len"])
        self.dim = self.a["w2"].shape[1]
        self.n_features = self.a["feat_mean"].shape[0]

    @classmethod
    def load(cls, path: str | Path) -> UserEncoder:
        """Load `user_tower.npz` from a file or a two_tower export folder."""
        path = Path(path)
        if path.is_dir():
            path = path / USER_TOWER
        with np.load(path, allow_pickle=False) as data:
            return cls({k: data[k] for k in data.files})

    def embed_batch(
        self,
        user_ids: list[str | None],
        features: np.ndarray | None,
        histories: list[list[str]],
    ) -> np.ndarray:
        """(B, dim) float32 L2-normalised user vectors. `features` (B, F) in the spec's user feature
        order (NaN or None = unknown), histories oldest first (only the last history_len are used)."""
        a = self.a
        b = len(histories)
        uidx = np.zeros(b, dtype=np.int64)
        known = [i for i, u in enumerate(user_ids) if u is not None]
        if known:
            uidx[known] = self.users.lookup([user_ids[i] for i in known]) + 1
        if features is None:
            z = np.zeros((b, self.n_features), dtype=np.float32)
        else:
            z = (np.asarray(features, dtype=np.float32).reshape(b, -1) - a["feat_mean"]) / a["feat_std"]
            z = np.nan_to_num(z, nan=0.0)
        hist_mean = np.zeros((b, self.dim), dtype=np.float32)
        for i, hist in enumerate(histories):
            if len(hist):
                rows = self.items.lookup(list(hist)[-self.history_len :]) + 1
                rows = rows[rows > 0]
                if len(rows):
                    hist_mean[i] = a["hist_emb"][rows].mean(axis=0)
        x = np.concatenate([a["user_emb"][uidx], z, hist_mean], axis=1)
        hidden = np.maximum(x @ a["w1"] + a["b1"], 0.0)
        out = hidden @ a["w2"] + a["b2"]
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out.astype(np.float32)

    def embed(self, user_id: str | None, features: np.ndarray | None, recent_item_ids: list[str]) -> np.ndarray:
        """One user's (dim,) vector; see `embed_batch`."""
        feats = None if features is None else np.asarray(features, dtype=np.float32).reshape(1, -1)
        return self.embed_batch([user_id], feats, [list(recent_item_ids)])[0]
