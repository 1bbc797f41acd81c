"""`recsys data generate | import | stats | build` (`recsys dataset ...` is the same group)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pyarrow as pa

from recsys.common.errors import CliError
from recsys.training.data.from_log import build_from_log
from recsys.training.data.loaders import load_dataset, save_dataset
from recsys.training.data.stats import dataset_stats, format_stats
from recsys.training.data.synthetic import DEFAULT_END, DEFAULT_START, SyntheticConfig, generate
from recsys.training.data.timespec import parse_instant


def register(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser(
        "data", aliases=["dataset"], help="datasets: generate synthetic data, import, build from the event log, stats"
    )
    sub = data.add_subparsers(dest="data_command", required=True)

    gen = sub.add_parser("generate", help="write a synthetic dataset with known structure (and its ground truth)")
    gen.add_argument("--out", required=True, type=Path, help="output folder (written atomically)")
    gen.add_argument("--interactions", type=int, default=100_000, help="number of interactions (default 100000)")
    gen.add_argument("--users", type=int, default=None, help="number of users (default interactions/100)")
    gen.add_argument("--items", type=int, default=None, help="number of items (default interactions/100, >= 1000)")
    gen.add_argument("--seed", type=int, default=0, help="random seed: same seed, same dataset (default 0)")
    gen.add_argument("--dim", type=int, default=16, help="latent factor dimension (default 16)")
    gen.add_argument("--temperature", type=float, default=0.5, help="softmax temperature of choices (default 0.5)")
    gen.add_argument("--end", default=None,
                     help="when the interactions end (they span the ten years before it): an ISO date-time, epoch "
                          "seconds, `now`, or a span back from now like 1h (default 2025-01-01, fixed so the same "
                          "seed gives the same dataset); `now` makes logged traffic follow on at once")
    gen.add_argument("--force", action="store_true", help="replace --out if it exists")
    gen.set_defaults(func=_generate)

    imp = sub.add_parser("import", help="read MovieLens or generic files, validate, write our Parquet format")
    imp.add_argument("--source", required=True, type=Path, help="dataset folder or .zip (format auto-detected)")
    imp.add_argument("--out", required=True, type=Path, help="output folder (written atomically)")
    imp.add_argument("--force", action="store_true", help="replace --out if it exists")
    imp.set_defaults(func=_import)

    st = sub.add_parser("stats", help="counts, density, activity quantiles, genres, time span")
    st.add_argument("path", type=Path, help="dataset folder (ours or any importable source)")
    st.add_argument("--json", action="store_true", help="print JSON instead of text")
    st.set_defaults(func=_stats)

    when = "ISO date-time (UTC unless zoned), epoch seconds, or a span back from now like 7d / 24h / 30m"
    bld = sub.add_parser("build", help="logged traffic joined onto a dataset: positives, exposures, IPW weights")
    bld.add_argument("--log", required=True, help="event log root: a folder or a URI (s3://, gs://, file://)")
    bld.add_argument("--base", required=True, type=Path, help="dataset the log is joined onto (folder or .zip)")
    bld.add_argument("--since", help=f"first event time to take (default: the whole log); {when}")
    bld.add_argument("--until", help=f"take events before this time (default: all); {when}")
    bld.add_argument("--out", required=True, type=Path, help="output folder (written atomically)")
    bld.add_argument("--force", action="store_true", help="replace --out if it exists")
    bld.add_argument("--quiet", action="store_true", help="no progress bar")
    bld.set_defaults(func=_build)


def _generate(args: argparse.Namespace) -> int:
    span = {}
    if args.end is not None:
        try:
            end = parse_instant("0s" if args.end.strip() == "now" else args.end, time.time()) // 1000
        except ValueError as exc:
            raise CliError(f"--end: {exc}") from exc
        span = {"start": int(end - (DEFAULT_END - DEFAULT_START)), "end": int(end)}
    try:
        SyntheticConfig(
            n_interactions=args.interactions,
            n_users=args.users,
            n_items=args.items,
            seed=args.seed,
            dim=args.dim,
            temperature=args.temperature,
            **span,
        ).resolved()
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    if args.dim < 1 or args.temperature <= 0:
        raise CliError("--dim must be >= 1 and --temperature > 0")
    _refuse_existing(args.out, args.force)
    start = time.perf_counter()
    ds = generate(
        args.interactions,
        n_users=args.users,
        n_items=args.items,
        seed=args.seed,
        dim=args.dim,
        temperature=args.temperature,
        progress=True,
        **span,
    )
    save_dataset(ds, args.out, overwrite=args.force)
    _report("generated", ds, args.out, time.perf_counter() - start)
    return 0


def _import(args: argparse.Namespace) -> int:
    if args.source.resolve() == args.out.resolve():
        raise CliError("--source and --out must differ")
    _refuse_existing(args.out, args.force)
    start = time.perf_counter()
    ds = load_dataset(args.source)
    save_dataset(ds, args.out, overwrite=args.force)
    _report("imported", ds, args.out, time.perf_counter() - start)
    return 0


def _build(args: argparse.Namespace) -> int:
    now = time.time()
    since = _instant(args.since, "--since", now)
    until = _instant(args.until, "--until", now)
    if since is not None and until is not None and since >= until:
        raise CliError(f"--since ({args.since}) must be before --until ({args.until})")
    if "://" not in args.log and not Path(args.log).is_dir():
        raise CliError(f"--log {args.log}: no such folder")
    if args.base.resolve() == args.out.resolve():
        raise CliError("--base and --out must differ")
    _refuse_existing(args.out, args.force)
    start = time.perf_counter()
    base = load_dataset(args.base)
    try:
        ds = build_from_log(args.log, base, since, until, progress=not args.quiet)
    except (OSError, pa.ArrowException) as exc:
        raise CliError(f"--log {args.log}: cannot read the event log ({exc})") from exc
    save_dataset(ds, args.out, overwrite=args.force)
    seconds = time.perf_counter() - start
    log = ds.meta["log"]
    summary = {
        "out": str(args.out), "positives_added": log["positives_added"], "exposures": log["exposures"],
        "clicked_exposures": log["clicked_exposures"], "interactions": len(ds.interactions), "users": len(ds.users),
        "items": ds.n_items, "position_bias": log["position_bias"], "seconds": round(seconds, 2),
    }
    print(
        f"built {ds.name}: {summary['positives_added']:,} positives added, {summary['exposures']:,} exposures"
        f" ({summary['clicked_exposures']:,} clicked), eta {log['position_bias']['eta']:.3f},"
        f" {summary['users']:,} users, {summary['items']:,} items -> {args.out} ({seconds:.1f}s)"
    )
    print(json.dumps(summary, sort_keys=True))
    return 0


def _instant(text: str | None, option: str, now: float) -> int | None:
    """Epoch ms of a --since / --until value (None when not given); CliError naming the option otherwise."""
    if text is None:
        return None
    try:
        return parse_instant(text, now)
    except ValueError as exc:
        raise CliError(f"{option}: {exc}") from exc


def _stats(args: argparse.Namespace) -> int:
    stats = dataset_stats(load_dataset(args.path))
    print(json.dumps(stats, indent=2) if args.json else format_stats(stats))
    return 0


def _refuse_existing(out: Path, force: bool) -> None:
    """Fail before any work when the output exists (save_dataset checks again at the end)."""
    if out.exists() and not force and not (out.is_dir() and not any(out.iterdir())):
        raise CliError(f"{out} already exists (use --force to replace it)")


def _report(verb: str, ds, out: Path, seconds: float) -> None:
    added = [
        f"{ds.meta[k]} {k.split('_')[0]} added with empty metadata"
        for k in ("items_added", "users_added")
        if ds.meta.get(k)
    ]
    print(
        f"{verb} {ds.name}: {len(ds.interactions):,} interactions, {ds.n_users:,} users, {ds.n_items:,} items"
        f" -> {out} ({seconds:.1f}s)" + (f"; {'; '.join(added)}" if added else ""),
        file=sys.stdout,
    )
