"""`recsys ranking serve`, `recsys ranking versions` and `recsys ranking compile`."""

from __future__ import annotations

import argparse

from recsys.common.commands import add_serve_command
from recsys.ranking.settings import PORT  # also declares the variables for `recsys config`


def _versions(args: argparse.Namespace) -> int:
    from recsys.ranking import rankers
    from recsys.ranking.settings import MODELS, RankingSettings

    settings = RankingSettings.from_env()
    for name in MODELS:
        latest = rankers.latest_version(settings.models_dir, name) or "-"
        available = rankers.list_versions(settings.models_dir, name)
        print(f"{name}\tlatest={latest}\tavailable={','.join(available) or '-'}")
    return 0


def _compile(args: argparse.Namespace) -> int:
    """Compile a LightGBM forest into the replicas' cache, so that they score with it from their first request."""
    import time

    from recsys.common.errors import CliError
    from recsys.model.registry import RegistryError
    from recsys.ranking import rankers
    from recsys.ranking.settings import RankingSettings

    settings = RankingSettings.from_env()
    if not settings.lgbm_compile_dir:
        raise CliError("RECSYS_RANKING_LGBM_COMPILED is off: nothing to compile")
    available = rankers.list_versions(settings.models_dir, "lightgbm")
    version = args.version or rankers.latest_version(settings.models_dir, "lightgbm")
    if version not in available:
        raise CliError(f"--version: no LightGBM ranker {version or ''} in {settings.models_dir}; "
                       f"available: {', '.join(available) or 'none'}")
    start = time.perf_counter()
    try:
        scorer = rankers.compile_lightgbm(settings.models_dir, version, settings.lgbm_compile_dir)
    except RegistryError as exc:
        raise CliError(str(exc)) from exc
    if not scorer.compiled:
        print(f"lightgbm {version}: not compiled: {scorer.error}")
        return 1
    print(f"lightgbm {version}: compiled into {settings.lgbm_compile_dir} in {time.perf_counter() - start:.1f}s")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("ranking", help="the ranking service (Ray Serve gRPC ingress)")
    sub = parser.add_subparsers(dest="ranking_command", required=True)
    add_serve_command(
        sub, __package__, "start Ray + Serve and rank until SIGTERM", PORT,
        options=[(("--versions",), {"default": "", "help": "pin versions, e.g. dcn=v3,lightgbm=v2"})],
    )
    versions = sub.add_parser("versions", help="list the rankers' versions in the model registry")
    versions.set_defaults(func=_versions)
    compile_ = sub.add_parser("compile", help="compile a LightGBM forest into the replicas' cache (lleaves)")
    compile_.add_argument("--version", default="", help="registry version (default: the latest with LightGBM)")
    compile_.set_defaults(func=_compile)
