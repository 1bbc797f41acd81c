"""A synthetic dataset with known structure, and the ground truth that made it.

Users and items have latent factors (dim 16 by default). Item factors sit near the centroids of their
1-3 genres; user factors near offsets of their age bucket, gender and occupation. Items have a Zipf
popularity. Each user draws a heavy-tailed number of distinct items with probability
proportional to `exp(u·v / T) * popularity`, sampled without replacement by Gumbel top-k over a
candidate pool: all items for heavy users of small catalogues, otherwise draws from a
popularity/uniform mixture whose bias is corrected in the Gumbel keys (sampling-importance-resampling).
Ratings 1-5 come from the same affinity plus user and item biases and noise; timestamps from a
per-user active window. `GroundTruth` keeps the factors so `click_probability` can simulate clicks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from tqdm import tqdm

from recsys.training.data.schema import Dataset

GENRES = (
    "Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
    "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
_GENRE_PRIOR = np.array(
    [8, 6, 2.5, 3, 16, 5, 3, 20, 3, 1, 5, 2, 3, 7, 4, 8, 2, 1.5], dtype=np.float64
)
AGE_BUCKETS = ("Under 18", "18-24", "25-34", "35-44", "45-49", "50-55", "56+")
_AGE_PRIOR = np.array([4, 18, 35, 20, 8, 8, 7], dtype=np.float64)
GENDERS = ("F", "M")
_GENDER_PRIOR = np.array([0.4, 0.6])
OCCUPATIONS = (
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student", "customer service",
    "doctor/health care", "executive/managerial", "farmer", "homemaker", "K-12 student", "lawyer",
    "programmer", "retired", "sales/marketing", "scientist", "self-employed", "technician/engineer",
    "tradesman/craftsman", "unemployed", "writer",
)  # fmt: skip
_OCCUPATION_PRIOR = np.array(
    [10, 5, 3, 3, 12, 2, 3, 10, 0.5, 1, 3, 2, 8, 3, 5, 3, 4, 8, 1, 1, 3], dtype=np.float64
)
_STUDENT, _COLLEGE, _RETIRED = OCCUPATIONS.index("K-12 student"), OCCUPATIONS.index("college/grad student"), \
    OCCUPATIONS.index("retired")

DEFAULT_START = 1420070400  # 2015-01-01T00:00:00Z
DEFAULT_END = 1735689600  # 2025-01-01T00:00:00Z
_CHUNK_CANDIDATES = 1_500_000  # candidate pairs scored at once (bounds memory)


@dataclass
class GroundTruth:
    """The latent model behind a synthetic dataset, enough to simulate a user's response to an item."""

    user_ids: np.ndarray  # str, aligned with user_factors
    item_ids: np.ndarray  # str, aligned with item_factors
    user_factors: np.ndarray  # float32 [n_users, dim]
    item_factors: np.ndarray  # float32 [n_items, dim]
    item_log_popularity: np.ndarray  # float32, log of the normalised Zipf popularity
    item_quality: np.ndarray  # float32, shifts ratings and clicks
    params: dict = field(default_factory=dict)  # temperature, click_scale, click_bias, seed, ...

    @cached_property
    def user_index(self) -> pd.Index:
        return pd.Index(self.user_ids)

    @cached_property
    def item_index(self) -> pd.Index:
        return pd.Index(self.item_ids)

    def save(self, path: Path) -> None:
        """Write the arrays and parameters to one `.npz` file."""
        with open(path, "wb") as fh:
            np.savez(
                fh,
                user_ids=self.user_ids.astype(str),
                item_ids=self.item_ids.astype(str),
                user_factors=self.user_factors,
                item_factors=self.item_factors,
                item_log_popularity=self.item_log_popularity,
                item_quality=self.item_quality,
                param_names=np.array(sorted(self.params), dtype=str),
                param_values=np.array([float(self.params[k]) for k in sorted(self.params)], dtype=np.float64),
            )

    @classmethod
    def load(cls, path: Path) -> GroundTruth:
        with np.load(path, allow_pickle=False) as npz:
            params = {str(k): float(v) for k, v in zip(npz["param_names"], npz["param_values"], strict=True)}
            return cls(
                user_ids=npz["user_ids"],
                item_ids=npz["item_ids"],
                user_factors=npz["user_factors"],
                item_factors=npz["item_factors"],
                item_log_popularity=npz["item_log_popularity"],
                item_quality=npz["item_quality"],
                params=params,
            )

    def equals(self, other: GroundTruth) -> bool:
        arrays = ("user_ids", "item_ids", "user_factors", "item_factors", "item_log_popularity", "item_quality")
        return self.params == other.params and all(
            np.array_equal(getattr(self, a), getattr(other, a)) for a in arrays
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GroundTruth) and self.equals(other)

    __hash__ = None  # type: ignore[assignment]


