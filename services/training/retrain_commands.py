"""`recsys retrain`: champion / challenger on the most recent data (`recsys.training.retrain`).

Exit code 0 whether the gate passed or refused the challenger (a refusal is a valid outcome), 2 for bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from recsys.common import config
from recsys.common.errors import CliError
from recsys.training.commands import _common, _config, _load
from recsys.training.data.schema import Dataset
from recsys.training.data.timespec import parse_instant
from recsys.training.gate import HIGHER_IS_BETTER, GatePolicy
from recsys.training.settings import CANARY_SHARE, WINDOW_HOURS


def instant(text: str) -> int:
    """A `--since` / `--until` value as epoch milliseconds (`recsys.training.data.timespec.parse_instant`)."""
    try:
        return parse_instant(text, time.time())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def tolerances(values: list[str]) -> dict[str, float]:
    """`--tolerance` values in order: `T` sets every gated metric, `METRIC=T` one of them."""
    out: dict[str, float] = {}
    for value in values:
        name, _, number = value.rpartition("=")
        try:
            tolerance = float(number)
        except ValueError as exc:
            raise CliError(f"--tolerance {value!r}: not a number") from exc
        if name and name not in HIGHER_IS_BETTER:
            raise CliError(f"--tolerance {value!r}: unknown metric {name!r} (one of {', '.join(HIGHER_IS_BETTER)})")
        out.update({name: tolerance} if name else dict.fromkeys(HIGHER_IS_BETTER, tolerance))
    return out


def _dataset(args: argparse.Namespace) -> tuple[Dataset, dict]:
    """The dataset (`--data`, or `--base` + `--log`) and how the manifest names its source."""
    if args.data:
        if args.log or args.base:
            raise CliError("give --data, or --base with --log, not both")
        if args.since is not None or args.until is not None:
            raise CliError("--since and --until select events of the log: they go with --log")
        return _load(args.data), {"path": str(args.data)}
    if not (args.log and args.base):
        raise CliError("give --data, or --base with --log")
    from recsys.training.data.from_log import build_from_log

    ds = build_from_log(args.log, _load(args.base), since_ms=args.since, until_ms=args.until,
                        progress=not args.quiet)
    return ds, {"base": str(args.base), "log": str(args.log), "since_ms": args.since, "until_ms": args.until}


def _policy(args: argparse.Namespace) -> GatePolicy:
    try:
        return GatePolicy(k=args.k).with_tolerances(**tolerances(args.tolerance or []))
    except ValueError as exc:
        raise CliError(str(exc)) from exc


def _share(args: argparse.Namespace) -> float:
    try:
        share = args.canary_share if args.canary_share is not None else CANARY_SHARE.float()
    except config.ConfigError as exc:
        raise CliError(str(exc)) from exc
    if not 0.0 <= share < 1.0:
        raise CliError(f"canary share must be in [0, 1), got {share}")
    return share


def cmd_retrain(args: argparse.Namespace) -> int:
    from recsys.model.registry import RegistryError
    from recsys.training.report import clean
    from recsys.training.retrain import retrain

    if args.request:  # on demand, for the running `recsys serve`: its lifecycle loop retrains at its next check
        from recsys.model.requests import request_retrain

        path = request_retrain(args.models or config.MODELS_DIR.str(), args.reason or "requested")
        print(json.dumps({"requested": str(path), "reason": args.reason or "requested"}))
        return 0

    policy, share, cfg = _policy(args), _share(args), _config(args)
    ds, source = _dataset(args)
    if args.window_hours is None and args.window_frac is None and WINDOW_HOURS.float() > 0:
        args.window_hours = WINDOW_HOURS.float()
    frac = None if args.window_hours is not None else (0.1 if args.window_frac is None else args.window_frac)
    try:
        result = retrain(ds, args.models or config.MODELS_DIR.str(), cfg, policy, window_frac=frac,
                         window_hours=args.window_hours, canary_share=share, shuffle=args.shuffle_labels,
                         report_dir=args.report_dir, source=source, progress=not args.quiet,
                         ope_log=args.log or None)
    except RegistryError as exc:
        raise CliError(str(exc)) from exc
    summary = result.summary()
    print(f"{result.version} (parent {result.parent}): {summary['decision']}, {result.action}; latest "
          f"{result.latest}\n  {result.decision.reason}\n  report {result.report.parent}", file=sys.stderr)
    print(json.dumps(clean(summary)))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "retrain", help="train a challenger, gate it against the champion on the latest data, canary or promote it")
    p.add_argument("--data", help="dataset folder (generic format or MovieLens)")
    p.add_argument("--base", help="with --log: the dataset whose catalogue and users the event log extends")
    p.add_argument("--log", help="event log root (local folder or URI) to build the dataset from")
    when = "ISO date-time (UTC unless zoned), epoch seconds or milliseconds, or a span back from now like 7d"
    p.add_argument("--since", type=instant, help=f"with --log: first event time; {when}")
    p.add_argument("--until", type=instant, help=f"with --log: take events before this time; {when}")
    p.add_argument("--models", help="model registry root (default RECSYS_MODELS_DIR)")
    # Either way the window never reaches back into the champion's training data (its data_window.train.until).
    window = p.add_mutually_exclusive_group()
    window.add_argument("--window-frac", type=float,
                        help="held-out window: the most recent share of the interactions (default 0.1)")
    window.add_argument("--window-hours", type=float, help="held-out window: the last H hours of the data")
    p.add_argument("--k", type=int, default=20, help="K of the gated Recall@K and NDCG@K (default 20)")
    p.add_argument("--tolerance", action="append", metavar="[METRIC=]T",
                   help="relative tolerance of the gate (default 0.02): T for every metric, METRIC=T for one of "
                        "recall, ndcg, auc, logloss; repeat to combine")
    p.add_argument("--canary-share", type=float,
                   help="share of users a passing challenger is served to first; 0 promotes it at once "
                        "(default RECSYS_CANARY_SHARE)")
    p.add_argument("--report-dir", help="folder of gate.json and gate.html (default <models>/reports/<version>)")
    p.add_argument("--shuffle-labels", action="store_true",
                   help="test aid: train on shuffled user-item pairs, a deliberately worse challenger the gate "
                        "must refuse (never for real models)")
    p.add_argument("--request", action="store_true",
                   help="do not retrain here: ask the lifecycle loop of a running `recsys serve` to (it uses its own "
                        "base, log and settings)")
    p.add_argument("--reason", default="", help="with --request: recorded in the registry's history")
    _common(p)
    p.set_defaults(func=cmd_retrain)
