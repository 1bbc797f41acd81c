"""Build the Ray Serve application of the ranking service from its settings and the active model versions.

Two ways in:
- `build(settings, versions, code_version)`: used by `recsys ranking serve` (`runtime.RankingRuntime`), which
  deploys imperatively and switches versions by redeploying with a new `user_config` and the same
  `code_version`, so Serve reconfigures the running replicas in place instead of replacing them.
- `app_builder(args)`: a Serve application builder for the declarative path, e.g. a KubeRay RayService
  `serveConfigV2` with `import_path: recsys.ranking.app:app_builder`; there a version switch is an edit of
  `deployments[name=Ranker].user_config`, which Serve also applies in place.
"""

from __future__ import annotations

from typing import Any

from ray.serve import Application

from recsys.common.errors import CliError
from recsys.ranking import rankers
from recsys.ranking.deployment import RankingDeployment
from recsys.ranking.settings import MODELS, RankingSettings, parse_versions


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