def click_probability(dataset_meta: dict | GroundTruth, user_ids, item_ids) -> np.ndarray:
    """P(click) of each (user, item) pair under the ground truth; ids broadcast like numpy arrays.

    `logit = click_scale * (u·v) + item_quality + click_bias`: about 3% for a random item and tens of
    percent for the items a user likes most. Unknown ids raise `KeyError`.
    """
    truth = dataset_meta if isinstance(dataset_meta, GroundTruth) else dataset_meta.get("truth")
    if not isinstance(truth, GroundTruth):
        raise KeyError("dataset meta holds no ground truth (only synthetic datasets have one)")
    users, items = np.broadcast_arrays(np.asarray(user_ids, dtype=object), np.asarray(item_ids, dtype=object))
    shape = users.shape
    u = truth.user_index.get_indexer(users.ravel())
    i = truth.item_index.get_indexer(items.ravel())
    if (u < 0).any():
        raise KeyError(f"unknown user id {users.ravel()[np.argmax(u < 0)]!r}")
    if (i < 0).any():
        raise KeyError(f"unknown item id {items.ravel()[np.argmax(i < 0)]!r}")
    affinity = np.einsum("nd,nd->n", truth.user_factors[u], truth.item_factors[i])
    logit = truth.params["click_scale"] * affinity + truth.item_quality[i] + truth.params["click_bias"]
    return (1.0 / (1.0 + np.exp(-logit))).reshape(shape)


