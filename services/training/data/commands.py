"""`recsys data generate | import | stats`."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from recsys.common.errors import CliError
from recsys.training.data.loaders import load_dataset, save_dataset
from recsys.training.data.stats import dataset_stats, format_stats
from recsys.training.data.synthetic import SyntheticConfig, generate


def register(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="datasets: generate synthetic data, import, show statistics")
    sub = data.add_subparsers(dest="data_command", required=True)

    gen = sub.add_parser("generate", help="write a synthetic dataset with known structure (and its ground truth)")
    gen.add_argument("--out", required=True, type=Path, help="output folder (written atomically)")
    gen.add_argument("--interactions", type=int, default=100_000, help="number of interactions (default 100000)")
    gen.add_argument("--users", type=int, default=None, help="number of users (default interactions/100)")
    gen.add_argument("--items", type=int, default=None, help="number of items (default interactions/100, >= 1000)")
    gen.add_argument("--seed", type=int, default=0, help="random seed: same seed, same dataset (default 0)")
    gen.add_argument("--dim", type=int, default=16, help="latent factor dimension (default 16)")
    gen.add_argument("--temperature", type=float, default=0.5, help="softmax temperature of choices (default 0.5)")
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


def _generate(args: argparse.Namespace) -> int:
    try:
        SyntheticConfig(
            n_interactions=args.interactions,
            n_users=args.users,
            n_items=args.items,
            seed=args.seed,
            dim=args.dim,
            temperature=args.temperature,
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
