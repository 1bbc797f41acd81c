"""`recsys canary status | decide | start | abort`: the canary of a challenger version, by hand or from a CronJob."""

from __future__ import annotations

import argparse
import json
import sys
import time

import grpc

from recsys.common.errors import CliError


def _registry(args: argparse.Namespace):
    from recsys.common import config
    from recsys.model.registry import Registry

    return Registry(args.models or config.MODELS_DIR.str())


def _status(args: argparse.Namespace) -> int:
    from recsys.model import rollout

    registry = _registry(args)
    current = rollout.current(registry)
    events = [e for e in registry.history() if e.get("kind") in
              ("gate", "canary_started", "canary_promoted", "canary_rolled_back")][-args.history:]
    print(json.dumps({"latest": registry.latest(), "canary": current.__dict__ if current else None,
                      "history": events}, indent=2, default=str))
    return 0


def _decide(args: argparse.Namespace) -> int:
    from recsys.lifecycle import canary
    from recsys.lifecycle.settings import LifecycleSettings
    from recsys.model.registry import RegistryError

    settings = LifecycleSettings.from_env()
    address = args.monitoring or settings.monitoring_addr
    try:
        result = canary.check(_registry(args), address, settings.policy, act=not args.dry_run)
    except RegistryError as exc:
        raise CliError(str(exc)) from exc
    except grpc.RpcError as exc:  # the canary stays as it is; the next run asks again
        print(f"recsys canary decide: monitoring at {address}: {exc.code().name} {exc.details()}", file=sys.stderr)
        return 1
    if result is None:
        print(json.dumps({"canary": None}))
        return 0
    print(json.dumps({"version": result.rollout.challenger, "action": result.verdict.action,
                      "reason": result.verdict.reason, "latest": result.latest,
                      "figures": result.figures.__dict__}, default=str))
    if args.follow and result.verdict.action == "promote" and not args.dry_run:
        return _follow_latest()
    return 0


def _follow_latest() -> int:
    """After a promotion: `follow_steps`, indexing only into a Milvus server (an embedded Milvus Lite lives in each
    candidates pod, out of a job's reach)."""
    import os

    from recsys.lifecycle.loop import follow_steps, run_cli

    run = run_cli({})
    server = os.environ.get("RECSYS_MILVUS_URI", "").startswith(("http://", "https://", "tcp://"))
    for argv in follow_steps(index=server):
        code = run(argv)
        if code != 0:
            raise CliError(f"`recsys {' '.join(argv)}` after the promotion failed with exit code {code}")
    return 0


def _start(args: argparse.Namespace) -> int:
    from recsys.model import rollout
    from recsys.model.registry import RegistryError

    try:
        started = rollout.start(_registry(args), args.version, args.share, reason=args.reason)
    except (RegistryError, ValueError) as exc:
        raise CliError(str(exc)) from exc
    print(json.dumps(started.__dict__))
    return 0


def _abort(args: argparse.Namespace) -> int:
    from recsys.model import rollout
    from recsys.model.registry import RegistryError

    try:
        latest = rollout.finish(_registry(args), rollout.Verdict(rollout.ROLL_BACK, args.reason or "aborted by hand"))
    except RegistryError as exc:
        raise CliError(str(exc)) from exc
    print(json.dumps({"latest": latest, "at": time.time()}))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("canary", help="the canary of a challenger model version (status, decide, ...)")
    sub = parser.add_subparsers(dest="canary_command", required=True)
    for name, func, text in (
        ("status", _status, "the canary in progress and the recent gate / canary events"),
        ("decide", _decide, "ask the monitoring service and promote or roll back when the figures say so"),
        ("start", _start, "serve a registry version to a share of users next to `latest`"),
        ("abort", _abort, "end the canary in progress without promoting it"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("--models", default="", help="model registry (default RECSYS_MODELS_DIR)")
        p.set_defaults(func=func)
        if name == "status":
            p.add_argument("--history", type=int, default=10, help="how many recent events to show")
        if name == "decide":
            p.add_argument("--monitoring", default="", help="monitoring address (default RECSYS_MONITORING_ADDR)")
            p.add_argument("--dry-run", action="store_true", help="print the decision without acting on it")
            p.add_argument("--follow", action="store_true",
                           help="after a promotion, materialize the new latest (and index it into a Milvus server)")
        if name == "start":
            p.add_argument("--version", required=True, help="the challenger's registry version")
            p.add_argument("--share", type=float, required=True, help="share of users, between 0 and 1")
        if name in ("start", "abort"):
            p.add_argument("--reason", default="", help="recorded in the registry's history")
