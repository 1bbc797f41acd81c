"""The logic behind RankingService's RPCs: validation, model versions, feature fetching, inputs, scoring.

One `RankingService` lives in each replica (held by the Serve deployment in `recsys.ranking.server`, which
maps its errors to gRPC status codes). Models come from the registry: `reconfigure(user_config)` with
`{"versions": {"dcn": "...", "lightgbm": "..."}, "batching": {...}}` loads them first and then swaps them in
(see `versions.ModelStore`), so switching versions drops no request. With batching on, concurrent requests
are scored together by `@serve.batch` (an asyncio batching queue): their input matrices are stacked and go
through the model once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from ray import serve

from recsys.common.errors import InvalidArgument
from recsys.common.feature_client import AsyncFeatureClient, FeatureCallError
from recsys.common.heap import refreeze_heap
from recsys.common.packed import extend_floats
from recsys.ranking import inputs, rankers
from recsys.ranking.metrics import RankingMetrics
from recsys.ranking.settings import MODELS, RankingSettings, canonical
from recsys.ranking.versions import ModelStore
from recsys.v1 import features_pb2, ranking_pb2

log = logging.getLogger("recsys.ranking")


async def _fetched(field: str, call) -> features_pb2.FeatureMatrix:
    """The FeatureMatrix a feature-service call answers for the empty `field`; FAILED_PRECONDITION when
    fetching is off (RECSYS_RANKING_FETCH_FEATURES), UNAVAILABLE when the call fails."""
    try:
        return (await call).features
    except FeatureCallError as exc:
        raise exc.service_error(field) from exc


class RankingService:
    """One replica's rankers: the model store, the optional feature client and the batching queue.

    Errors are raised as `recsys.common.errors.ServiceError` (INVALID_ARGUMENT naming the field,
    FAILED_PRECONDITION, UNAVAILABLE); `metrics` gets the candidates, feature fetches and model time.
    """

    def __init__(self, settings: RankingSettings, metrics: RankingMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        rankers.configure_threads(settings.torch_threads)
        self.models = ModelStore(self._load, self._list, cache_size=settings.version_cache)
        self.features = AsyncFeatureClient(settings.features_addr, settings.fetch_timeout_ms / 1000.0)
        # With batching, models run on one worker thread (torch and LightGBM release the GIL), so the event
        # loop keeps receiving requests during a model call and the next batch collects all that arrived
        # meanwhile. Without batching they run inline: no thread hand-off on the latency path.
        self._model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ranker")
        self.batching = settings.batching
        self._apply_batching(settings.batching, settings.max_batch, settings.batch_wait_ms)

    # -- models ---------------------------------------------------------------------------------------------
    def _load(self, name: str, version: str) -> rankers.Ranker:
        start = time.perf_counter()
        ranker = rankers.load_ranker(
            self.settings.models_dir, name, version,
            lgbm_threads=self.settings.lgbm_threads, compile_dir=self.settings.lgbm_compile_dir,
        )
        log.info("model loaded", extra={"model": name, "version": version, "ms": round(ms_since(start), 1)})
        return ranker

    def _list(self, name: str) -> list[str]:
        return rankers.list_versions(self.settings.models_dir, name)

    def _apply_batching(self, enabled: bool, max_batch: int, wait_ms: float) -> None:
        self.batching = bool(enabled)
        self.max_batch = max(1, int(max_batch))
        self.batch_wait_ms = max(0.0, float(wait_ms))
        self._score_batch.set_max_batch_size(self.max_batch)
        self._score_batch.set_batch_wait_timeout_s(self.batch_wait_ms / 1000.0)

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Apply {"versions": {name: version}, "batching": {"enabled", "max_batch", "wait_ms"}} in place."""
        batching = user_config.get("batching") or {}
        if batching:
            self._apply_batching(
                batching.get("enabled", self.batching),
                batching.get("max_batch", self.max_batch),
                batching.get("wait_ms", self.batch_wait_ms),
            )
        start = time.perf_counter()
        active = await self.models.activate(dict(user_config.get("versions") or {}))
        refreeze_heap()  # the models now loaded out of the collector's full passes, the replaced ones freed
        log.info(
            "active versions",
            extra={"versions": active, "batching": self.batching, "ms": round(ms_since(start), 1)},
        )

    # -- RPC logic ------------------------------------------------------------------------------------------
    def model_of(self, request: ranking_pb2.RankRequest) -> str:
        """The ranker a request asks for (canonical name; the default when it names none), not yet checked."""
        return canonical(request.model or self.settings.default_model)

    async def rank(self, request: ranking_pb2.RankRequest) -> ranking_pb2.RankResponse:
        name = self.model_of(request)
        if name not in MODELS:
            raise InvalidArgument("model", f"unknown ranker {name!r}; one of {', '.join(MODELS)} (or empty)")
        candidates = inputs.check_candidates(request, self.settings.max_candidates)
        ranker = await self.models.get(name, request.model_version)
        if not candidates.item_ids:
            return ranking_pb2.RankResponse(model=name, model_version=ranker.version)
        self.metrics.candidates.observe(len(candidates.item_ids))
        user_matrix, item_matrix = await self._features(request, ranker, candidates.item_ids)
        user = inputs.user_row(user_matrix, ranker.user_features)
        items = inputs.item_rows(item_matrix, candidates.item_ids, ranker.item_features)
        model_input = ranker.inputs(user, items, candidates.retrieval_scores, request.context)
        if self.batching:
            scores = await self._score_batch((ranker, model_input))
        else:
            scores = self._score_one(ranker, model_input)
        response = ranking_pb2.RankResponse(model=name, model_version=ranker.version)
        extend_floats(response, "scores", scores)
        return response

    def list_models(self) -> ranking_pb2.ListModelsResponse:
        active = self.models.active_versions()
        models = [
            ranking_pb2.ModelInfo(name=name, active_version=active.get(name, ""), available_versions=self._list(name))
            for name in MODELS
        ]
        return ranking_pb2.ListModelsResponse(models=models)

    def serving(self) -> bool:
        """Ready to rank: a ranker version is active."""
        return bool(self.models.active_versions())

    # -- features and scoring -------------------------------------------------------------------------------
    async def _features(self, request: ranking_pb2.RankRequest, ranker: rankers.Ranker, item_ids: list[str]):
        """The request's feature matrices, fetching the empty ones from the feature service."""
        user, items = request.user_features, request.item_features
        fetch_user, fetch_items = inputs.is_empty(user), inputs.is_empty(items)
        if not (fetch_user or fetch_items):
            return user, items
        jobs = []
        if fetch_user:
            self.metrics.feature_fetches.inc(tags={"kind": "user"})
            jobs.append(_fetched("user_features", self.features.user(request.user_id, list(ranker.user_features))))
        if fetch_items:
            self.metrics.feature_fetches.inc(tags={"kind": "item"})
            jobs.append(_fetched("item_features", self.features.items(item_ids, list(ranker.item_features))))
        fetched = list(await asyncio.gather(*jobs))
        return (fetched.pop(0) if fetch_user else user), (fetched.pop(0) if fetch_items else items)

    async def _predict(self, ranker: rankers.Ranker, model_input: np.ndarray) -> np.ndarray:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._model_thread, ranker.predict, model_input)

    def _score_one(self, ranker: rankers.Ranker, model_input: np.ndarray) -> np.ndarray:
        start = time.perf_counter()
        scores = ranker.predict(model_input)
        self.metrics.batch(ranker.name, 1, ms_since(start))
        return scores

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.0)
    async def _score_batch(self, jobs: list[tuple[rankers.Ranker, np.ndarray]]) -> list[np.ndarray]:
        """Score the queued requests together: one model call per distinct (ranker, version) in the batch."""
        out: list[np.ndarray | None] = [None] * len(jobs)
        groups: dict[int, list[int]] = {}
        for i, (ranker, _) in enumerate(jobs):
            groups.setdefault(id(ranker), []).append(i)
        for members in groups.values():
            ranker = jobs[members[0]][0]
            start = time.perf_counter()
            stacked = np.concatenate([jobs[i][1] for i in members]) if len(members) > 1 else jobs[members[0]][1]
            scores = await self._predict(ranker, stacked)
            self.metrics.batch(ranker.name, len(members), ms_since(start))
            offset = 0
            for i in members:
                n = len(jobs[i][1])
                out[i] = scores[offset : offset + n]
                offset += n
        return out  # type: ignore[return-value]


def ms_since(start: float) -> float:
    """Milliseconds since `start` (a time.perf_counter() reading)."""
    return (time.perf_counter() - start) * 1000.0
