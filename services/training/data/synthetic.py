"""A synthetic dataset with known structure, and the ground truth that made it.

Users and items have latent factors (dim 16 by default). Item factors sit near the centroids of their
1-3 genres; user factors near offsets of their age bucket, gender and occupation. Items have a Zipf
popularity. Each user draws a heavy-tailed number of distinct items, the model being sampling without
replacement with weights `exp(u·v / T) * popularity` (Gumbel top-k). Exact for users whose pool would
cover half the catalogue (every item is scored); otherwise an importance-corrected pool of 4k+200
draws from a per-user proposal (the user's likely k-means clusters of item factors, plus popularity
and uniform draws): an approximation that keeps most of the affinity (sampled pairs reach ~87% of the
exact model's mean u·v, measured at 50k items) at a cost linear in the number of interactions.
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
_GENRE_PRIOR = np.array([8, 6, 2.5, 3, 16, 5, 3, 20, 3, 1, 5, 2, 3, 7, 4, 8, 2, 1.5], dtype=np.float64)
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
_OCCUPATION_PRIOR = np.array([10, 5, 3, 3, 12, 2, 3, 10, 0.5, 1, 3, 2, 8, 3, 5, 3, 4, 8, 1, 1, 3], dtype=np.float64)
_STUDENT, _COLLEGE, _RETIRED = (
    OCCUPATIONS.index("K-12 student"),
    OCCUPATIONS.index("college/grad student"),
    OCCUPATIONS.index("retired"),
)

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
        return self.params == other.params and all(np.array_equal(getattr(self, a), getattr(other, a)) for a in arrays)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GroundTruth) and self.equals(other)

    __hash__ = None  # type: ignore[assignment]


def click_probability(dataset_meta: dict | GroundTruth | Dataset, user_ids, item_ids) -> np.ndarray:
    """P(click) of each (user, item) pair under the ground truth; ids broadcast like numpy arrays.

    `logit = click_scale * (u·v) + item_quality + click_bias`: a few percent for a random item, about
    60% for a user's ten best items. `dataset_meta` may also be the `Dataset` or its `GroundTruth`.
    Unknown ids raise `KeyError`.
    """
    if isinstance(dataset_meta, Dataset):
        dataset_meta = dataset_meta.meta
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
    """A synthetic `Dataset`, identical for the same arguments; `meta["truth"]` is its `GroundTruth`.

    `knobs` are further `SyntheticConfig` fields (dim, temperature, zipf_exponent, start, end, ...).
    Raises `ValueError` for sizes that cannot fit (more interactions than users x half the items).
    """
    cfg = SyntheticConfig(
        n_interactions=n_interactions, n_users=n_users, n_items=n_items, seed=seed, **knobs
    ).resolved()
    rng = np.random.default_rng(cfg.seed)
    n_u, n_i, d = cfg.n_users, cfg.n_items, cfg.dim
    std = d**-0.25  # per-dimension std of factors, so that u·v has variance ~1

    # Items: genres (primary from a prior, the rest from genre similarity), factors near genre centroids.
    centroids = rng.normal(0.0, std, size=(len(GENRES), d))
    item_genres, primary, extra, n_extra = _draw_genres(rng, centroids, n_i)
    counts = item_genres.sum(axis=1, keepdims=True)
    genre_part = (item_genres @ centroids) / np.sqrt(counts)
    item_factors = np.sqrt(0.6) * genre_part + np.sqrt(0.4) * rng.normal(0.0, std, size=(n_i, d))
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

    users_idx, items_idx, affinity = _sample_pairs(rng, cfg, user_factors, item_factors, log_pop, per_user, progress)

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
    interactions = pd.DataFrame(
        {
            "user_id": _take_strings(user_ids, users_idx),
            "item_id": _take_strings(item_ids, items_idx),
            "rating": rating,
            "timestamp": timestamp,
        }
    )
    genre_lists = [
        [GENRES[p], GENRES[a], GENRES[b]][: 1 + n]
        for p, a, b, n in zip(
            primary.tolist(), extra[:, 0].tolist(), extra[:, 1].tolist(), n_extra.tolist(), strict=True
        )
    ]
    items = pd.DataFrame(
        {
            "item_id": pd.array(item_ids, dtype="string[pyarrow]"),
            "title": pd.array([f"Synthetic {g[0]} #{j}" for j, g in enumerate(genre_lists)], dtype="string[pyarrow]"),
            "genres": genre_lists,
        }
    )
    users = pd.DataFrame(
        {
            "user_id": pd.array(user_ids, dtype="string[pyarrow]"),
            "age": pd.array(np.array(AGE_BUCKETS, dtype=object)[age], dtype="string[pyarrow]"),
            "gender": pd.array(np.array(GENDERS, dtype=object)[gender], dtype="string[pyarrow]"),
            "occupation": pd.array(np.array(OCCUPATIONS, dtype=object)[occupation], dtype="string[pyarrow]"),
        }
    )
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
    sampler = _PoolSampler(rng, log_pop, user_factors, item_factors, 1.0 / cfg.temperature)
    pool = cfg.pool_factor * per_user + cfg.pool_extra
    pool = np.where(pool * 2 >= n_i, n_i, pool)  # a pool of n_i means: score every item (exact)

    out_u, out_i, out_a = [], [], []
    pending = np.nonzero(per_user > 0)[0]
    bar = tqdm(
        total=int(per_user.sum()),
        desc="sampling interactions",
        unit="pair",
        disable=None if progress else True,
        leave=False,
    )
    while len(pending):
        short = []
        sizes = pool[pending]
        chunk_of = (np.cumsum(sizes) - sizes) // _CHUNK_CANDIDATES
        cuts = np.concatenate([[0], np.flatnonzero(np.diff(chunk_of)) + 1, [len(pending)]])
        for a, b in zip(cuts[:-1], cuts[1:], strict=True):
            users = pending[a:b]
            got_u, got_i, got_a, missing = sampler.sample(users, per_user[users], pool[users])
            out_u.append(got_u)
            out_i.append(got_i)
            out_a.append(got_a)
            short.append(missing)
            bar.update(len(got_u))
        # Users whose pool held too few distinct items: retry with a pool twice as large.
        pending = np.sort(np.concatenate(short))
        pool[pending] = np.minimum(pool[pending] * 2, n_i)
        pool[pending] = np.where(pool[pending] * 2 >= n_i, n_i, pool[pending])
    bar.close()
    return np.concatenate(out_u), np.concatenate(out_i), np.concatenate(out_a)


class _PoolSampler:
    """Gumbel top-k over per-user candidate pools.

    A pool is either every item (key = u·v/T + log pop + Gumbel: exact sampling without replacement)
    or i.i.d. draws from a per-user mixture q_u: a share `NEAR` from the user's likely clusters (k-means
    clusters of item factors, picked by softmax(u·centroid/T + log cluster popularity), then an item by
    popularity inside the cluster), the rest from 0.7 popularity + 0.3 uniform. Keys are then
    u·v/T + log(pop/q_u) + Gumbel, keeping the largest key of repeated draws (the Gumbel-max of their
    summed importance weights): sampling-importance-resampling of the exact model.
    """

    MIX = 0.3  # uniform share of the global part: keeps every item reachable, bounds the guide-table walk
    NEAR = 0.8  # share of a pool drawn from the user's clusters
    CLUSTER_SIZE = 200  # items per k-means cluster
    MAX_CLUSTERS = 256  # more barely helps (measured) and costs k-means time

    def __init__(self, rng, log_pop, user_factors, item_factors, inv_t) -> None:
        self.rng = rng
        self.user_factors, self.item_factors = user_factors, item_factors
        self.inv_t = np.float32(inv_t)
        n = len(log_pop)
        pop = np.exp(log_pop)
        self.global_q = (1.0 - self.MIX) * pop + self.MIX / n
        self.cdf = np.cumsum(self.global_q)
        self.cdf /= self.cdf[-1]
        self.cdf[-1] = np.inf  # guards the walk against rounding at u -> 1
        self.guide = np.searchsorted(self.cdf, np.arange(n) / n, side="right")  # first index with cdf > j/n
        self.log_pop = log_pop.astype(np.float32)

        n_clusters = min(n, int(np.clip(n // self.CLUSTER_SIZE, 8, self.MAX_CLUSTERS)))
        self.centroids, self.cluster = _kmeans(rng, item_factors, n_clusters)
        cluster_pop = np.bincount(self.cluster, weights=pop, minlength=n_clusters)
        self.log_cluster_pop = np.log(np.maximum(cluster_pop, 1e-300))
        self.within = pop / cluster_pop[self.cluster]  # P(item | its cluster)
        self.by_cluster = np.argsort(self.cluster, kind="stable")
        sorted_cluster = self.cluster[self.by_cluster]
        cum = np.cumsum(self.within[self.by_cluster])
        starts = np.searchsorted(sorted_cluster, np.arange(n_clusters))
        base = np.concatenate([[0.0], cum])[starts]  # cumulative mass before each cluster
        self.cluster_cdf = sorted_cluster + (cum - base[sorted_cluster])
        last = np.concatenate([starts[1:], [n]]) - 1
        nonempty = np.bincount(self.cluster, minlength=n_clusters) > 0
        self.cluster_cdf[last[nonempty]] = np.arange(n_clusters)[nonempty] + 1.0

    def draw_global(self, count: int) -> np.ndarray:
        """`count` i.i.d. items from 0.7 popularity + 0.3 uniform (guide-table inversion, O(1) per draw)."""
        n = len(self.cdf)
        u = self.rng.random(count)
        idx = self.guide[np.minimum((u * n).astype(np.int64), n - 1)]
        behind = np.flatnonzero(self.cdf[idx] <= u)
        while len(behind):
            idx[behind] += 1
            behind = behind[self.cdf[idx[behind]] <= u[behind]]
        return idx

    def cluster_probs(self, users: np.ndarray) -> np.ndarray:
        """[len(users), n_clusters]: P(cluster | user) of the near part."""
        logits = (self.user_factors[users] @ self.centroids.T) * self.inv_t + self.log_cluster_pop
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        return probs / probs.sum(axis=1, keepdims=True)

    def draw_near(self, probs: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """`counts[u]` items per user row of `probs`: a cluster, then an item by popularity inside it."""
        n_clusters = probs.shape[1]
        per_cluster = self.rng.multinomial(counts, probs)
        clusters = np.repeat(np.tile(np.arange(n_clusters), len(counts)), per_cluster.ravel())
        pos = np.searchsorted(self.cluster_cdf, clusters + self.rng.random(len(clusters)), side="right")
        return self.by_cluster[np.minimum(pos, len(self.by_cluster) - 1)]

    def sample(self, users: np.ndarray, want: np.ndarray, pool: np.ndarray):
        """(user, item, affinity) of the top `want` keys per user, and the users short of distinct items."""
        n_i = len(self.cdf)
        exact_user = pool >= n_i
        near = np.where(exact_user, 0, np.ceil(self.NEAR * pool).astype(np.int64))
        rest = pool - near
        share = near / pool  # per-user weight of the near part in q_u
        probs = self.cluster_probs(users)
        # Per user: the near draws, then the rest (all items for exact users, global draws otherwise).
        local_near = np.repeat(np.arange(len(users), dtype=np.int64), near)
        local_rest = np.repeat(np.arange(len(users), dtype=np.int64), rest)
        exact = np.repeat(exact_user, rest)
        rest_items = np.empty(len(local_rest), dtype=np.int64)
        n_exact = int(exact.sum())
        rest_items[exact] = np.tile(np.arange(n_i), n_exact // n_i)
        rest_items[~exact] = self.draw_global(len(local_rest) - n_exact)
        local = np.concatenate([local_near, local_rest])
        items = np.concatenate([self.draw_near(probs, near), rest_items])
        exact = np.concatenate([np.zeros(len(local_near), dtype=bool), exact])

        q = share[local] * probs[local, self.cluster[items]] * self.within[items]
        q += (1.0 - share[local]) * self.global_q[items]
        correction = np.where(exact, self.log_pop[items], self.log_pop[items] - np.log(q)).astype(np.float32)
        affinity = np.einsum(
            "nd,nd->n", np.take(self.user_factors, users[local], axis=0), np.take(self.item_factors, items, axis=0)
        )
        keys = affinity * self.inv_t + correction + self.rng.gumbel(size=len(local)).astype(np.float32)

        # Repeated draws of one (user, item): keep the largest key.
        pair = local * n_i + items
        order = np.argsort(pair)
        sorted_pair = pair[order]
        starts = np.flatnonzero(np.concatenate([[True], sorted_pair[1:] != sorted_pair[:-1]]))
        g_keys = np.maximum.reduceat(keys[order], starts)
        first = order[starts]
        g_local, g_items, g_aff = local[first], items[first], affinity[first]

        # Top `want` keys per user: one sort by (user ascending, key descending).
        composite = g_local * 1024.0 - np.clip(g_keys, -500.0, 500.0)
        order = np.argsort(composite)
        g_local, g_items, g_aff = g_local[order], g_items[order], g_aff[order]
        distinct = np.bincount(g_local, minlength=len(users))
        first_of_user = np.concatenate([[0], np.cumsum(distinct)[:-1]])
        rank = np.arange(len(g_local)) - first_of_user[g_local]
        short = distinct < want
        take = (rank < want[g_local]) & ~short[g_local]
        return users[g_local[take]], g_items[take].astype(np.int32), g_aff[take], users[short]


def _kmeans(rng: np.random.Generator, x: np.ndarray, k: int, iters: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's k-means fitted on a sample of at most 50 points per cluster; returns (centroids, labels)."""
    fit = x[rng.choice(len(x), size=min(len(x), 50 * k), replace=False)].astype(np.float32)
    centroids = fit[rng.choice(len(fit), size=k, replace=False)].copy()
    for _ in range(iters):
        labels = _nearest(fit, centroids)
        sums = np.zeros_like(centroids)
        np.add.at(sums, labels, fit)
        sizes = np.bincount(labels, minlength=k)
        filled = sizes > 0
        centroids[filled] = sums[filled] / sizes[filled, None]
    return centroids, _nearest(x.astype(np.float32), centroids)


def _nearest(x: np.ndarray, centroids: np.ndarray, block: int = 16_384) -> np.ndarray:
    """Index of the nearest centroid of each row of `x`, in blocks that bound memory."""
    c_norm = (centroids * centroids).sum(axis=1)
    out = np.empty(len(x), dtype=np.int64)
    for a in range(0, len(x), block):
        out[a : a + block] = np.argmin(c_norm[None, :] - 2.0 * (x[a : a + block] @ centroids.T), axis=1)
    return out


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
