"""The two-stage pipeline offline: two-tower retrieval of each user's top candidates, then a ranker re-orders them
(`TwoStage`), over the state of a set of users (`UserState`: features, recent items, seen items). Training builds
the rankers' examples with it, `recsys evaluate` measures it, and `recsys batch-recommend` (in process here, on Ray
Data in `batch_ray`) writes its top-k for every user.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from recsys.model.bundle import ModelBundle
from recsys.model.ids import IdIndex
from recsys.model.inputs import ranking_inputs_batch
from recsys.model.spec import FeatureSpec
from recsys.model.user_encoder import UserEncoder
from recsys.training.data.schema import Dataset
from recsys.training.features import build_user_features, build_user_history
from recsys.training.matrix import InteractionMatrix, batches, top_k


def spec_as_of(spec: FeatureSpec, ds: Dataset) -> FeatureSpec:
    """`spec` with the reference time moved to the end of `ds`."""
    ref = int(ds.interactions["timestamp"].max()) if len(ds.interactions) else spec.reference_ts
    return replace(spec, reference_ts=ref)


@dataclass
class UserState:
    """What the pipeline knows about a set of users: raw feature rows, recent items, seen item indices."""

    user_ids: np.ndarray
    features: np.ndarray
    histories: list[list[str]]
    seen: list[np.ndarray]


def user_state(ds: Dataset, spec: FeatureSpec, items: IdIndex, users: list[str] | None = None) -> UserState:
    """Features, histories and seen items (indices into `items`) of `users` (default: every user in ds)."""
    spec = spec_as_of(spec, ds)
    feats = build_user_features(ds, spec)
    frame = feats.set_index(feats["user_id"].astype(object))
    user_ids = np.asarray(users if users is not None else frame.index.to_numpy(), dtype=object)
    mat = frame.reindex(user_ids)[spec.user_features].to_numpy(np.float32)
    hist = build_user_history(ds, spec)
    hist_map = dict(zip(hist["user_id"].astype(object), hist["recent_item_ids"], strict=True))
    histories = [list(hist_map.get(u, [])) for u in user_ids]
    seen = InteractionMatrix.from_interactions(ds.interactions, items, IdIndex(user_ids)).seen(
        np.arange(len(user_ids))
    )
    return UserState(user_ids, np.nan_to_num(mat), histories, seen)


class TwoStage:
    """Two-tower retrieval of the top candidates, then a ranker re-orders them."""

    def __init__(self, bundle: ModelBundle) -> None:
        self.bundle = bundle
        self.spec = bundle.spec
        self.items = bundle.items
        self.item_emb = bundle.item_embeddings
        self.item_feats = bundle.item_feature_matrix()
        self.encoder: UserEncoder = bundle.encoder

    def state(self, ds: Dataset, users: list[str] | None = None) -> UserState:
        return user_state(ds, self.spec, self.items, users)

    def user_embeddings(self, state: UserState) -> np.ndarray:
        return self.encoder.embed_batch(list(state.user_ids), state.features, state.histories)

    def retrieve(self, state: UserState, k: int, batch_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
        """Top-k unseen items per user by cosine similarity (indices into items, -1 padded)."""
        emb = self.user_embeddings(state)
        idx, val = [], []
        for b in batches(len(emb), batch_size):
            i, v = top_k(emb[b] @ self.item_emb.T, k, [state.seen[j] for j in b])
            idx.append(i)
            val.append(v)
        if not idx:
            return np.zeros((0, k), np.int64), np.zeros((0, k), np.float32)
        return np.concatenate(idx), np.concatenate(val)

    def rank(
        self, state: UserState, cand: np.ndarray, cand_scores: np.ndarray, ranker: str, batch_size: int = 128
    ) -> tuple[np.ndarray, np.ndarray]:
        """Re-order each user's candidates by the ranker's score (padding stays last)."""
        model = self.bundle.rankers[ranker]
        out_idx = np.empty_like(cand)
        out_val = np.empty(cand.shape, dtype=np.float64)
        c = cand.shape[1]
        for b in batches(len(cand), batch_size):
            flat = cand[b].ravel()
            valid = flat >= 0
            rows = np.repeat(b, c)
            x = ranking_inputs_batch(
                state.features[rows], self.item_feats[np.where(valid, flat, 0)], self.spec,
                np.where(valid, cand_scores[b].ravel(), 0.0),
            )
            s = np.where(valid, model.score(x), -np.inf).reshape(len(b), c)
            order = np.argsort(-s, axis=1, kind="stable")
            out_idx[b] = np.take_along_axis(cand[b], order, axis=1)
            out_val[b] = np.take_along_axis(s, order, axis=1)
        return out_idx, out_val

    def recommend(self, state: UserState, k: int, ranker: str | None = None, candidates: int = 300):
        """Top-k per user: retrieve `candidates`, rank them, keep k."""
        ranker = ranker or self.bundle.config.get("default_ranker", "dcn")
        cand, scores = self.retrieve(state, max(candidates, k))
        idx, val = self.rank(state, cand, scores, ranker)
        return idx[:, :k], val[:, :k]


def batch_recommend(bundle: ModelBundle, ds: Dataset, k: int, ranker: str | None = None,
                    progress: bool = True) -> pd.DataFrame:
    """Top-k for every user of `ds` (two-stage, nothing the user interacted with in ds):
    user_id, item_id, rank (1 = best), score."""
    stage = TwoStage(bundle)
    state = stage.state(ds)
    candidates = int(bundle.config.get("candidates", 300))
    frames = []
    for b in tqdm(list(batches(len(state.user_ids), 1024)), desc="batch-recommend", unit="batch",
                  disable=not progress):
        sub = UserState(state.user_ids[b], state.features[b], [state.histories[j] for j in b],
                        [state.seen[j] for j in b])
        frames.append(pd.DataFrame(recommend_rows(stage, sub, k, ranker, candidates)))
    if not frames:
        return pd.DataFrame(columns=["user_id", "item_id", "rank", "score"])
    return pd.concat(frames, ignore_index=True)


def recommend_rows(stage: TwoStage, state: UserState, k: int, ranker: str | None,
                   candidates: int) -> dict[str, np.ndarray]:
    """Top-k of each user of `state` as columns user_id, item_id, rank (1 = best), score: one row per
    recommendation (the batch output's format, shared by the in-process and the Ray Data paths)."""
    idx, val = stage.recommend(state, k, ranker, candidates)
    rows, cols = np.nonzero(idx >= 0)
    return {
        "user_id": np.asarray(state.user_ids)[rows].astype(str),
        "item_id": stage.items.ids[idx[rows, cols]].astype(str),
        "rank": (cols + 1).astype(np.int64),
        "score": val[rows, cols],
    }
