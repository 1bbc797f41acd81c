"""`recsys ope`: estimate the CTR a model version would get, from the logged (exploring) traffic.

    recsys ope --base DATA --log LOG --policy v0003 [--policy v0002 ...] [--since 2h] [--until now]

The users' history is the base dataset plus the log before `--since`; the evaluated traffic is the log's served
lists from `--since` to `--until`. Prints a table and, as its last line, the JSON of the result.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from recsys.common import config
from recsys.common.errors import CliError
from recsys.training.retrain_commands import instant


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ope", help="off-policy evaluation of model versions on the logged traffic (IPS, SNIPS, DR)")
    p.add_argument("--log", required=True, help="event log root (local folder or URI)")
    p.add_argument("--policy", action="append", required=True, metavar="MODEL",
                   help="a registry version (v0003, latest) or a version folder; repeat to compare")
    p.add_argument("--base", required=True, help="the dataset the log extends (users' and items' history)")
    p.add_argument("--models", help="model registry root (default RECSYS_MODELS_DIR)")
    p.add_argument("--since", type=instant, help="first served list to evaluate (ISO time, epoch, or a span: 2h)")
    p.add_argument("--until", type=instant, help="evaluate lists before this time")
    p.add_argument("--variant", action="append", help="only the lists of this variant (repeatable)")
    p.add_argument("--ranker", help="the ranker of each version to evaluate (default: its default ranker)")
    p.add_argument("--alpha", type=float, default=0.05, help="1 - confidence of the intervals (default 0.05)")
    p.add_argument("--out", help="also write the result as JSON to this file")
    p.set_defaults(func=run)


def _version_dir(name: str, models: str) -> Path:
    from recsys.model.registry import Registry

    path = Path(name)
    if path.is_dir():
        return path
    registry = Registry(models)
    version = registry.latest() if name == "latest" else name
    if not version or not registry.path(version).is_dir():
        raise CliError(f"--policy {name!r}: no such version folder or registry version in {models}")
    return registry.path(version)


def run(args: argparse.Namespace) -> int:
    if not 0.0 < args.alpha < 1.0:
        raise CliError(f"--alpha must be in (0, 1), got {args.alpha}")
    if args.since is not None and args.until is not None and args.until <= args.since:
        raise CliError("--until must be after --since")
    from recsys.model.bundle import load_bundle
    from recsys.training.commands import _load
    from recsys.training.data.from_log import build_from_log
    from recsys.training.ope.evaluate import evaluate_versions
    from recsys.training.ope.logged import read_logged

    models = args.models or config.MODELS_DIR.str()
    dirs = {name: _version_dir(name, models) for name in args.policy}
    base = _load(args.base)
    history = build_from_log(args.log, base, until_ms=args.since) if args.since is not None else base
    logged = read_logged(args.log, args.since, args.until, args.variant)
    bundles = {name: load_bundle(path) for name, path in dirs.items()}
    result = evaluate_versions(bundles, history, logged, alpha=args.alpha, ranker=args.ranker)
    print_table(result)
    text = json.dumps(result, default=str)
    if args.out:
        Path(args.out).write_text(text)
    print(text)
    return 0


def print_table(result: dict, out=sys.stdout) -> None:
    """The estimates as a readable table."""
    print(f"logged lists {result['lists']} (exploring {result.get('exploring_lists', 0)}), skipped "
          f"{result.get('skipped', {})}", file=out)
    for variant, row in result.get("logged", {}).items():
        print(f"  logged CTR {variant:<14} {row['ctr']:.4f} over {row['lists']} lists", file=out)
    for name, estimates in result.get("versions", {}).items():
        for key, e in estimates.items():
            print(f"  {name:<12} {key:<6} CTR {e['ctr']:.4f}  [{e['low']:.4f}, {e['high']:.4f}]", file=out)
