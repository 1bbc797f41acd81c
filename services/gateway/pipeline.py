"""One Recommend: user features → candidates → item features → ranking → re-rank, within the budget.

Every hop runs with a deadline derived from what is left of the request budget; a failed or late hop
degrades the answer (batch list, popular items, unranked candidates) and is named in the response.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import numpy as np

from recsys.common.feature_client import FeatureClient
from recsys.gateway import fresh
from recsys.gateway.admission import Admission, overloaded
from recsys.gateway.budget import Budget
from recsys.gateway.experiments import Experiment, Variant
from recsys.gateway.fallbacks import BatchLists, PopularItems
from recsys.gateway.hops import Backends, HopResult, call_hop, feature_hop
from recsys.gateway.items import LiveCatalog
from recsys.gateway.rerank import FilterSpec, Scored, rerank
from recsys.gateway.settings import GatewaySettings
from recsys.model.spec import HISTORY_LEN
from recsys.v1 import candidates_pb2, features_pb2, ranking_pb2, recommend_pb2

# Per-hop caps (ms); the effective deadline is the smaller of the cap and what the budget has left.
HOP_CAP_MS = {"user_features": 15.0, "retrieve": 35.0, "item_features": 25.0, "rank": 35.0}
RECENT_ITEMS_LIMIT = HISTORY_LEN  # the whole stored history: every item the user saw is excluded


@dataclass
class Outcome:
    """The gateway's answer plus what the event publishers need."""

    response: recommend_pb2.RecommendResponse
    variant: Variant
    item_features: features_pb2.FeatureMatrix | None = None
    ranked_scores: dict[str, float] = field(default_factory=dict)
    #: The ranked pool the served list was drawn from (best first) and the policy that drew it.
    pool_item_ids: list[str] = field(default_factory=list)
    exploration: str = "none"


