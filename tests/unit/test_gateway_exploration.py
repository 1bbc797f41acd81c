"""Exploration in the gateway: which variants explore, and that each served item carries the propensity the
policy gives it, and the impression the pool it was drawn from."""

from __future__ import annotations

from types import SimpleNamespace

import grpc
import numpy as np
import pytest

from recsys.common.config import ConfigError
from recsys.gateway.experiments import Experiment, Variant
from recsys.gateway.fallbacks import BatchLists, PopularItems
from recsys.gateway.pipeline import Recommender
from recsys.gateway.rerank import FilterSpec
from recsys.gateway.settings import GatewaySettings
from recsys.model.exploration import ExplorationPolicy


def test_the_control_does_not_explore_unless_it_says_so():
    exp = Experiment.from_json('{"variants": [{"name": "control", "share": 0.5}, {"name": "b", "share": 0.3}, '
                               '{"name": "c", "share": 0.2, "exploration": "none"}]}', "epsilon=0.2,pool=10")
    control, b, c = exp.variants
    assert not control.policy.active and c.policy.spec() == "none"
    assert b.policy == ExplorationPolicy.parse("epsilon=0.2,pool=10")
    own = Experiment.from_json('{"variants": [{"name": "control", "share": 1, "exploration": "epsilon=0.05"}]}',
                               "epsilon=0.2")
    assert own.control.policy.epsilon == 0.05


def test_an_invalid_exploration_is_a_config_error_naming_the_variant():
    with pytest.raises(ConfigError, match="variant b"):
        Experiment.from_json('{"variants": [{"name": "control", "share": 0.5}, {"name": "b", "share": 0.5, '
                             '"exploration": "epsilon=2"}]}')


@pytest.fixture
def recommender(monkeypatch):
    """A gateway whose backends all fail: answers come from 60 popular items, ranked by popularity."""

    class Late(grpc.RpcError):
        def code(self):
            return grpc.StatusCode.DEADLINE_EXCEEDED

    class Failing:
        def __call__(self, request, timeout, metadata):
            raise Late()

        def future(self, request, timeout, metadata):
            raise Late()

    def make(spec: str) -> Recommender:
        backends = SimpleNamespace(features=SimpleNamespace(GetUserFeatures=Failing(), GetItemFeatures=Failing()),
                                   candidates=SimpleNamespace(Retrieve=Failing()),
                                   ranking=SimpleNamespace(Rank=Failing()), ranking_metadata=())
        popular = PopularItems([(f"i{j:02d}", 100.0 - j) for j in range(60)], {})
        exp = Experiment([Variant("control", 1.0, exploration=spec)], "s")
        return Recommender(GatewaySettings.from_env(), backends, exp, popular, BatchLists({}))

    monkeypatch.setenv("RECSYS_GATEWAY_BUDGET_MS", "1000")
    return make


def test_served_items_carry_the_policy_propensities_and_the_pool_is_logged(recommender):
    rec = recommender("epsilon=0.3,pool=20")
    policy = ExplorationPolicy.parse("epsilon=0.3,pool=20")
    marginals = policy.marginals(30, 10)
    explored = 0
    for _ in range(200):
        outcome = rec.recommend("u1", 10, FilterSpec(), {})
        pool = outcome.pool_item_ids
        assert len(pool) == 30 and pool[:10] == [f"i{j:02d}" for j in range(10)]
        assert outcome.exploration == policy.spec()
        for item in outcome.response.items:
            rank = pool.index(item.item_id)
            assert item.propensity == pytest.approx(marginals[rank, item.position], rel=1e-6)
            explored += rank >= 10
    assert 0.2 < explored / 2000 < 0.4  # about epsilon of the slots show an explore item


def test_without_exploration_the_top_k_is_served_with_certainty(recommender):
    outcome = recommender("none").recommend("u1", 10, FilterSpec(), {})
    assert [i.item_id for i in outcome.response.items] == [f"i{j:02d}" for j in range(10)]
    assert all(i.propensity == 1.0 for i in outcome.response.items)
    assert outcome.pool_item_ids == [f"i{j:02d}" for j in range(10)] and outcome.exploration == "none"
    assert np.allclose(ExplorationPolicy.parse("none").marginals(10, 10), np.eye(10))
