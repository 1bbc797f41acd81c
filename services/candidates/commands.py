"""`recsys index` (build / swap / roll back / update the Milvus item index) and `recsys candidates serve`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from recsys.candidates import settings
from recsys.common.commands import add_serve_command
from recsys.common.errors import CliError


def register(subparsers: argparse._SubParsersAction) -> None:
    index = subparsers.add_parser(
        "index",
        help="build a new Milvus item collection from a registry model and swap readers to it once loaded",
        description="Without options: build from the registry's latest model, then activate. Milvus is "
        "RECSYS_MILVUS_URI (default: the Milvus Lite file under the var folder).",
    )
    index.add_argument(
        "--model", default=None, help="model registry root or version folder (default RECSYS_MODELS_DIR)"
    )
    index.add_argument("--version", default=None, help="registry version to index (default: latest)")
    index.add_argument("--no-activate", action="store_true", help="build and load, but leave the pointer alone")
    index.add_argument("--activate", metavar="COLLECTION", help="point readers at an already built collection")
    index.add_argument("--rollback", action="store_true", help="re-activate the previously active collection")
    index.add_argument("--status", action="store_true", help="print the active version and the kept ones")
    index.add_argument(
        "--upsert",
        type=Path,
        metavar="FILE",
        help="insert or replace items of the active collection from a parquet file with columns "
        "item_id, embedding (list of floats), genres (list of strings), available, popularity",
    )
    index.add_argument("--unavailable", nargs="+", metavar="ITEM", help="mark items unavailable")
    index.add_argument("--available", nargs="+", metavar="ITEM", help="mark items available again")
    index.add_argument("--quiet", action="store_true", help="no progress bar")
    index.set_defaults(func=_index)

    candidates = subparsers.add_parser("candidates", help="the candidate service (Milvus ANN retrieval over gRPC)")
    sub = candidates.add_subparsers(dest="candidates_command", required=True)
    add_serve_command(sub, __package__, "serve CandidateService over gRPC", settings.PORT)


def _index(args: argparse.Namespace) -> int:
    from pymilvus.exceptions import MilvusException

    from recsys.candidates import indexer
    from recsys.candidates.lite import LiteUnavailable
    from recsys.candidates.milvus import connect
    from recsys.candidates.settings import IndexSettings, MilvusTarget
    from recsys.candidates.versions import NoActiveVersion, VersionStore
    from recsys.model.registry import RegistryError

    target = MilvusTarget.from_env()
    try:
        cfg = IndexSettings.from_env()
        milvus = connect(target)
    except (ValueError, LiteUnavailable, MilvusException, ConnectionError) as exc:
        raise CliError(f"{target.describe()}: {exc}") from exc
    store = VersionStore(milvus.client, settings.MILVUS_COLLECTION.str())
    try:
        result = _run(args, milvus.client, store, cfg)
    except (indexer.IndexBuildError, NoActiveVersion, RegistryError, MilvusException, ValueError, OSError) as exc:
        raise CliError(str(exc)) from exc
    finally:
        milvus.close()
    print(json.dumps(result))
    return 0


def _run(args: argparse.Namespace, client, store, cfg) -> dict:
    from recsys.candidates import indexer

    if args.status:
        return _status(client, store)
    if args.rollback:
        pointer = indexer.rollback(client, store)
        return {"active": pointer.active, "previous": pointer.history}
    if args.activate:
        pointer = indexer.activate(client, store, args.activate, cfg.keep_versions)
        return {"active": pointer.active, "previous": pointer.history}
    if args.upsert:
        written = indexer.upsert_items(client, store, _read_upsert(args.upsert), cfg)
        return {"upserted": written, "collection": store.active().collection}
    if args.unavailable or args.available:
        changed = 0
        if args.unavailable:
            changed += indexer.set_availability(client, store, args.unavailable, False)
        if args.available:
            changed += indexer.set_availability(client, store, args.available, True)
        return {"changed": changed, "collection": store.active().collection}
    return _build(args, client, store, cfg)


def _build(args: argparse.Namespace, client, store, cfg) -> dict:
    from tqdm.auto import tqdm

    from recsys.candidates import indexer
    from recsys.candidates.catalog import load_catalog
    from recsys.model.layout import BundleLayout
    from recsys.model.registry import resolve_model_dir

    model_dir = resolve_model_dir(args.model or settings.MODELS_DIR.str(), args.version).resolve()
    manifest_path = BundleLayout(model_dir).manifest
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    model_version = str(manifest.get("version") or model_dir.name)
    catalog = load_catalog(model_dir)
    with tqdm(total=len(catalog), desc="index", unit="item", disable=args.quiet, file=sys.stderr) as bar:
        info = indexer.build_version(client, store, catalog, model_version, str(model_dir), cfg, bar.update)
    result = {
        "collection": info.collection,
        "model_version": info.model_version,
        "items": info.count,
        "dim": info.dim,
        "index_type": info.index_type,
        "build_seconds": info.build_seconds,
    }
    if not args.no_activate:
        pointer = indexer.activate(client, store, info.collection, cfg.keep_versions)
        result.update(active=pointer.active, previous=pointer.history)
    return result


def _status(client, store) -> dict:
    pointer = store.pointer()
    if pointer is None:
        return {"active": None, "collections": store.built_versions()}
    versions = {}
    for name in [pointer.active, *pointer.history]:
        info = store.version(name)
        if info is not None:
            versions[name] = {
                "model_version": info.model_version,
                "items": info.count,
                "index_type": info.index_type,
                "built_at": info.built_at,
                "build_seconds": info.build_seconds,
            }
    return {
        "active": pointer.active,
        "previous": pointer.history,
        "versions": versions,
        "collections": store.built_versions(),
    }


def _read_upsert(path: Path):
    import numpy as np
    import pandas as pd

    from recsys.candidates.catalog import ItemCatalog

    if not path.exists():
        raise ValueError(f"{path} does not exist")
    frame = pd.read_parquet(path)
    missing = [c for c in ("item_id", "embedding") if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)}")
    genres = [list(g) if g is not None else [] for g in frame["genres"]] if "genres" in frame else [[]] * len(frame)
    return ItemCatalog.from_items(
        item_ids=frame["item_id"].astype(str).tolist(),
        embeddings=np.stack([np.asarray(v, dtype=np.float32) for v in frame["embedding"]]),
        item_genres=genres,
        available=frame["available"].to_numpy(bool) if "available" in frame else None,
        popularity=frame["popularity"].to_numpy(np.float32) if "popularity" in frame else None,
    )