class Recommender:
    """The orchestration; stateless per request, safe to call from many threads."""

    def __init__(
        self,
        settings: GatewaySettings,
        backends: Backends,
        experiment: Experiment,
        popular: PopularItems,
        batch: BatchLists,
        admission: Admission | None = None,
        live: LiveCatalog | None = None,
    ) -> None:
        self.settings = settings
        self.admission = admission or Admission(0, 0.0)
        self.backends = backends
        self.features = FeatureClient.wrap(backends.features)
        self.experiment = experiment
        self.popular = popular
        self.batch = batch
        #: catalogue changes since the model: removed items (never served) and the genres of upserted items
        self.live = live or LiveCatalog(popular.genres)
        self._rng = np.random.default_rng()  # exploration draws (the bit generator locks per call)

    def recommend(
        self,
        user_id: str,
        k: int,
        filters: FilterSpec,
        context: dict[str, str],
        caller_remaining_s: float | None = None,
        request_id: str | None = None,
    ) -> Outcome:
        s = self.settings
        budget = Budget(s.budget_ms, s.rerank_reserve_ms, caller_remaining_s)
        request_id = request_id or uuid.uuid4().hex
        variant = self.experiment.assign(user_id)
        md = (("x-request-id", request_id),)
        timings: list[HopResult] = []
        reasons: list[str] = []

        def note(hop: HopResult) -> HopResult:
            timings.append(hop)
            if not hop.ok:
                reasons.append(f"{hop.name}: {hop.status}")
            return hop

        fresh_slots = fresh.slots(variant, k, self.settings, self.live)
        with self.admission.slot(budget.hop_timeout()) as ticket:
            if ticket is not None:
                ranked, item_matrix, model, version, seen = self._full_path(
                    user_id, filters, variant, context, budget, md, note, reasons, fresh_slots > 0
                )
                if overloaded(reasons):
                    ticket.fail()
            else:  # every full-path slot busy: answer from the fallbacks at once, costing the backends nothing
                reasons.append("gateway: overloaded")
                ranked = self._fallback_candidates(user_id, variant)
                if fresh_slots:
                    ranked = ranked + fresh.candidates(self.live, self.settings, filters, frozenset())
                item_matrix, model, version, seen = None, "", "", frozenset()

        top = self._top(ranked, k, filters, seen)
        pool, policy = top, variant.policy
        if policy.active:  # the explore pool: the next best admitted items after the top k
            pool = top + self._top(ranked, policy.pool, filters, seen | {item.item_id for item in top})
        ranks, propensities = policy.sample(len(pool), len(top), self._rng)
        shown = [pool[r] for r in ranks]
        if fresh_slots:  # after the exploration draw, so that it never takes a reserved slot away
            kept = fresh.reserve(shown, ranked, fresh_slots, k)
            if kept is not shown:
                drawn = {item.item_id: p for item, p in zip(shown, propensities, strict=True)}
                shown, propensities = kept, [drawn.get(item.item_id, 1.0) for item in kept]  # a reserved slot: 1
        response = recommend_pb2.RecommendResponse(
            request_id=request_id,
            variant=variant.name,
            degraded=bool(reasons),
            degraded_reasons=reasons,
            timings=[t.timing() for t in timings],
            model=model,
            model_version=version,
            items=[
                recommend_pb2.RecommendedItem(item_id=item.item_id, score=item.score, position=i, source=item.source,
                                              propensity=float(p))
                for i, (item, p) in enumerate(zip(shown, propensities, strict=True))
            ],
        )
        response.timings.append(recommend_pb2.HopTiming(hop="total", ms=budget.elapsed_ms(), status="ok"))
        scores = {item.item_id: item.score for item in ranked}
        logged_pool = [item.item_id for item in pool[:policy.pool_size(len(pool), len(top))]]
        return Outcome(response, variant, item_matrix, scores, logged_pool, policy.spec())

    def similar(
        self,
        item_id: str,
        k: int,
        filters: FilterSpec,
        user_id: str = "",
        context: dict[str, str] | None = None,
        caller_remaining_s: float | None = None,
        request_id: str | None = None,
    ) -> recommend_pb2.RecommendResponse:
        """Items like `item_id`: its nearest neighbours by item embedding (the candidate service), filtered and,
        for a user, ranked by the user's variant's ranker; an unknown item (or the index down) falls back to the
        popular items of its genres, else everyone's. Same budget, hops and degradation as Recommend."""
        s = self.settings
        budget = Budget(s.budget_ms, s.rerank_reserve_ms, caller_remaining_s)
        request_id = request_id or uuid.uuid4().hex
        variant = self.experiment.assign(user_id or item_id)
        md = (("x-request-id", request_id),)
        timings: list[HopResult] = []
        reasons: list[str] = []

        def note(hop: HopResult) -> HopResult:
            timings.append(hop)
            if not hop.ok and hop.status != "NOT_FOUND":
                reasons.append(f"{hop.name}: {hop.status}")
            return hop

        model = version = ""
        with self.admission.slot(budget.hop_timeout()) as ticket:
            admitted = ticket is not None
            neighbours = None
            if admitted:
                near = note(call_hop(
                    "similar", self.backends.candidates.SimilarItems,
                    candidates_pb2.SimilarItemsRequest(item_id=item_id, k=self._retrieval_k(variant),
                                                       filter=self._index_filter(filters)),
                    budget.hop_timeout(HOP_CAP_MS["retrieve"]), md,
                ))
                if near.ok:
                    neighbours = [Scored(c.item_id, c.score, c.source) for c in near.value.candidates]
            else:
                reasons.append("gateway: overloaded")
            if neighbours is None:  # unknown item, or no index: the popular items of its genres, else everyone's
                genres = self.live.genres.get(item_id, frozenset())
                pool = self.popular.top(self._retrieval_k(variant) * 4 + len(self.live.removed))
                neighbours = [c for c in pool if self.live.genres.get(c.item_id, frozenset()) & genres] or pool
            if admitted and user_id and neighbours:
                user = note(feature_hop(
                    "user_features", self.features.user, user_id, recent_limit=0,
                    timeout_s=budget.hop_timeout(HOP_CAP_MS["user_features"]), metadata=md,
                ))
                user_features = user.value.features if user.ok else features_pb2.FeatureMatrix()
                neighbours, _, model, version = self._rank(
                    user_id, neighbours, user_features, variant, context or {}, budget, md, note)
            if admitted and overloaded(reasons):
                ticket.fail()
        top = self._top(neighbours, k, filters, frozenset({item_id}))
        response = recommend_pb2.RecommendResponse(
            request_id=request_id, variant=variant.name, degraded=bool(reasons), degraded_reasons=reasons,
            timings=[t.timing() for t in timings], model=model, model_version=version,
            items=[recommend_pb2.RecommendedItem(item_id=c.item_id, score=c.score, position=i, source=c.source,
                                                 propensity=1.0) for i, c in enumerate(top)],
        )
        response.timings.append(recommend_pb2.HopTiming(hop="total", ms=budget.elapsed_ms(), status="ok"))
        return response

    def vocabulary(self) -> frozenset[str]:
        """Genres a filter may name: the model's catalogue's and those of items upserted since."""
        return self.popular.vocabulary | self.live.vocabulary

    def _top(self, ranked: list[Scored], k: int, filters: FilterSpec, seen: frozenset[str]) -> list[Scored]:
        """The re-ranked top k, topped up from popularity so a valid request gets k when the catalogue has them;
        removed items never pass, whatever source brought them."""
        live = self.live
        genres_of, removed = live.genres, live.removed
        top = rerank(ranked, k, genres_of, filters, self.settings.genre_cap, seen, removed)
        if len(top) < k:
            extra = k + len(seen) + len(filters.exclude_item_ids) + 3 * k + len(removed)
            top = rerank(top + self.popular.top(extra), k, genres_of, filters, 1.0, seen, removed)
        return top

    def _index_filter(self, filters: FilterSpec, exclude_ids: frozenset[str] = frozenset()):
        """The filter as the candidate service can apply it. Its index knows the model's genres only: a genre that
        came with an upserted item is filtered here (an include list naming one asks the index for everything; the
        re-rank keeps what passes)."""
        known = self.popular.vocabulary
        return candidates_pb2.ItemFilter(
            include_genres=sorted(filters.include_genres) if filters.include_genres <= known else [],
            exclude_genres=sorted(filters.exclude_genres & known),
            exclude_item_ids=sorted(exclude_ids),
        )

    def _retrieval_k(self, variant: Variant) -> int:
        return variant.retrieval_k or self.settings.retrieval_k

    def _fallback_candidates(self, user_id: str, variant: Variant) -> list[Scored]:
        """Candidates without the candidate service: the user's batch list, else the popular items."""
        return self.batch.for_user(user_id) or self.popular.top(self._retrieval_k(variant))

    def _full_path(self, user_id, filters, variant, context, budget, md, note, reasons, with_fresh=False):
        """User context, candidates, item features and ranking; (ranked, item matrix, model, version, seen)."""
        # Stage 1: the user's context, features and recent items, in one call.
        user = note(feature_hop(
            "user_features", self.features.user, user_id, recent_limit=RECENT_ITEMS_LIMIT,
            timeout_s=budget.hop_timeout(HOP_CAP_MS["user_features"]), metadata=md,
        ))
        user_features = user.value.features if user.ok else features_pb2.FeatureMatrix()
        recent_ids = list(user.value.recent_item_ids) if user.ok else []
        seen = frozenset(recent_ids)

        # Stage 2: candidates (ANN in Milvus), excluding what the user saw and what the caller excluded.
        retrieval_k = self._retrieval_k(variant)
        cand_filter = self._index_filter(filters, filters.exclude_item_ids | seen)
        retrieve = note(call_hop(
            "retrieve", self.backends.candidates.Retrieve,
            candidates_pb2.RetrieveRequest(
                user_id=user_id, k=retrieval_k, filter=cand_filter,
                # Without the user's context (its hop failed) the candidate service fetches it itself, so what
                # the user saw is still excluded.
                recent_item_ids=recent_ids,
                user_features=user_features,
            ),
            budget.hop_timeout(HOP_CAP_MS["retrieve"]), md,
        ))
        if retrieve.ok and retrieve.value.candidates:
            if retrieve.value.degraded:
                reasons.append(f"candidates: {retrieve.value.degraded_reason or 'degraded'}")
            candidates = [Scored(c.item_id, c.score, c.source) for c in retrieve.value.candidates]
        else:
            candidates = self._fallback_candidates(user_id, variant)
            if retrieve.ok:
                reasons.append("candidates: empty")
        if with_fresh:  # new items compete for their reserved slots by the same ranker's score
            new = fresh.candidates(self.live, self.settings, filters, seen)
            candidates = fresh.merge(candidates, new)

        # Stage 3 + 4: item features, then the ranker of this variant.
        ranked, item_matrix, model, version = self._rank(
            user_id, candidates, user_features, variant, context, budget, md, note
        )
        return ranked, item_matrix, model, version, seen

    def _rank(self, user_id, candidates, user_features, variant, context, budget, md, note):
        """Scores candidates with the variant's ranker; on any failure keeps the retrieval order."""
        ids = [c.item_id for c in candidates]
        items = note(feature_hop(
            "item_features", self.features.items, ids,
            timeout_s=budget.hop_timeout(HOP_CAP_MS["item_features"]), metadata=md,
        ))
        if not items.ok:
            return candidates, None, "", ""
        matrix = items.value.features
        rank = note(call_hop(
            "rank", self.backends.ranking.Rank,
            ranking_pb2.RankRequest(
                user_id=user_id, item_ids=ids, user_features=user_features, item_features=matrix,
                retrieval_scores=[c.score for c in candidates],
                context=context, model=variant.ranker, model_version=variant.model_version,
            ),
            budget.hop_timeout(HOP_CAP_MS["rank"]), md + self.backends.ranking_metadata,
        ))
        if not rank.ok or len(rank.value.scores) != len(candidates):
            return candidates, matrix, "", ""
        ranked = [Scored(c.item_id, score, c.source) for c, score in zip(candidates, rank.value.scores, strict=True)]
        return ranked, matrix, rank.value.model, rank.value.model_version
