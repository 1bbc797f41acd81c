"""`recsys recommend --user ID` and `recsys similar --item ID`: ask a running gateway through the Python client
and print a table."""

from __future__ import annotations

import argparse
import sys

import grpc

from recsys.common.errors import CliError
from recsys.gateway.settings import PORT


def _ask(args: argparse.Namespace, command: str):
    from recsys.client import RecsysClient

    with RecsysClient(args.gateway, timeout_s=args.timeout) as client:
        try:
            if command == "similar":
                return client.similar(args.item, args.k, user_id=args.user or "", include_genres=args.genre or None)
            return client.recommend(args.user, args.k, include_genres=args.genre or None)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                raise CliError(exc.details()) from exc
            print(f"recsys {command}: gateway at {args.gateway}: {exc.code().name} {exc.details()}", file=sys.stderr)
            return None


def _recommend(args: argparse.Namespace) -> int:
    recs = _ask(args, "recommend")
    if recs is None:
        return 1
    print(f"user {args.user} · variant {recs.variant} · model {recs.model or '-'} {recs.model_version}"
          f" · request {recs.request_id}")
    return _table(recs)


def _similar(args: argparse.Namespace) -> int:
    recs = _ask(args, "similar")
    if recs is None:
        return 1
    print(f"like item {args.item}" + (f" · for user {args.user}" if args.user else "")
          + f" · model {recs.model or '-'} {recs.model_version} · request {recs.request_id}")
    return _table(recs)


def _table(recs) -> int:
    if recs.degraded:
        print("degraded: " + "; ".join(recs.degraded_reasons))
    print(f"{'#':>3}  {'item':<12} {'score':>9}  source")
    for item in recs.items:
        print(f"{item.position + 1:>3}  {item.item_id:<12} {item.score:>9.4f}  {item.source}")
    hops = ", ".join(f"{hop} {ms:.1f} ms" for hop, ms in recs.timings_ms.items())
    print(f"timings: {hops}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    rec = subparsers.add_parser("recommend", help="ask the gateway for recommendations and print a table")
    rec.add_argument("--user", required=True)
    rec.add_argument("--k", type=int, default=10)
    rec.add_argument("--genre", action="append", help="only items of this genre (repeatable)")
    rec.add_argument("--gateway", default=f"127.0.0.1:{PORT.int()}")
    rec.add_argument("--timeout", type=float, default=2.0)
    rec.set_defaults(func=_recommend)
    sim = subparsers.add_parser("similar", help="items like one item (ranked for a user when --user is given)")
    sim.add_argument("--item", required=True)
    sim.add_argument("--user", default="", help="rank the similar items for this user")
    sim.add_argument("--k", type=int, default=10)
    sim.add_argument("--genre", action="append", help="only items of this genre (repeatable)")
    sim.add_argument("--gateway", default=f"127.0.0.1:{PORT.int()}")
    sim.add_argument("--timeout", type=float, default=2.0)
    sim.set_defaults(func=_similar)
