"""Exploration policies: spec text, exact marginals, and samples that follow them."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.model.exploration import PROPENSITY_FLOOR, ExplorationPolicy

EPS = ExplorationPolicy.parse("epsilon=0.3,pool=4")
PL = ExplorationPolicy.parse("plackett-luce,temperature=1.5,pool=3")


@pytest.mark.parametrize(
    ("text", "policy", "spec"),
    [
        ("", ExplorationPolicy("none"), "none"),
        ("none", ExplorationPolicy("none"), "none"),
        ("epsilon=0.1", ExplorationPolicy("epsilon", 0.1, 20), "epsilon=0.1,pool=20"),
        (" epsilon = 0.1 , pool = 5 ", ExplorationPolicy("epsilon", 0.1, 5), "epsilon=0.1,pool=5"),
        ("pool=5,epsilon=1", ExplorationPolicy("epsilon", 1.0, 5), "epsilon=1,pool=5"),
        ("epsilon=0", ExplorationPolicy("epsilon", 0.0, 20), "epsilon=0,pool=20"),
        ("plackett-luce", ExplorationPolicy("plackett-luce"), "plackett-luce,temperature=1,pool=20"),
        (
            "plackett-luce,temperature=2,pool=20",
            ExplorationPolicy("plackett-luce", temperature=2.0, pool=20),
            "plackett-luce,temperature=2,pool=20",
        ),
        ("pool=7,plackett-luce,temperature=0.25", ExplorationPolicy("plackett-luce", 0.0, 7, 0.25), None),
    ],
)
def test_parse_and_spec_round_trip(text, policy, spec):
    parsed = ExplorationPolicy.parse(text)
    assert parsed == policy
    if spec is not None:
        assert parsed.spec() == spec
    assert ExplorationPolicy.parse(parsed.spec()) == parsed


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("greedy", "'greedy'"),
        ("epsilon", "needs a value"),
        ("epsilon=abc", "epsilon='abc'"),
        ("epsilon=1.5", "epsilon must be in [0, 1]"),
        ("epsilon=-0.1", "epsilon must be in [0, 1]"),
        ("epsilon=0.1,pool=0", "pool must be an integer >= 1"),
        ("epsilon=0.1,pool=2.5", "pool='2.5'"),
        ("epsilon=0.1,temperature=2", "temperature does not apply to epsilon"),
        ("plackett-luce,epsilon=0.1", "epsilon does not apply to plackett-luce"),
        ("plackett-luce,temperature=0", "temperature must be"),
        ("plackett-luce,temperature=inf", "temperature must be"),
        ("none,pool=3", "pool does not apply to none"),
        ("epsilon=0.1,epsilon=0.2", "epsilon given twice"),
        ("pool=20", "no policy kind"),
        ("none,plackett-luce", "more than one policy kind"),
        ("epsilon=0.1,,pool=3", "empty part"),
        ("epsilon=0.1,size=3", "unknown parameter 'size'"),
    ],
)
def test_parse_errors_name_the_bad_part(text, named):
    with pytest.raises(ValueError) as info:
        ExplorationPolicy.parse(text)
    assert named in str(info.value)


def test_active_and_pool_size():
    assert not ExplorationPolicy.parse("none").active
    assert not ExplorationPolicy.parse("epsilon=0").active
    assert EPS.active and PL.active
    assert EPS.pool_size(30, 10) == 14 and EPS.pool_size(12, 10) == 12 and EPS.pool_size(10, 10) == 10
    assert EPS.pool_size(5, 10) == 5 and ExplorationPolicy.parse("epsilon=0,pool=4").pool_size(30, 10) == 10
    assert PL.pool_size(30, 10) == 13 and PL.pool_size(11, 10) == 11 and PL.pool_size(4, 10) == 4
    assert ExplorationPolicy.parse("none").pool_size(30, 10) == 10


def test_epsilon_marginals_by_hand():
    # n=3, k=2, eps=1/2, one explore item (rank 2). Position 0: explores w.p. 1/2, then shows rank 2.
    # Position 1: explores w.p. 1/2 and finds rank 2 unused w.p. P(position 0 did not explore) = 1/2.
    m = ExplorationPolicy.parse("epsilon=0.5,pool=1").marginals(3, 2)
    np.testing.assert_allclose(m, [[0.5, 0.0], [0.0, 0.75], [0.5, 0.25]])


@pytest.mark.parametrize("policy", [EPS, PL, ExplorationPolicy.parse("epsilon=0.9,pool=2")])
@pytest.mark.parametrize(("n", "k"), [(30, 10), (12, 10), (10, 10), (5, 10), (6, 3), (1, 1)])
def test_marginals_shape_and_sums(policy, n, k):
    m = policy.marginals(n, k)
    assert m.shape == (policy.pool_size(n, k), min(k, n))
    np.testing.assert_allclose(m.sum(axis=0), 1.0, atol=1e-12)
    tol = 5e-3 if policy.kind == "plackett-luce" else 1e-12  # PL: row sums carry the Monte Carlo error
    assert (m.sum(axis=1) <= 1.0 + tol).all() and (m >= 0).all()
    assert not m.flags.writeable
    # recomputable from the logged prefix alone
    np.testing.assert_array_equal(policy.marginals(policy.pool_size(n, k), k), m)


def test_none_and_epsilon_zero_are_the_greedy_identity():
    rng = np.random.default_rng(0)
    for policy in (ExplorationPolicy.parse("none"), ExplorationPolicy.parse("epsilon=0,pool=5")):
        np.testing.assert_array_equal(policy.marginals(8, 4), np.eye(4))
        ranks, props = policy.sample(8, 4, rng)
        assert ranks.tolist() == [0, 1, 2, 3] and props.tolist() == [1.0] * 4
        many, _ = policy.sample_many(8, 4, rng, 50)
        assert (many == np.arange(4)).all()


def test_epsilon_without_explore_items_is_greedy():
    for n in (10, 7):  # n == k, n < k
        m = EPS.marginals(n, 10)
        np.testing.assert_array_equal(m, np.eye(min(n, 10)))
        ranks, _ = EPS.sample(n, 10, np.random.default_rng(1))
        assert ranks.tolist() == list(range(min(n, 10)))


def test_epsilon_one_with_a_small_pool_fills_the_first_slots():
    # every slot explores; only two explore items: positions 0 and 1 take them, the rest stay greedy
    m = ExplorationPolicy.parse("epsilon=1,pool=2").marginals(6, 4)
    np.testing.assert_allclose(m[4:, :2], 0.5)
    np.testing.assert_allclose(np.diag(m[:4]), [0, 0, 1, 1])


def _empirical(ranks: np.ndarray, pool: int) -> np.ndarray:
    counts = np.zeros((pool, ranks.shape[1]))
    for j in range(ranks.shape[1]):
        counts[:, j] = np.bincount(ranks[:, j], minlength=pool)
    return counts / len(ranks)


@pytest.mark.parametrize(
    ("policy", "n", "k"),
    [(EPS, 9, 4), (ExplorationPolicy.parse("epsilon=0.6,pool=3"), 7, 5), (PL, 8, 4), (PL, 3, 4)],
)
def test_samples_follow_the_marginals(policy, n, k):
    m = policy.marginals(n, k)
    draws = 100_000
    ranks, props = policy.sample_many(n, k, np.random.default_rng(7), draws)
    assert ranks.shape == (draws, min(n, k))
    np.testing.assert_array_equal(props, m[ranks, np.arange(m.shape[1])])
    assert all(len(set(row)) == len(row) for row in ranks[:1000].tolist())  # no item twice in a slate
    freq = _empirical(ranks, m.shape[0])
    tol = 5.0 * np.sqrt(m * (1.0 - m) / draws) + 2e-4  # binomial error, plus Monte Carlo error of PL marginals
    assert (np.abs(freq - m) <= tol).all(), np.abs(freq - m).max()


@pytest.mark.parametrize("policy", [EPS, PL])
def test_single_sample_matches_marginals_and_its_propensities(policy):
    n, k, draws = 9, 4, 20_000
    m = policy.marginals(n, k)
    rng = np.random.default_rng(3)
    ranks = np.empty((draws, min(n, k)), dtype=np.int64)
    for d in range(draws):
        r, p = policy.sample(n, k, rng)
        np.testing.assert_array_equal(p, m[r, np.arange(len(r))])
        ranks[d] = r
    freq = _empirical(ranks, m.shape[0])
    assert (np.abs(freq - m) <= 5.0 * np.sqrt(m * (1.0 - m) / draws) + 2e-4).all()


def test_plackett_luce_marginals_are_floored_and_exact_at_the_top():
    policy = ExplorationPolicy.parse("plackett-luce,temperature=0.2,pool=10")
    m = policy.marginals(20, 5)
    assert m.min() >= PROPENSITY_FLOOR
    w = np.exp(-np.arange(15) / 0.2)
    np.testing.assert_allclose(m[:, 0], np.maximum(w / w.sum(), PROPENSITY_FLOOR), rtol=1e-4, atol=1e-7)
    hot = ExplorationPolicy.parse("plackett-luce,temperature=1e6,pool=2").marginals(6, 4)
    np.testing.assert_allclose(hot, 1.0 / 6.0, atol=3e-3)  # almost uniform over the 6 ranks
