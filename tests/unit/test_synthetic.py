"""The synthetic generator: sizes, contract, determinism, and the structure it promises."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsys.training.data import click_probability, generate, validate
from recsys.training.data.synthetic import GENRES, OCCUPATIONS, SyntheticConfig


@pytest.fixture(scope="module")
def ds():
    return generate(30_000, n_users=400, n_items=3_000, seed=7)


def _indices(ds):
    truth = ds.meta["truth"]
    users = truth.user_index.get_indexer(ds.interactions["user_id"].to_numpy())
    items = truth.item_index.get_indexer(ds.interactions["item_id"].to_numpy())
    return truth, users, items


def test_counts_and_contract(ds):
    validate(ds)
    inter = ds.interactions
    assert len(inter) == 30_000
    assert len(ds.users) == 400 and len(ds.items) == 3_000
    assert inter["user_id"].nunique() == 400  # every user has a floor of activity
    assert list(inter.columns) == ["user_id", "item_id", "rating", "timestamp"]
    assert list(inter.dtypes) == ["string[pyarrow]", "string[pyarrow]", "float32", "int64"]
    assert not inter.duplicated(["user_id", "item_id"]).any()
    assert set(np.unique(inter["rating"])) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    assert inter["rating"].nunique() == 5
    config = SyntheticConfig()
    assert inter["timestamp"].between(config.start, config.end - 1).all()
    assert inter["timestamp"].is_monotonic_increasing
    assert all(1 <= len(g) <= 3 and set(g) <= set(GENRES) and len(set(g)) == len(g) for g in ds.items["genres"])
    assert len(ds.genres) == 18
    assert list(ds.users.columns) == ["user_id", "age", "gender", "occupation"]
    assert set(ds.users["occupation"]) <= set(OCCUPATIONS)
    students = ds.users[ds.users["occupation"] == "K-12 student"]
    assert (students["age"] == "Under 18").all()


def test_default_sizes_follow_interactions():
    small = generate(10_000, seed=1)
    assert len(small.interactions) == 10_000
    assert len(small.items) == 1_000 and len(small.users) == 100


def test_same_seed_same_frames_other_seed_other_frames():
    a = generate(5_000, n_users=100, n_items=1_000, seed=3)
    b = generate(5_000, n_users=100, n_items=1_000, seed=3)
    c = generate(5_000, n_users=100, n_items=1_000, seed=4)
    for frame in ("interactions", "items", "users"):
        pd.testing.assert_frame_equal(getattr(a, frame), getattr(b, frame))
    assert a.meta == b.meta  # GroundTruth compares by value
    assert not a.interactions.equals(c.interactions)


def test_popularity_is_zipf_like(ds):
    truth, _, items = _indices(ds)
    counts = np.bincount(items, minlength=len(ds.items))
    ranked = np.sort(counts)[::-1]
    top_1pct = ranked[:30].sum() / len(items)
    assert top_1pct > 0.05  # 5x more than uniform
    # Log-log slope of count vs rank over the body of the distribution is clearly negative.
    ranks = np.arange(10, 1000)
    slope = np.polyfit(np.log(ranks), np.log(np.maximum(ranked[ranks], 1)), 1)[0]
    assert -2.0 < slope < -0.3
    # And it is the ground-truth popularity that drives it.
    order = np.argsort(-truth.item_log_popularity)
    assert counts[order[:300]].sum() > 5 * counts[order[-300:]].sum()


def test_users_choose_items_near_their_factors(ds):
    truth, users, items = _indices(ds)
    chosen = np.einsum("nd,nd->n", truth.user_factors[users], truth.item_factors[items])
    rng = np.random.default_rng(0)
    random_items = rng.integers(0, len(ds.items), size=len(items))
    random = np.einsum("nd,nd->n", truth.user_factors[users], truth.item_factors[random_items])
    assert chosen.mean() > random.mean() + 0.5
    per_user = pd.DataFrame({"u": users, "gap": chosen - random}).groupby("u")["gap"].mean()
    assert (per_user > 0).mean() > 0.9
    # Ratings carry the same signal: well-rated items have a higher affinity.
    rating = ds.interactions["rating"].to_numpy()
    assert chosen[rating >= 4].mean() > chosen[rating <= 2].mean()


def test_genres_and_demographics_carry_factor_structure(ds):
    truth = ds.meta["truth"]
    primary = np.array([g[0] for g in ds.items["genres"]])
    centroids = {g: truth.item_factors[primary == g].mean(axis=0) for g in set(primary)}
    names = sorted(centroids)
    matrix = np.stack([centroids[g] for g in names])
    nearest = np.array(names)[np.argmax(truth.item_factors @ matrix.T, axis=1)]
    assert (nearest == primary).mean() > 3 / len(GENRES)  # far above chance
    occupation = ds.users["occupation"].to_numpy()
    by_occupation = pd.DataFrame(truth.user_factors).groupby(occupation).mean()
    spread = np.linalg.norm(by_occupation.to_numpy() - truth.user_factors.mean(axis=0), axis=1).mean()
    assert spread > 0.2  # demographic groups sit at different places in factor space


def test_click_probability_follows_the_ground_truth(ds):
    truth, users, items = _indices(ds)
    user_ids = ds.interactions["user_id"].to_numpy()
    observed = click_probability(ds.meta, user_ids, ds.interactions["item_id"].to_numpy())
    rng = np.random.default_rng(1)
    random = click_probability(ds.meta, user_ids, truth.item_ids[rng.integers(0, len(truth.item_ids), len(users))])
    assert observed.shape == (len(users),)
    assert ((observed > 0) & (observed < 1)).all()
    assert observed.mean() > 2 * random.mean()
    assert 0.005 < random.mean() < 0.1
    # One user against many items broadcasts; the truth object itself works too.
    p = click_probability(truth, "u000", truth.item_ids[:10])
    assert p.shape == (10,)
    with pytest.raises(KeyError):
        click_probability(ds.meta, ["nobody"], ["i0000"])
    with pytest.raises(KeyError):
        click_probability({}, ["u000"], ["i0000"])


def test_impossible_sizes_are_refused():
    with pytest.raises(ValueError, match="do not fit"):
        generate(10_000, n_users=10, n_items=100)
    with pytest.raises(ValueError):
        generate(0)
