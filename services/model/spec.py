"""The feature contract every model version carries (`feature_spec.json`): feature names and their order,
the genre vocabulary and the demographic encodings. Training builds it (`recsys.training.features`), serving
reads it; the names are documented in `recsys.training.features`.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from functools import cached_property, lru_cache

import numpy as np

HISTORY_LEN = 500  # what serving excludes as already seen; the user tower reads only its last 30
CROSS_FEATURES = (
    "x_genre_affinity",
    "x_genre_affinity_mean",
    "x_year_gap",
    "x_pop_gap",
    "x_rating_gap",
    "retrieval_score",
)


@lru_cache(maxsize=65536)  # labels repeat (genres, attribute keys): one regex per distinct label
def feature_name(text: str) -> str:
    """A lower-case identifier from any label: 'Sci-Fi' -> 'sci_fi'."""
    name = re.sub(r"[^0-9a-z]+", "_", str(text).lower()).strip("_")
    return name or "x"


@dataclass
class FeatureSpec:
    """Names and order of every feature, the genre vocabulary and demographic encodings."""

    user_features: list[str]
    item_features: list[str]
    genres: list[str]
    genre_names: list[str]
    numeric_demographics: list[str] = field(default_factory=list)
    categorical_demographics: dict[str, list[str]] = field(default_factory=dict)
    history_len: int = HISTORY_LEN
    reference_ts: int = 0

    @property
    def ranking_features(self) -> list[str]:
        """Column names of `ranking_inputs`' output, in order."""
        return [*self.user_features, *self.item_features, *CROSS_FEATURES]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> FeatureSpec:
        return cls(**data)

    @cached_property
    def _layout(self) -> dict[str, np.ndarray | int]:
        u = {n: i for i, n in enumerate(self.user_features)}
        it = {n: i for i, n in enumerate(self.item_features)}
        return {
            "u_genres": np.array([u[f"user_genre_{g}"] for g in self.genre_names], dtype=np.int64),
            "i_genres": np.array([it[f"item_genre_{g}"] for g in self.genre_names], dtype=np.int64),
            "u_year": u["user_mean_item_year"],
            "u_pop": u["user_mean_item_pop"],
            "u_rating": u["user_mean_rating"],
            "i_year": it["item_year"],
            "i_pop": it["item_log_count"],
            "i_rating": it["item_mean_rating"],
            "i_ngenres": it["item_n_genres"],
        }