@dataclass(frozen=True)
class SyntheticConfig:
    """Sizes and knobs of the generator; `None` sizes are derived from `n_interactions`."""

    n_interactions: int = 100_000
    n_users: int | None = None
    n_items: int | None = None
    seed: int = 0
    dim: int = 16
    temperature: float = 0.5
    zipf_exponent: float = 1.0
    start: int = DEFAULT_START
    end: int = DEFAULT_END
    pool_factor: int = 4  # candidate pool draws per wanted interaction (plus `pool_extra`)
    pool_extra: int = 200

    def resolved(self) -> SyntheticConfig:
        """With sizes filled in and checked; raises `ValueError` for impossible combinations."""
        n = int(self.n_interactions)
        users = int(self.n_users) if self.n_users is not None else max(50, n // 100)
        items = int(self.n_items) if self.n_items is not None else min(1_000_000, max(1_000, n // 100))
        if n < 1 or users < 1 or items < 2:
            raise ValueError("need at least 1 interaction, 1 user and 2 items")
        if n > users * (items // 2):
            raise ValueError(
                f"{n} interactions do not fit {users} users x {items} items "
                f"(each user may interact with at most half the catalogue)"
            )
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return SyntheticConfig(**{**self.__dict__, "n_users": users, "n_items": items, "n_interactions": n})


def generate(
    n_interactions: int = 100_000,
    n_users: int | None = None,
    n_items: int | None = None,
    seed: int = 0,
    progress: bool = False,
    **knobs,
) -> Dataset:
    """A synthetic `Dataset`, identical for the same arguments; `meta["truth"]` is its `GroundTruth`."""
    cfg = SyntheticConfig(n_interactions=n_interactions, n_users=n_users, n_items=n_items, seed=seed,
                          **knobs).resolved()
    rng = np.random.default_rng(cfg.seed)
    n_u, n_i, d = cfg.n_users, cfg.n_items, cfg.dim
    std = d ** -0.25  # per-dimension std of factors, so that u·v has variance ~1

    # Items: genres (primary from a prior, the rest from genre similarity), factors near genre centroids.
    centroids = rng.normal(0.0, std, size=(len(GENRES), d))
    item_genres, primary, extra, n_extra = _draw_genres(rng, centroids, n_i)
    counts = item_genres.sum(axis=1, keepdims=True)
    genre_part = (item_genres @ centroids) / np.sqrt(counts)
    item_factors = (np.sqrt(0.6) * genre_part + np.sqrt(0.4) * rng.normal(0.0, std, size=(n_i, d)))
    item_factors = item_factors.astype(np.float32)
    ranks = rng.permutation(n_i) + 1
    log_pop = -cfg.zipf_exponent * np.log(ranks)
    log_pop -= np.log(np.exp(log_pop).sum())
    z_pop = (log_pop - log_pop.mean()) / (log_pop.std() + 1e-9)
    item_quality = (0.3 * rng.normal(size=n_i) + 0.15 * z_pop).astype(np.float32)

    # Users: demographics first, factors near the offsets of their demographic values.
    age = rng.choice(len(AGE_BUCKETS), size=n_u, p=_AGE_PRIOR / _AGE_PRIOR.sum())
    gender = rng.choice(len(GENDERS), size=n_u, p=_GENDER_PRIOR)
    occupation = _draw_occupations(rng, age)
    offsets = [rng.normal(0.0, std, size=(k, d)) for k in (len(AGE_BUCKETS), len(GENDERS), len(OCCUPATIONS))]
    user_factors = (
        np.sqrt(0.55) * rng.normal(0.0, std, size=(n_u, d))
        + np.sqrt(0.15) * offsets[0][age]
        + np.sqrt(0.10) * offsets[1][gender]
        + np.sqrt(0.20) * offsets[2][occupation]
    ).astype(np.float32)
    user_bias = (0.35 * rng.normal(size=n_u)).astype(np.float32)

    # Activity: heavy-tailed interactions per user, summing to n_interactions exactly.
    per_user = _activity(rng, n_u, n_i, cfg.n_interactions)

    users_idx, items_idx, affinity = _sample_pairs(rng, cfg, user_factors, item_factors, log_pop, per_user,
                                                   progress)

    # Ratings from the affinity of the sampled pairs, standardised, plus biases and noise.
    z_aff = (affinity - affinity.mean()) / (affinity.std() + 1e-9)
    raw = 3.5 + 0.9 * z_aff + user_bias[users_idx] + 1.5 * item_quality[items_idx]
    raw += rng.normal(0.0, 0.6, size=raw.shape)
    rating = np.clip(np.rint(raw), 1, 5).astype(np.float32)

    timestamp = _timestamps(rng, cfg, users_idx, n_u)

    order = np.lexsort((items_idx, users_idx, timestamp))
    users_idx, items_idx, rating, timestamp = users_idx[order], items_idx[order], rating[order], timestamp[order]

    user_ids = _ids("u", n_u)
    item_ids = _ids("i", n_i)
    interactions = pd.DataFrame({
        "user_id": _take_strings(user_ids, users_idx),
        "item_id": _take_strings(item_ids, items_idx),
        "rating": rating,
        "timestamp": timestamp,
    })
    genre_lists = [
        [GENRES[p], GENRES[a], GENRES[b]][: 1 + n]
        for p, a, b, n in zip(primary.tolist(), extra[:, 0].tolist(), extra[:, 1].tolist(), n_extra.tolist(),
                              strict=True)
    ]
    items = pd.DataFrame({
        "item_id": pd.array(item_ids, dtype="string[pyarrow]"),
        "title": pd.array([f"Synthetic {g[0]} #{j}" for j, g in enumerate(genre_lists)], dtype="string[pyarrow]"),
        "genres": genre_lists,
    })
    users = pd.DataFrame({
        "user_id": pd.array(user_ids, dtype="string[pyarrow]"),
        "age": pd.array(np.array(AGE_BUCKETS, dtype=object)[age], dtype="string[pyarrow]"),
        "gender": pd.array(np.array(GENDERS, dtype=object)[gender], dtype="string[pyarrow]"),
        "occupation": pd.array(np.array(OCCUPATIONS, dtype=object)[occupation], dtype="string[pyarrow]"),
    })
    truth = GroundTruth(
        user_ids=np.array(user_ids, dtype=str),
        item_ids=np.array(item_ids, dtype=str),
        user_factors=user_factors,
        item_factors=item_factors,
        item_log_popularity=log_pop.astype(np.float32),
        item_quality=item_quality,
        params={
            "temperature": cfg.temperature,
            "click_scale": 1.5,
            "click_bias": -4.0,
            "seed": float(cfg.seed),
            "zipf_exponent": cfg.zipf_exponent,
        },
    )
    meta = {
        "source": "synthetic",
        "seed": cfg.seed,
        "n_users": n_u,
        "n_items": n_i,
        "n_interactions": cfg.n_interactions,
        "dim": d,
        "temperature": cfg.temperature,
        "zipf_exponent": cfg.zipf_exponent,
        "truth": truth,
    }
    return Dataset(interactions=interactions, items=items, users=users, name=f"synthetic-{cfg.seed}", meta=meta)


def _draw_genres(rng: np.random.Generator, centroids: np.ndarray, n_items: int):
    """1-3 genres per item, the extra ones similar to the primary.

    Returns (boolean [n_items, n_genres], primary, the two next genres, how many of them are used).
    """
    n_g = len(GENRES)
    prior = _GENRE_PRIOR / _GENRE_PRIOR.sum()
    primary = rng.choice(n_g, size=n_items, p=prior)
    n_extra = rng.choice(3, size=n_items, p=[0.45, 0.35, 0.20])
    unit = centroids / np.linalg.norm(centroids, axis=1, keepdims=True)
    affinity = 3.0 * (unit @ unit.T) + np.log(prior)[None, :]
    scores = affinity[primary] + rng.gumbel(size=(n_items, n_g))
    scores[np.arange(n_items), primary] = -np.inf
    ranked = np.argsort(-scores, axis=1)[:, :2]
    chosen = np.zeros((n_items, n_g), dtype=bool)
    chosen[np.arange(n_items), primary] = True
    for j in range(2):
        take = n_extra > j
        chosen[np.nonzero(take)[0], ranked[take, j]] = True
    return chosen, primary, ranked, n_extra


def _draw_occupations(rng: np.random.Generator, age: np.ndarray) -> np.ndarray:
    """Occupation per user from a prior that depends on the age bucket."""
    n_a, n_o = len(AGE_BUCKETS), len(OCCUPATIONS)
    weights = np.tile(_OCCUPATION_PRIOR, (n_a, 1))
    weights[1:, _STUDENT] = 0.0  # K-12 students are under 18
    weights[0] = 0.5
    weights[0, _STUDENT] = 60.0
    weights[0, _COLLEGE] = 5.0
    weights[:5, _RETIRED] = 0.0  # retired from 50
    weights[5, _RETIRED] = 5.0
    weights[6, _RETIRED] = 40.0
    weights[1, _COLLEGE] = 45.0
    cdf = np.cumsum(weights / weights.sum(axis=1, keepdims=True), axis=1)
    u = rng.random(len(age))
    occupation = (u[:, None] > cdf[age]).sum(axis=1)
    return np.minimum(occupation, n_o - 1)


def _activity(rng: np.random.Generator, n_users: int, n_items: int, total: int) -> np.ndarray:
    """Interactions per user: lognormal weights, a floor, at most half the catalogue; sums to `total`."""
    cap = max(1, n_items // 2)
    floor = min(20, max(1, total // n_users // 5), cap)
    counts = np.zeros(n_users, dtype=np.int64)
    if total >= floor * n_users:
        counts[:] = floor
    weights = rng.lognormal(0.0, 1.0, size=n_users)
    left = total - int(counts.sum())
    while left > 0:
        open_ = counts < cap
        w = np.where(open_, weights, 0.0)
        add = rng.multinomial(left, w / w.sum())
        counts = np.minimum(counts + add, cap)
        left = total - int(counts.sum())
    return counts


def _sample_pairs(
    rng: np.random.Generator,
    cfg: SyntheticConfig,
    user_factors: np.ndarray,
    item_factors: np.ndarray,
    log_pop: np.ndarray,
    per_user: np.ndarray,
    progress: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each user, `per_user[u]` distinct items by Gumbel top-k; returns (user, item, u·v) arrays."""
    n_i = cfg.n_items
    mix = 0.3  # share of uniform draws in the pool proposal
    pop = np.exp(log_pop)
    proposal = (1.0 - mix) * pop + mix / n_i
    cdf = np.cumsum(proposal)
    cdf /= cdf[-1]
    log_correction = (log_pop - np.log(proposal)).astype(np.float32)  # target/proposal, popularity part
    log_pop32 = log_pop.astype(np.float32)
    inv_t = np.float32(1.0 / cfg.temperature)

    pool = cfg.pool_factor * per_user + cfg.pool_extra
    exact = pool * 2 >= n_i  # cheaper and exact: score every item
    pool = np.where(exact, n_i, pool)

    out_u, out_i, out_a = [], [], []
    pending = np.nonzero(per_user > 0)[0]
    bar = tqdm(total=int(per_user.sum()), desc="sampling interactions", unit="pair",
               disable=None if progress else True, leave=False)
    while len(pending):
        short = []
        sizes = pool[pending]
        chunk_of = (np.cumsum(sizes) - sizes) // _CHUNK_CANDIDATES
        cuts = np.concatenate([[0], np.flatnonzero(np.diff(chunk_of)) + 1, [len(pending)]])
        for a, b in zip(cuts[:-1], cuts[1:], strict=True):
            users = pending[a:b]
            got_u, got_i, got_a, missing = _sample_chunk(
                rng, users, per_user[users], pool[users], exact[users], cdf, log_correction, log_pop32, inv_t,
                user_factors, item_factors,
            )
            out_u.append(got_u)
            out_i.append(got_i)
            out_a.append(got_a)
            short.extend(missing)
            bar.update(len(got_u))
        # Users whose pool held too few distinct items: retry with a pool twice as large.
        pending = np.array(sorted(short), dtype=np.int64)
        if len(pending):
            pool[pending] = np.minimum(pool[pending] * 2, n_i)
            exact[pending] = pool[pending] * 2 >= n_i
            pool[pending] = np.where(exact[pending], n_i, pool[pending])
    bar.close()
    return np.concatenate(out_u), np.concatenate(out_i), np.concatenate(out_a)


def _sample_chunk(rng, users, want, pool, exact, cdf, log_correction, log_pop, inv_t, user_factors,
                  item_factors):
    """Gumbel top-k for a chunk of users; users short of distinct candidates come back in `missing`."""
    n_i = len(cdf)
    local = np.repeat(np.arange(len(users), dtype=np.int64), pool)
    items = np.empty(len(local), dtype=np.int64)
    correction = np.empty(len(local), dtype=np.float32)
    is_exact = np.repeat(exact, pool)
    n_exact = int(is_exact.sum())
    if n_exact:
        items[is_exact] = np.tile(np.arange(n_i), n_exact // n_i)
        correction[is_exact] = log_pop[items[is_exact]]
    drawn = ~is_exact
    n_drawn = len(local) - n_exact
    if n_drawn:
        picks = np.searchsorted(cdf, rng.random(n_drawn), side="right")
        picks = np.minimum(picks, n_i - 1)
        items[drawn] = picks
        correction[drawn] = log_correction[picks]
    affinity = np.einsum("nd,nd->n", user_factors[users[local]], item_factors[items])
    keys = affinity * inv_t + correction + rng.gumbel(size=len(local)).astype(np.float32)

    # Repeated draws of one item: keep the largest key (the Gumbel max of the summed weights).
    pair = local * n_i + items
    order = np.lexsort((-keys, pair))
    first = np.ones(len(order), dtype=bool)
    first[1:] = pair[order][1:] != pair[order][:-1]
    keep = order[first]  # grouped by user (pair sorts by user first)
    k_local, k_items, k_keys, k_aff = local[keep], items[keep], keys[keep], affinity[keep]

    # Top `want` keys per user.
    order = np.lexsort((-k_keys, k_local))
    k_local, k_items, k_aff = k_local[order], k_items[order], k_aff[order]
    distinct = np.bincount(k_local, minlength=len(users))
    starts = np.concatenate([[0], np.cumsum(distinct)[:-1]])
    rank = np.arange(len(k_local)) - starts[k_local]
    short = distinct < want
    take = (rank < want[k_local]) & ~short[k_local]
    return users[k_local[take]], k_items[take].astype(np.int32), k_aff[take], list(users[short])


def _timestamps(rng: np.random.Generator, cfg: SyntheticConfig, users_idx: np.ndarray, n_users: int):
    """Per-user active window (signup grows over time, activity bursts after signup); epoch seconds."""
    span = float(cfg.end - cfg.start)
    signup = cfg.start + span * rng.random(n_users) ** 0.8 * 0.98
    active = np.maximum((cfg.end - signup) * rng.beta(0.7, 2.0, size=n_users), 86_400.0)
    offset = active[users_idx] * rng.beta(0.5, 1.5, size=len(users_idx))
    return np.minimum(signup[users_idx] + offset, cfg.end - 1).astype(np.int64)


def _ids(prefix: str, n: int) -> list[str]:
    """Zero-padded ids, so string order equals index order."""
    width = len(str(max(n - 1, 0)))
    return [f"{prefix}{j:0{width}d}" for j in range(n)]


def _take_strings(ids: list[str], indices: np.ndarray) -> pd.arrays.ArrowStringArray:
    return pd.arrays.ArrowStringArray(pc.take(pa.array(ids, type=pa.large_string()), pa.array(indices)))
