"""`recsys train`, `recsys evaluate`, `recsys batch-recommend` and `recsys models` (list / rollback)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from recsys.common.errors import CliError
from recsys.training.data.schema import Dataset


def _load(path: str) -> Dataset:
    from recsys.training.data.loaders import load_dataset

    return load_dataset(path)


def _config(args: argparse.Namespace):
    from recsys.training.pipeline import TrainConfig
    from recsys.training.settings import TRAIN_CONFIG

    data = {}
    path = getattr(args, "config", None) or TRAIN_CONFIG.str()
    if path:
        try:
            data = json.loads(Path(path).read_text())
            cfg = TrainConfig.from_dict(data)
        except (OSError, ValueError, TypeError) as exc:
            raise CliError(f"--config {path}: {exc}") from exc
    else:
        cfg = TrainConfig()
    cfg = cfg.with_seed(args.seed if args.seed is not None else cfg.seed)
    if getattr(args, "threads", None):
        cfg.threads = args.threads
        cfg.lgbm.threads = args.threads
    return cfg


def cmd_train(args: argparse.Namespace) -> int:
    from recsys.model.bundle import save_bundle
    from recsys.model.registry import Registry
    from recsys.training.pipeline import train_all
    from recsys.training.provenance import code_version, data_fingerprint
    from recsys.training.window import data_span

    ds = _load(args.data)
    cfg = _config(args)
    t0 = time.perf_counter()
    if args.workers or args.ray_address:
        bundle, timings = _train_on_ray(ds, cfg, args)
    else:
        bundle, timings = train_all(ds, cfg, progress=not args.quiet)
    train_s = round(time.perf_counter() - t0, 2)
    manifest = {
        "dataset": {"name": ds.name, "path": str(args.data), "fingerprint": data_fingerprint(ds),
                    "n_users": ds.n_users, "n_items": ds.n_items, "n_interactions": len(ds.interactions)},
        "data_window": {"train": data_span(ds.interactions)},
        "code_version": code_version(),
        "config": cfg.to_dict(),
        "timings": {**timings, "train_s": train_s},
        "metrics": {},
    }
    registry = Registry(args.out)
    version = registry.create(lambda folder: save_bundle(bundle, folder), manifest, publish=not args.no_publish)
    print(json.dumps({"version": version, "path": str(registry.root / version), "train_s": train_s,
                      "latest": registry.latest()}))
    return 0


def _train_on_ray(ds, cfg, args: argparse.Namespace):
    """train_all with the two-tower models and the rankers (LightGBM, DCN-v2) on Ray Train (`--workers`, one CPU
    each; checkpoints under <out>/.ray-checkpoints, removed once the version is written)."""
    import shutil

    from recsys.training.pipeline import RayFit, train_all
    from recsys.training.ray_cluster import ray_for

    workers = args.workers or 1
    if workers < 1:
        raise CliError(f"--workers must be at least 1, got {workers}")
    storage = Path(args.out).resolve() / ".ray-checkpoints"
    try:
        with ray_for(args.ray_address, workers):
            return train_all(ds, cfg, progress=not args.quiet, ray_fit=RayFit(workers, storage))
    finally:
        shutil.rmtree(storage, ignore_errors=True)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from recsys.training.evaluate import evaluate
    from recsys.training.report import clean, write_report

    ds = _load(args.data)
    results = evaluate(ds, args.split, _config(args), progress=not args.quiet)
    out = Path(args.out) if args.out else None
    if out is not None:
        json_path, html_path = write_report(results, out)
        print(f"wrote {json_path} and {html_path}", file=sys.stderr)
    summary = {k: v for k, v in results.items() if k != "report"}
    print(json.dumps(clean(summary), indent=None if args.out else 2))
    return 0


def cmd_batch_recommend(args: argparse.Namespace) -> int:
    from recsys.model.bundle import load_bundle
    from recsys.model.registry import RegistryError, resolve_model_dir
    from recsys.training.pipeline import validate_dataset
    from recsys.training.two_stage import batch_recommend

    if args.k < 1:
        raise CliError(f"--k must be at least 1, got {args.k}")
    try:
        model_dir = resolve_model_dir(args.model, args.version)
    except RegistryError as exc:
        raise CliError(str(exc)) from exc
    bundle = load_bundle(model_dir)
    if args.ranker and args.ranker not in bundle.rankers:
        raise CliError(f"--ranker {args.ranker!r} not in model (has: {', '.join(sorted(bundle.rankers))})")
    ds = _load(args.data)
    validate_dataset(ds)
    if args.workers or args.ray_address:
        from recsys.training.batch_ray import batch_recommend_ray

        summary = batch_recommend_ray(Path(model_dir), ds, args.k, Path(args.out), workers=args.workers or 1,
                                      ray_address=args.ray_address, ranker=args.ranker, fmt=args.format)
        print(json.dumps({"model": str(model_dir), **summary}))
        return 0
    if args.format != "csv":
        raise CliError("--format parquet writes shards: it needs --workers (Ray Data)")
    t0 = time.perf_counter()
    recs = batch_recommend(bundle, ds, args.k, args.ranker, progress=not args.quiet)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    recs.to_csv(tmp, index=False, float_format="%.6g")
    tmp.replace(out)
    print(json.dumps({"model": str(model_dir), "users": int(recs["user_id"].nunique()), "rows": len(recs),
                      "out": str(out), "seconds": round(time.perf_counter() - t0, 2)}))
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from recsys.model.registry import Registry, RegistryError

    registry = Registry(args.model)
    try:
        if args.rollback is not None:
            version = registry.rollback(args.rollback or None)
            print(json.dumps({"latest": version}))
            return 0
        if args.set_latest:
            registry.set_latest(args.set_latest)
        rows = []
        for v in registry.versions():
            m = registry.manifest(v)
            rows.append({"version": v, "created_at": m.get("created_at"), "latest": v == registry.latest(),
                         "dataset": m.get("dataset", {}).get("name"),
                         "fingerprint": (m.get("dataset", {}).get("fingerprint") or "")[:12]})
    except RegistryError as exc:
        raise CliError(str(exc)) from exc
    print(json.dumps(rows, indent=2))
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, help="random seed (default 0; same seed, same models and metrics)")
    p.add_argument("--config", help="JSON file overriding training settings, e.g. {\"two_tower\": {\"epochs\": 4}}")
    p.add_argument("--threads", type=int, help="CPU threads for torch and LightGBM (default 2)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser("train", help="fit every model on a dataset and write a registry version")
    train.add_argument("--data", required=True, help="dataset folder (generic format or MovieLens)")
    train.add_argument("--out", required=True, help="model registry root (a new version folder is added)")
    train.add_argument("--no-publish", action="store_true", help="do not move the `latest` pointer")
    train.add_argument("--workers", type=int, default=0, help="fit the two-tower models and the rankers "
                       "(LightGBM, DCN-v2) on Ray Train with this many workers (one CPU each; each fit resumes from "
                       "its last checkpoint when a worker dies; ALS stays in this process); 0 = every model in this "
                       "process")
    train.add_argument("--ray-address", help="Ray cluster to join (default with --workers: a local Ray for the call)")
    _common(train)
    train.set_defaults(func=cmd_train)

    ev = subparsers.add_parser("evaluate", help="split, train, and report retrieval / ranking / two-stage metrics")
    ev.add_argument("--data", required=True, help="dataset folder (generic format or MovieLens)")
    ev.add_argument("--split", choices=("temporal", "loo"), default="temporal",
                    help="temporal: last 20%% of each user's interactions held out; loo: the last one")
    ev.add_argument("--out", help="folder for metrics.json and report.html")
    _common(ev)
    ev.set_defaults(func=cmd_evaluate)

    br = subparsers.add_parser("batch-recommend", help="two-stage top-K for every user of a dataset, as CSV")
    br.add_argument("--model", required=True, help="model registry root (uses `latest`) or a version folder")
    br.add_argument("--version", help="registry version to load instead of `latest`")
    br.add_argument("--data", required=True, help="dataset whose users get recommendations (seen items excluded)")
    br.add_argument("--k", type=int, default=10, help="recommendations per user")
    br.add_argument("--out", required=True, help="CSV file: user_id,item_id,rank,score (with --workers: a folder of "
                    "CSV or Parquet shards)")
    br.add_argument("--ranker", choices=("dcn", "lgbm"), help="ranker to use (default: the model's default)")
    br.add_argument("--workers", type=int, default=0, help="score on Ray Data with this many actors (one CPU "
                    "each); 0 = in this process")
    br.add_argument("--ray-address", help="Ray cluster to join (default with --workers: a local Ray for the call)")
    br.add_argument("--format", choices=("csv", "parquet"), default="csv", help="shard format with --workers")
    br.add_argument("--quiet", action="store_true", help="no progress bars")
    br.set_defaults(func=cmd_batch_recommend)

    models = subparsers.add_parser("models", help="list registry versions; move `latest` or roll back")
    models.add_argument("--model", required=True, help="model registry root")
    models.add_argument("--rollback", nargs="?", const="", default=None, metavar="VERSION",
                        help="point latest at VERSION, or at the version before the current one")
    models.add_argument("--set-latest", metavar="VERSION", help="point latest at VERSION")
    models.set_defaults(func=cmd_models)
