"""The logged lists off-policy evaluation reads: from impression rows (as the event log gives them) and clicks to
aligned arrays, the logging marginals recomputed from each list's policy and pool, and the position bias."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsys.model.exploration import ExplorationPolicy
from recsys.training.ope.estimators import LoggedSlates, estimate
from recsys.training.ope.evaluate import logged_ctr, position_theta
from recsys.training.ope.logged import lists_from_rows
from recsys.training.ope.policy import PolicyScores

SPEC = "epsilon=0.5,pool=2"


def _rows(request_id, items, pool, spec=SPEC, degraded=False, variant="b"):
    policy = ExplorationPolicy.parse(spec)
    marginals = policy.marginals(max(len(pool), len(items)), len(items))
    return [{"request_id": request_id, "user_id": "u1", "variant": variant, "timestamp_ms": 1, "degraded": degraded,
             "item_id": item, "position": j, "exploration": spec, "pool_item_ids": pool,
             "propensity": float(marginals[pool.index(item), j]) if item in pool else 1.0}
            for j, item in enumerate(items)]


def test_lists_are_aligned_and_the_unusable_ones_counted():
    rows = (_rows("r1", ["a", "d"], ["a", "b", "c", "d"]) + _rows("r2", ["a", "b"], ["a", "b", "c", "d"])
            + _rows("r3", ["a", "b"], ["a", "b", "c", "d"], degraded=True) + _rows("r4", ["x", "y"], [])
            + _rows("r5", ["a", "z"], ["a", "b", "c", "d"]))
    logged = lists_from_rows(pd.DataFrame(rows), {("r1", "d"), ("r2", "a"), ("r9", "a")})
    assert logged.request_id == ["r1", "r2"]
    assert logged.skipped == {"degraded": 1, "no_pool": 1, "item_not_in_pool": 1, "other_variant": 0}
    assert logged.shown.tolist() == [[0, 3], [0, 1]]
    assert logged.clicks.tolist() == [[0.0, 1.0], [1.0, 0.0]]
    marginals = logged.marginals()
    assert marginals.shape == (2, 4, 2)
    assert np.allclose(marginals[0], ExplorationPolicy.parse(SPEC).marginals(4, 2))
    # the logged propensity of each shown item is the marginal of its pool rank at its position
    for r in range(2):
        for j in range(2):
            assert logged.propensity[r, j] == pytest.approx(marginals[r, logged.shown[r, j], j], rel=1e-5)
    assert logged_ctr(logged)["all"] == {"lists": 2, "ctr": 0.5}
    assert lists_from_rows(pd.DataFrame(rows), set(), variants=["control"]).skipped["other_variant"] == 5


def test_a_target_that_repeats_the_greedy_slate_is_estimated_near_the_logged_greedy_ctr():
    """Simulated epsilon-greedy logs with known relevance and examination: IPS / SNIPS / DR of the logging
    policy's greedy slate cover its true CTR, and the position bias fitted on the lists is about the truth."""
    rng = np.random.default_rng(3)
    policy = ExplorationPolicy.parse("epsilon=0.3,pool=4")
    n_items, k, n = 8, 4, 8_000
    relevance = np.linspace(0.6, 0.1, n_items)
    theta = 1.0 / np.sqrt(1.0 + np.arange(k))
    pool = [f"i{j}" for j in range(n_items)]
    ranks, props = policy.sample_many(n_items, k, rng, n)
    hit = rng.random((n, k)) < theta[None, :] * relevance[ranks]
    request = np.repeat([f"r{r:05d}" for r in range(n)], k)
    items = np.asarray(pool, dtype=object)[ranks.ravel()]
    rows = pd.DataFrame({"request_id": request, "user_id": "u", "variant": "b", "timestamp_ms": 0,
                         "degraded": False, "item_id": items, "position": np.tile(np.arange(k), n),
                         "exploration": policy.spec(), "pool_item_ids": [pool] * (n * k),
                         "propensity": props.ravel()})
    clicked = set(zip(request[hit.ravel()], items[hit.ravel()], strict=True))
    logged = lists_from_rows(rows, clicked)
    fitted, _ = position_theta(logged)
    assert np.allclose(fitted, theta, atol=0.08)
    greedy = np.tile(np.arange(k), (len(logged), 1))
    truth = float((theta * relevance[:k]).sum() / k)
    found = estimate(LoggedSlates(logged.marginals(), logged.shown, logged.clicks, fitted), greedy,
                     np.tile(relevance, (len(logged), 1)))
    for name in ("ips", "snips", "dr"):
        assert found[name].low - 0.01 <= truth <= found[name].high + 0.01, (name, found[name], truth)


def test_a_policy_shows_its_top_k_of_the_known_pool_items():
    scores = PolicyScores(score=np.array([[0.1, 0.9, -np.inf, 0.5]]), proba=np.zeros((1, 4)),
                          known=np.array([[True, True, False, True]]))
    assert scores.slates(2).tolist() == [[1, 3]]
    assert scores.slates(5).tolist() == [[1, 3, 0, -1, -1]]
