"""Slate OPE estimators: a case by hand, unbiasedness and coverage by simulation, support and edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from recsys.model.exploration import ExplorationPolicy
from recsys.training.ope.estimators import (
    LoggedSlates,
    estimate,
    expected_ctr,
    expected_ctr_logging,
    policy_marginals,
    widen,
)

Z95 = 1.959963984540054


def test_hand_computed_case():
    # epsilon=0.5 with one explore item, n=3, k=2: marginals [[.5, 0], [0, .75], [.5, .25]]; theta = [1, .5]
    # rho = pi @ theta = [.5, .375, .625]. Target shows item 1 at 0 and item 2 at 1:
    # w(item 1) = 1 / .375 = 8/3, w(item 2) = .5 / .625 = .8, w(item 0) = 0.
    marginals = ExplorationPolicy.parse("epsilon=0.5,pool=1").marginals(3, 2)
    logged = LoggedSlates(marginals, shown=[[2, 1], [0, 1]], clicks=[[1, 0], [0, 1]], theta=[1.0, 0.5])
    target = np.array([[1, 2], [1, 2]])
    out = estimate(logged, target, reward=np.array([0.2, 0.4, 0.6]))

    # IPS: Y = [1 * .8, 1 * 8/3]; CTR = (.8 + 8/3) / 4 slots = 13/15; se = |Y1 - Y2| / 4 = 7/15
    ips = out["ips"]
    assert ips.ctr == pytest.approx(13 / 15) and ips.se == pytest.approx(7 / 15)
    assert (ips.low, ips.high) == pytest.approx((13 / 15 - Z95 * 7 / 15, 13 / 15 + Z95 * 7 / 15))
    assert ips.n == 2 and ips.support == 1.0
    # S = [1 * .8 + .5 * 8/3, .5 * 8/3] = [32/15, 20/15]; ESS = (52/15)^2 / ((32^2 + 20^2) / 15^2) = 2704 / 1424
    assert ips.ess == pytest.approx(2704 / 1424)

    # SNIPS: sum Y / sum S = (52/15) / (52/15) = 1; Theta_r = 1.5, so CTR = 1 * 3 / 4 = .75;
    # residuals Y - S = [-20/15, 20/15]: se = sqrt(2 * var) / sum S * 3/4 = (40/15) / (52/15) * .75 = 15/26
    assert out["snips"].ctr == pytest.approx(0.75) and out["snips"].se == pytest.approx(15 / 26)

    # DR with q = [.2, .4, .6]: model part 1 * .4 + .5 * .6 = .7;
    # request 1: (1 - .6) * .8 + (0 - .5 * .4) * 8/3 = .32 - 8/15; request 2: (1 - .5 * .4) * 8/3 = 32/15
    y = np.array([0.7 + 0.32 - 8 / 15, 0.7 + 32 / 15])
    assert out["dr"].ctr == pytest.approx(y.sum() / 4) and out["dr"].se == pytest.approx(abs(y[0] - y[1]) / 4)
    assert set(out["dr"].to_dict()) == {"ctr", "se", "low", "high", "n", "ess", "support"}


def test_no_reward_model_no_dr_and_shared_or_per_request_marginals_agree():
    policy = ExplorationPolicy.parse("epsilon=0.5,pool=1")
    kwargs = dict(shown=[[2, 1], [0, 1]], clicks=[[1, 0], [0, 1]], theta=[1.0, 0.5])
    shared = estimate(LoggedSlates(policy_marginals(policy, 3, 2), **kwargs), np.array([[1, 2], [1, 2]]))
    per_request = estimate(LoggedSlates(policy_marginals(policy, [3, 3], 2), **kwargs), np.array([[1, 2], [1, 2]]))
    assert set(shared) == {"ips", "snips"}
    for name in shared:
        assert per_request[name].ctr == pytest.approx(shared[name].ctr, rel=1e-6)
        assert per_request[name].se == pytest.approx(shared[name].se, rel=1e-6)


def test_policy_marginals_pads_requests_of_different_pool_sizes():
    policy = ExplorationPolicy.parse("epsilon=0.2,pool=3")
    m = policy_marginals(policy, np.array([6, 4, 2]), 2)
    assert m.shape == (3, 5, 2) and m.dtype == np.float32
    np.testing.assert_allclose(m[0], policy.marginals(6, 2), rtol=1e-6)
    np.testing.assert_allclose(m[1, :4], policy.marginals(4, 2), rtol=1e-6)
    assert (m[1, 4:] == 0).all() and (m[2, 2:] == 0).all()
    np.testing.assert_array_equal(m[2, :2], np.eye(2))


def test_target_equal_to_greedy_logging_is_the_on_policy_ctr():
    rng = np.random.default_rng(5)
    n_req, k = 500, 4
    theta = 1.0 / np.sqrt(1.0 + np.arange(k))
    relevance = rng.uniform(0.05, 0.6, size=(n_req, k))
    clicks = (rng.random((n_req, k)) < relevance * theta).astype(float)
    shown = np.tile(np.arange(k), (n_req, 1))
    logged = LoggedSlates(ExplorationPolicy.parse("none").marginals(k, k), shown, clicks, theta)
    out = estimate(logged, shown, reward=relevance)
    per_request = clicks.sum(axis=1)
    naive_se = per_request.std(ddof=1) / math.sqrt(n_req) / k
    for name in ("ips", "snips", "dr"):
        assert out[name].ctr == pytest.approx(clicks.mean())
        assert out[name].support == 1.0 and out[name].ess == pytest.approx(n_req)
    assert out["ips"].se == pytest.approx(naive_se) and out["snips"].se == pytest.approx(naive_se)


def test_unsupported_target_items_weigh_nothing():
    # no exploration, pool of 3 with item 2 never shown; the target puts item 2 first and item 0 second
    marginals = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    logged = LoggedSlates(marginals, shown=[[0, 1], [0, 1]], clicks=[[1, 0], [0, 1]], theta=[1.0, 0.5])
    out = estimate(logged, np.array([[2, 0], [2, 0]]), reward=np.full(3, 0.3))
    # only item 0 has support: w = theta_1 / rho_0 = .5; IPS Y = [.5, 0] over 4 target slots
    assert out["ips"].ctr == pytest.approx(0.125) and out["ips"].support == 0.5
    # SNIPS: S = [.5, .5], Theta_r = .5 (the supported slot): (.5 / 1) * (1 / 4) = .125
    assert out["snips"].ctr == pytest.approx(0.125)
    # DR keeps the model's term for the unsupported slot: .3 + .5 * .3 = .45, plus [(1 - .3) * .5, (0 - .3) * .5]
    assert out["dr"].ctr == pytest.approx((0.45 * 2 + 0.35 - 0.15) / 4)


def test_nothing_supported_gives_zero_ips_and_no_snips():
    logged = LoggedSlates(np.array([[1.0], [0.0]]), shown=[[0], [0]], clicks=[[1], [0]], theta=[1.0])
    out = estimate(logged, np.array([[1], [1]]))
    assert out["ips"].ctr == 0.0 and out["ips"].support == 0.0 and out["ips"].ess == 0.0
    assert math.isnan(out["snips"].ctr)


@pytest.mark.parametrize(
    ("kwargs", "target", "message"),
    [
        (dict(shown=[[0, 1]], clicks=[[0, 0, 0]]), [[0, 1]], "shown and clicks"),
        (dict(shown=[[0, 5]], clicks=[[0, 0]]), [[0, 1]], "shown pool indexes"),
        (dict(shown=[[0, 1]], clicks=[[0, 0]], theta=[1.0, 0.0]), [[0, 1]], "theta must be"),
        (dict(shown=[[0, 1]], clicks=[[0, 0]]), [[1, 1]], "same pool item twice"),
        (dict(shown=[[0, 1]], clicks=[[0, 0]]), [[0, 3]], "target pool indexes"),
        (dict(shown=[[0, 1]], clicks=[[0, 0]]), [[0, 1, 2]], "target must be"),
    ],
)
def test_invalid_inputs(kwargs, target, message):
    args = {"marginals": np.eye(3)[:, :2], "theta": [1.0, 0.5], **kwargs}
    with pytest.raises(ValueError, match=message):
        estimate(LoggedSlates(**args), np.array(target))


def test_widen_adds_an_independent_error_in_quadrature():
    logged = LoggedSlates(np.eye(2), shown=[[0, 1], [0, 1]], clicks=[[1, 0], [0, 0]], theta=[1.0, 0.5])
    est = estimate(logged, np.array([[0, 1], [0, 1]]))["ips"]
    wide = widen(est, 0.75 * est.se)
    assert wide.ctr == est.ctr and wide.se == pytest.approx(1.25 * est.se)
    assert (wide.low, wide.high) == pytest.approx((est.ctr - Z95 * wide.se, est.ctr + Z95 * wide.se))


def test_expected_ctr_helpers():
    relevance = np.array([[0.5, 0.2, 0.1], [0.4, 0.3, 0.2]])
    theta = np.array([1.0, 0.5])
    assert expected_ctr(relevance, theta, np.array([[0, 1], [2, -1]])) == pytest.approx((0.5 + 0.1 + 0.2) / 3)
    marginals = ExplorationPolicy.parse("epsilon=0.5,pool=1").marginals(3, 2)
    by_hand = sum(relevance[:, i] * marginals[i, j] * theta[j] for i in range(3) for j in range(2)).sum() / 4
    assert expected_ctr_logging(relevance, theta, marginals) == pytest.approx(by_hand)
    per_request = np.broadcast_to(marginals, (2, 3, 2))
    assert expected_ctr_logging(relevance, theta, per_request) == pytest.approx(by_hand)


# --- simulation: the epsilon policy logs, the estimators are unbiased and their intervals cover -----------------

N_POOL, K = 8, 3
POLICY = ExplorationPolicy.parse("epsilon=0.3,pool=5")
THETA = np.array([1.0, 0.6, 0.4])
BASE = np.array([0.5, 0.4, 0.3, 0.2, 0.6, 0.1, 0.35, 0.25])  # mean relevance of each pool rank


def _simulate(target_row: list[int], reps: int = 300, requests: int = 400, seed: int = 11):
    """Per repetition: estimates with no reward model, a wrong constant one, and the true relevance."""
    rng = np.random.default_rng(seed)
    marginals = POLICY.marginals(N_POOL, K)
    target = np.tile(target_row, (requests, 1))
    truth = float((THETA * BASE[target_row]).sum() / K)  # population CTR (relevance noise has mean 0)
    rows = []
    for _ in range(reps):
        relevance = BASE + rng.uniform(-0.1, 0.1, size=(requests, N_POOL))
        shown, _ = POLICY.sample_many(N_POOL, K, rng, requests)
        p = THETA * np.take_along_axis(relevance, shown, axis=1)
        clicks = (rng.random((requests, K)) < p).astype(float)
        logged = LoggedSlates(marginals, shown, clicks, THETA)
        plain = estimate(logged, target, reward=np.full(N_POOL, 0.3))
        exact = estimate(logged, target, reward=relevance)
        rows.append({"ips": plain["ips"], "snips": plain["snips"], "dr": plain["dr"], "dr_true": exact["dr"]})
    return truth, rows


@pytest.mark.parametrize("target_row", [[4, 0, 6], [0, 1, 2], [2, 7, 1]])
def test_estimators_are_unbiased_and_cover(target_row):
    truth, rows = _simulate(target_row)
    reps = len(rows)
    for name in ("ips", "snips", "dr", "dr_true"):
        values = np.array([r[name].ctr for r in rows])
        se_of_mean = values.std(ddof=1) / math.sqrt(reps)
        assert abs(values.mean() - truth) < 4.0 * se_of_mean + 1e-12, (name, values.mean(), truth)
        coverage = np.mean([r[name].low <= truth <= r[name].high for r in rows])
        assert coverage >= 0.9, (name, coverage)
        # the reported standard error matches the spread over repetitions
        assert np.mean([r[name].se for r in rows]) == pytest.approx(values.std(ddof=1), rel=0.15), name
    ips_var = np.var([r["ips"].ctr for r in rows])
    assert np.var([r["dr_true"].ctr for r in rows]) < ips_var
    assert np.mean([r["dr_true"].se for r in rows]) < np.mean([r["ips"].se for r in rows])
