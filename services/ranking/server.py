"""The gRPC surface of the ranking service: the Ray Serve deployment behind `recsys.v1.RankingService` (and
`grpc.health.v1.Health/Check`), and the Serve application built from it (logic in `recsys.ranking.service`).

Serve's gRPC proxy routes each RPC to the deployment method of the same name: `Rank`, `ListModels`, `Check`.
Errors are reported through the `grpc_context` Serve passes in (`set_code` / `set_details`), so the caller
sees INVALID_ARGUMENT / FAILED_PRECONDITION / UNAVAILABLE with a message naming the field, never INTERNAL.
`reconfigure(user_config)`, which Serve calls in place on running replicas when only the user_config changes,
switches model versions and batching.

Two ways to build the application:
- `build(settings, versions, code_version)`: used by `recsys ranking serve` (`runtime.RankingRuntime`), which
  deploys imperatively and switches versions by redeploying with a new `user_config` and the same
  `code_version`, so Serve reconfigures the running replicas in place instead of replacing them.
- `app_builder(args)`: a Serve application builder for the declarative path, e.g. a KubeRay RayService
  `serveConfigV2` with `import_path: recsys.ranking.server:app_builder`; there a version switch is an edit of
  `deployments[name=Ranker].user_config`, which Serve also applies in place.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import grpc
from grpc_health.v1 import health_pb2
from ray import serve
from ray.serve import Application
from ray.serve.grpc_util import RayServegRPCContext

from recsys.common.errors import CliError, ServiceError
from recsys.common.interceptors import REQUEST_ID_HEADER
from recsys.common.logs import configure_logging, request_id_var
from recsys.ranking import rankers
from recsys.ranking.metrics import RankingMetrics
from recsys.ranking.service import RankingService, ms_since
from recsys.ranking.settings import MODELS, RankingSettings, parse_versions
from recsys.v1 import ranking_pb2

log = logging.getLogger("recsys.ranking")

DEPLOYMENT_NAME = "Ranker"


def _request_id(context: RayServegRPCContext | None) -> str:
    if context is None:
        return ""
    for key, value in context.invocation_metadata():
        if key == REQUEST_ID_HEADER:
            return str(value)[:128]
    return context.request_id() or ""


class RankingReplica:
    """One replica: one method per RPC over the replica's `RankingService`, request ids and metrics."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = RankingSettings.from_dict(settings)
        configure_logging("ranking", self.settings.log_level)
        self.metrics = RankingMetrics()
        self.service = RankingService(self.settings, self.metrics)

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Apply {"versions": {name: version}, "batching": {"enabled", "max_batch", "wait_ms"}} in place."""
        await self.service.reconfigure(user_config)

    # -- RPCs -----------------------------------------------------------------------------------------------
    async def Rank(
        self, request: ranking_pb2.RankRequest, grpc_context: RayServegRPCContext = None
    ) -> ranking_pb2.RankResponse:
        token = request_id_var.set(_request_id(grpc_context))
        start = time.perf_counter()
        model, version, code = self.service.model_of(request), "", "OK"
        try:
            response = await self.service.rank(request)
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
            ms = ms_since(start)
            self.metrics.request("Rank", model if model in MODELS else "unknown", version, code, ms)
            if code != "OK":
                details = grpc_context.details() if grpc_context is not None else ""
                log.warning("rank rejected", extra={"code": code, "details": details, "ms": round(ms, 3)})
            request_id_var.reset(token)

    async def ListModels(self, request: ranking_pb2.ListModelsRequest) -> ranking_pb2.ListModelsResponse:
        response = self.service.list_models()
        self.metrics.requests.inc(tags={"method": "ListModels", "model": "", "version": "", "code": "OK"})
        return response

    async def Check(self, request: health_pb2.HealthCheckRequest) -> health_pb2.HealthCheckResponse:
        """grpc.health.v1 through Serve's proxy: SERVING once a ranker version is active."""
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if self.service.serving()
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


# -- the application ----------------------------------------------------------------------------------------
def resolve_versions(settings: RankingSettings) -> dict[str, str]:
    """The version to serve per ranker: the pinned one, else the registry's `latest`; rankers never
    trained are left out. Raises CliError for a pin that does not exist or when no ranker exists at all."""
    versions: dict[str, str] = {}
    for name in MODELS:
        available = rankers.list_versions(settings.models_dir, name)
        pinned = settings.pinned_versions.get(name)
        if pinned:
            if pinned not in available:
                shown = ", ".join(available) or "none"
                raise CliError(f"{name} version {pinned!r} is not in {settings.models_dir}; available: {shown}")
            versions[name] = pinned
            continue
        latest = rankers.latest_version(settings.models_dir, name)
        if latest:
            versions[name] = latest
    if not versions:
        raise CliError(f"no ranker (dcn or lightgbm) in the model registry {settings.models_dir}; train one first")
    return versions


def user_config(settings: RankingSettings, versions: dict[str, str], batching: bool | None = None) -> dict[str, Any]:
    """The deployment's user_config: active versions and batching settings (all changeable in place)."""
    return {
        "versions": dict(sorted(versions.items())),
        "batching": {
            "enabled": settings.batching if batching is None else batching,
            "max_batch": settings.max_batch,
            "wait_ms": settings.batch_wait_ms,
        },
    }


def deployment_options(settings: RankingSettings) -> dict[str, Any]:
    """Replicas / autoscaling, resources and logging of the Ranker deployment."""
    options: dict[str, Any] = {
        "max_ongoing_requests": settings.max_ongoing,
        "ray_actor_options": {"num_cpus": settings.replica_cpus},
        "logging_config": {"encoding": "JSON", "log_level": settings.log_level.upper(), "enable_access_log": False},
        "graceful_shutdown_timeout_s": 10.0,
    }
    if settings.max_replicas > settings.replicas:
        options["autoscaling_config"] = {
            "min_replicas": settings.replicas,
            "initial_replicas": settings.replicas,
            "max_replicas": settings.max_replicas,
            "target_ongoing_requests": settings.target_ongoing,
        }
    else:
        options["num_replicas"] = settings.replicas
    return options


def build(
    settings: RankingSettings,
    versions: dict[str, str],
    code_version: str | None = None,
    batching: bool | None = None,
) -> Application:
    """The application; a fixed `code_version` makes a redeploy with another user_config an in-place update."""
    options = deployment_options(settings)
    options["user_config"] = user_config(settings, versions, batching)
    if code_version:
        # Serve's imperative API gives every serve.run a fresh code version (a rolling restart of all
        # replicas); pinning it keeps model switches to `reconfigure` on the running replicas.
        options.update(version=code_version, _internal=True)
    return RankingDeployment.options(**options).bind(settings.to_dict())


def app_builder(args: dict[str, Any]) -> Application:
    """Serve application builder (declarative config / RayService): settings from the environment, optional
    `versions` ("dcn=v3,lightgbm=v2" or a mapping) overriding the registry's `latest`."""
    settings = RankingSettings.from_env()
    pins = args.get("versions") or {}
    if isinstance(pins, str):
        pins = parse_versions(pins)
    if pins:
        settings = RankingSettings.from_dict({**settings.to_dict(), "pinned_versions": dict(pins)})
    return build(settings, resolve_versions(settings))
