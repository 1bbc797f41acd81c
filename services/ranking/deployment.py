"""The Ray Serve deployment behind `recsys.v1.RankingService` (and `grpc.health.v1.Health/Check`).

Serve's gRPC proxy routes each RPC to the method of the same name: `Rank`, `ListModels`, `Check`. Errors
are reported through the `grpc_context` Serve passes in (`set_code` / `set_details`), so the caller sees
INVALID_ARGUMENT / FAILED_PRECONDITION / UNAVAILABLE with a message naming the field, never INTERNAL.

Models come from the registry: `user_config = {"versions": {"dcn": "...", "lightgbm": "..."}, "batching":
{...}}` is applied by `reconfigure`, which Serve calls in place on running replicas when only the user_config
changes, so switching versions drops no request (see `versions.ModelStore`). Concurrent requests are
scored together by `@serve.batch`: their input matrices are stacked and go through the model once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health_pb2
from ray import serve
from ray.serve.grpc_util import RayServegRPCContext

from recsys.common.errors import InvalidArgument, ServiceError
from recsys.common.feature_client import AsyncFeatureClient, FeatureCallError
from recsys.common.heap import refreeze_heap
from recsys.common.interceptors import REQUEST_ID_HEADER
from recsys.common.logs import configure_logging, request_id_var
from recsys.common.packed import extend_floats
from recsys.ranking import inputs, rankers
from recsys.ranking.metrics import RankingMetrics
from recsys.ranking.settings import MODELS, RankingSettings, canonical
from recsys.ranking.versions import ModelStore
from recsys.v1 import features_pb2, ranking_pb2

log = logging.getLogger("recsys.ranking")

DEPLOYMENT_NAME = "Ranker"


def _request_id(context: RayServegRPCContext | None) -> str:
    if context is None:
        return ""
    for key, value in context.invocation_metadata():
        if key == REQUEST_ID_HEADER:
            return str(value)[:128]
    return context.request_id() or ""


async def _fetched(field: str, call) -> features_pb2.FeatureMatrix:
    """The FeatureMatrix a feature-service call answers for the empty `field`; FAILED_PRECONDITION when
    fetching is off (RECSYS_RANKING_FETCH_FEATURES), UNAVAILABLE when the call fails."""
    try:
        return (await call).features
    except FeatureCallError as exc:
        raise exc.service_error(field) from exc


class RankingReplica:
    """One replica: the model store, the optional feature client, metrics and the batching queue."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = RankingSettings.from_dict(settings)
        configure_logging("ranking", self.settings.log_level)
        rankers.configure_threads(self.settings.torch_threads)
        self.models = ModelStore(self._load, self._list, cache_size=self.settings.version_cache)
        self.features = AsyncFeatureClient(self.settings.features_addr, self.settings.fetch_timeout_ms / 1000.0)
        self.metrics = RankingMetrics()
        # With batching, models run on one worker thread (torch and LightGBM release the GIL), so the event
        # loop keeps receiving requests during a model call and the next batch collects all that arrived
        # meanwhile. Without batching they run inline: no thread hand-off on the latency path.
        self._model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ranker")
        self.batching = self.settings.batching
        self._apply_batching(self.settings.batching, self.settings.max_batch, self.settings.batch_wait_ms)

    # -- models ---------------------------------------------------------------------------------------------
    def _load(self, name: str, version: str) -> rankers.Ranker:
        start = time.perf_counter()
        ranker = rankers.load_ranker(
            self.settings.models_dir, name, version,
            lgbm_threads=self.settings.lgbm_threads, compile_dir=self.settings.lgbm_compile_dir,
        )
        log.info("model loaded", extra={"model": name, "version": version, "ms": round(_ms(start), 1)})
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
            extra={"versions": active, "batching": self.batching, "ms": round(_ms(start), 1)},
        )

    # -- RPCs -----------------------------------------------------------------------------------------------
    async def Rank(
        self, request: ranking_pb2.RankRequest, grpc_context: RayServegRPCContext = None
    ) -> ranking_pb2.RankResponse:
        token = request_id_var.set(_request_id(grpc_context))
        start = time.perf_counter()
        model, version, code = canonical(request.model or self.settings.default_model), "", "OK"
        try:
            response = await self._rank(request)
            version = response.model_version
            return response
        except ServiceError as exc:
            code = exc.code.name
            return _fail(grpc_context, exc.code, exc.message)
        except Exception:
            code = grpc.StatusCode.INTERNAL.name
            log.exception("rank failed", extra={"model": model, "version": request.model_version})
            return _fail(grpc_context, grpc.StatusCode.INTERNAL, "internal error")
        finally:
            ms = _ms(start)
            self.metrics.request("Rank", model if model in MODELS else "unknown", version, code, ms)
            if code != "OK":
                details = grpc_context.details() if grpc_context is not None else ""
                log.warning("rank rejected", extra={"code": code, "details": details, "ms": round(ms, 3)})
            request_id_var.reset(token)

    async def _rank(self, request: ranking_pb2.RankRequest) -> ranking_pb2.RankResponse:
        name = canonical(request.model or self.settings.default_model)
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
        self.metrics.batch(ranker.name, 1, _ms(start))
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
            self.metrics.batch(ranker.name, len(members), _ms(start))
            offset = 0
            for i in members:
                n = len(jobs[i][1])
                out[i] = scores[offset : offset + n]
                offset += n
        return out  # type: ignore[return-value]

    async def ListModels(self, request: ranking_pb2.ListModelsRequest) -> ranking_pb2.ListModelsResponse:
        active = self.models.active_versions()
        models = [
            ranking_pb2.ModelInfo(name=name, active_version=active.get(name, ""), available_versions=self._list(name))
            for name in MODELS
        ]
        self.metrics.requests.inc(tags={"method": "ListModels", "model": "", "version": "", "code": "OK"})
        return ranking_pb2.ListModelsResponse(models=models)

    async def Check(self, request: health_pb2.HealthCheckRequest) -> health_pb2.HealthCheckResponse:
        """grpc.health.v1 through Serve's proxy: SERVING once a ranker version is active."""
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if self.models.active_versions()
            else (health_pb2.HealthCheckResponse.NOT_SERVING)
        )
        return health_pb2.HealthCheckResponse(status=status)


# Decorated apart from the class so that the class stays importable by name: Ray then pickles it by
# reference, and each replica imports this module instead of unpickling the class and its globals.
RankingDeployment = serve.deployment(name=DEPLOYMENT_NAME)(RankingReplica)


def _fail(context: RayServegRPCContext | None, code: grpc.StatusCode, details: str) -> ranking_pb2.RankResponse:
    if context is not None:
        context.set_code(code)
        context.set_details(details)
    return ranking_pb2.RankResponse()


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0
