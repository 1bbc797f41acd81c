"""Retrieval benchmark: CandidateService.Retrieve top-k over loopback gRPC, recall against exact search.

1. Model: trains the two-tower model (the training package's `train_two_tower`) on a synthetic dataset with
   --train-items items (default 100k) and writes it as a registry version (cached under --work by its
   parameters). With --items above --train-items, the catalogue is extended with the items of a second
   synthetic dataset embedded by the *trained item tower* from their features (its unknown-id row): training
   with an id table of 1M items is too slow on 2 cores. Users keep their trained towers and histories.
2. Index: `recsys index` as its own process (build time reported) into Milvus Lite (default) or, with
   --milvus-server, a Milvus standalone from the `milvus` package started here. That server binds every
   interface, so this refuses to start it outside a loopback-only network namespace: run
   `unshare -n sh -c 'ip link set lo up && .venv/bin/python benchmarks/retrieval.py --milvus-server ...'`.
3. Serve: `recsys candidates serve` as its own process; one client sends --requests Retrieve calls (after
   a warm-up) for random users, passing their features and recent items as the gateway does.
4. Recall@k: for each request, the same user vector (`UserEncoder`, same inputs) scored against every item
   embedding with numpy, the user's recent items excluded as the service excludes them. `recall` counts a returned
   item as correct when its exact score reaches the k-th best score (ann-benchmarks' k-nn recall): the trained
   embeddings repeat (items without interactions share their tower's output), and among tied items exact search
   picks arbitrarily. `recall_by_id` is the plain overlap of ids with numpy's top k, and `duplicate_share` the
   share of item embeddings that repeat another.

Processes started here are stopped by PID on exit. Prints figures, then one JSON object on the last line:
recall, p50_ms, p99_ms, items, index_build_s, ...
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from extended_catalogue import cached_version, extend_catalogue
from milvus_server import MilvusServer

from recsys.common import children
from recsys.common.ports import free_port

REPO = Path(__file__).resolve().parents[1]
TIE_EPS = 1e-5  # scores closer than this count as tied (float32 inner products of unit vectors)




def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- the model ------------------------------------------------------------------------------------------------
def _train_version(root: Path, args: argparse.Namespace) -> Path:
    """A registry version with the trained two-tower model (cached by parameters)."""
    import pandas as pd
    import torch

    from recsys.model.bundle import ModelBundle, save_bundle
    from recsys.model.ids import IdIndex
    from recsys.model.registry import Registry
    from recsys.training.data import generate
    from recsys.training.features import (
        build_feature_spec,
        build_item_features,
        build_user_features,
        build_user_history,
    )
    from recsys.training.two_tower import TwoTowerConfig, train_two_tower

    params = {"items": args.train_items, "interactions": args.interactions, "epochs": args.epochs, "seed": 0}
    found = cached_version(root, params)
    if found is not None:
        _log(f"model: reusing {found}")
        return found
    torch.set_num_threads(2)
    started = time.perf_counter()
    ds = generate(args.interactions, n_items=args.train_items, seed=0)
    spec = build_feature_spec(ds)
    user_features, item_features = build_user_features(ds, spec), build_item_features(ds, spec)
    inter = ds.interactions
    items = IdIndex(ds.items["item_id"].astype(object))
    users = IdIndex(pd.unique(inter["user_id"].astype(object)))
    uf = user_features.set_index(user_features["user_id"].astype(object)).reindex(users.ids)[spec.user_features]
    _log(f"model: training the two-tower on {len(inter):,} interactions, {len(items):,} items, {len(users):,} users")
    tt = train_two_tower(
        users, items, uf.to_numpy(np.float32), item_features[spec.item_features].to_numpy(np.float32),
        users.lookup(inter["user_id"]), items.lookup(inter["item_id"]), inter["timestamp"].to_numpy(),
        TwoTowerConfig(epochs=args.epochs),
    )  # fmt: skip
    counts = inter["item_id"].astype(object).value_counts().reindex(items.ids).fillna(0).to_numpy(np.float32)
    bundle = ModelBundle(
        spec=spec, user_features=user_features, item_features=item_features, user_history=build_user_history(ds, spec),
        items=tt.items, item_embeddings=tt.item_embeddings(), encoder=tt.encoder(), rankers={}, popularity=counts,
        two_tower=tt,
    )  # fmt: skip
    train_s = round(time.perf_counter() - started, 1)
    version = Registry(root).create(lambda p: save_bundle(bundle, p), {"benchmark": params, "train_s": train_s})
    _log(f"model: trained in {train_s}s -> {root / version}")
    return root / version


# -- the service ---------------------------------------------------------------------------------------------
class _Service:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.env, self.log = env, log

    def __enter__(self) -> str:
        from recsys.common.clients import wait_ready

        with open(self.log, "w") as out:
            self.proc = children.spawn(
                [sys.executable, "-m", "recsys.cli", "candidates", "serve", "--port", str(self.port)],
                env=self.env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            wait_ready(f"127.0.0.1:{self.port}", timeout_s=300)
        except BaseException:
            self.__exit__()
            raise
        return f"127.0.0.1:{self.port}"

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def _requests(model_dir: Path, n: int, seed: int) -> list[tuple[str, list[str], list[str], np.ndarray]]:
    """(user, feature names, recent items most recent first, feature row) for n random users."""
    import pandas as pd

    from recsys.model.bundle import load_spec
    from recsys.model.layout import BundleLayout

    spec = load_spec(model_dir)
    users = pd.read_parquet(BundleLayout(model_dir).user_features)
    history = pd.read_parquet(BundleLayout(model_dir).user_history)
    recent = {str(u): list(h) for u, h in zip(history["user_id"], history["recent_item_ids"], strict=True)}
    rows = users.set_index(users["user_id"].astype(str))[spec.user_features]
    picks = np.random.default_rng(seed).choice(len(rows), size=n, replace=True)
    out = []
    for i in picks:
        user = str(rows.index[i])
        out.append((user, spec.user_features, recent.get(user, [])[::-1], rows.iloc[i].to_numpy(np.float32)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=100_000, help="catalogue size served")
    parser.add_argument("--train-items", type=int, default=100_000, help="items of the training dataset")
    parser.add_argument("--interactions", type=int, default=400_000, help="interactions of the training dataset")
    parser.add_argument("--epochs", type=int, default=3, help="two-tower training epochs")
    parser.add_argument("--requests", type=int, default=1000, help="timed Retrieve calls")
    parser.add_argument("--warmup", type=int, default=100, help="untimed calls first")
    parser.add_argument("--k", type=int, default=300)
    parser.add_argument("--work", type=Path, default=REPO / "var" / "bench" / "retrieval")
    parser.add_argument("--milvus-server", action="store_true", help="index into an embedded Milvus standalone")
    parser.add_argument(
        "--index-type", default=None, help="RECSYS_MILVUS_INDEX_TYPE (default: FLAT; HNSW with --milvus-server)"
    )
    parser.add_argument("--index-params", default=None, help="RECSYS_MILVUS_INDEX_PARAMS JSON")
    parser.add_argument("--search-params", default=None, help="RECSYS_MILVUS_SEARCH_PARAMS JSON")
    args = parser.parse_args()
    args.train_items = min(args.train_items, args.items)

    from google.protobuf.json_format import ParseDict  # noqa: F401  (import cost outside the timings)

    from recsys.common.clients import insecure_channel
    from recsys.model.bundle import load_item_ids
    from recsys.model.layout import BundleLayout
    from recsys.model.user_encoder import UserEncoder
    from recsys.v1 import candidates_pb2, candidates_pb2_grpc, features_pb2

    args.work.mkdir(parents=True, exist_ok=True)
    model_dir = _train_version(args.work / "models", args)
    if args.items > args.train_items:
        model_dir = extend_catalogue(model_dir, args.work / "catalogues", args.items)
    run = args.work / f"run-{os.getpid()}"
    run.mkdir()
    index_type = args.index_type or ("HNSW" if args.milvus_server else "FLAT")
    index_params = args.index_params or ('{"M": 16, "efConstruction": 200}' if index_type == "HNSW" else "{}")
    search_params = args.search_params or ('{"ef": 300}' if index_type == "HNSW" else "{}")
    env = dict(os.environ)
    env.update(
        RECSYS_VAR_DIR=str(run),
        RECSYS_MODELS_DIR=str(model_dir),
        RECSYS_FEATURES_ADDR="",
        RECSYS_LOG_LEVEL="WARNING",
        RECSYS_MILVUS_INDEX_TYPE=index_type,
        RECSYS_MILVUS_INDEX_PARAMS=index_params,
        RECSYS_MILVUS_SEARCH_PARAMS=search_params,
        RECSYS_MILVUS_TIMEOUT_MS="1000",  # measure Milvus, not the fallback
        RECSYS_CANDIDATES_MAX_K=str(max(1000, args.k)),
    )
    server = MilvusServer(run / "milvus-server") if args.milvus_server else None
    try:
        uri = server.__enter__() if server else str(run / "milvus" / "recsys.db")
        env["RECSYS_MILVUS_URI"] = uri
        started = time.perf_counter()
        built = subprocess.run(
            [sys.executable, "-m", "recsys.cli", "index", "--quiet"], env=env, capture_output=True, text=True
        )
        index_wall_s = time.perf_counter() - started
        if built.returncode != 0:
            raise SystemExit(f"recsys index failed:\n{built.stderr[-3000:]}")
        index = json.loads(built.stdout.strip().splitlines()[-1])
        _log(f"index: {index['items']:,} items, {index['index_type']}, build {index['build_seconds']}s "
             f"(command {index_wall_s:.1f}s)")  # fmt: skip

        version = BundleLayout(model_dir)
        encoder = UserEncoder.load(version.user_tower)
        item_ids = np.asarray(load_item_ids(model_dir), dtype=object)
        item_emb = np.load(version.item_embeddings)
        position = {item: i for i, item in enumerate(item_ids)}
        calls = _requests(model_dir, args.warmup + args.requests, seed=7)
        latencies, answers, degraded = [], [], 0
        with _Service(env, run / "candidates.log") as address, insecure_channel(address) as channel:
            stub = candidates_pb2_grpc.CandidateServiceStub(channel)
            for n, (user, names, recent, row) in enumerate(calls):
                request = candidates_pb2.RetrieveRequest(
                    user_id=user,
                    k=args.k,
                    recent_item_ids=recent,
                    user_features=features_pb2.FeatureMatrix(names=names, entity_ids=[user], found=[True], values=row),
                )
                t0 = time.perf_counter()
                response = stub.Retrieve(request, timeout=10)
                elapsed = time.perf_counter() - t0
                if n < args.warmup:
                    continue
                latencies.append(elapsed)
                degraded += response.degraded
                answers.append({c.item_id for c in response.candidates})
        # exact search after the timed loop: the client's BLAS and torch threads would compete with the server
        recalls, id_recalls = [], []
        for (user, _names, recent, row), got in zip(calls[args.warmup :], answers, strict=True):
            vector = encoder.embed(user, row, recent[::-1])
            scores = item_emb @ vector
            seen = [position[i] for i in recent if i in position]
            scores[seen] = -np.inf
            top = np.argpartition(-scores, args.k)[: args.k]
            id_recalls.append(len(set(item_ids[top]) & got) / args.k)
            # Items with identical embeddings tie, and exact search picks among tied items arbitrarily: a
            # returned item counts when its exact score reaches the k-th best (ann-benchmarks' k-nn recall).
            threshold = scores[top].min() - TIE_EPS
            hits = sum(1 for item in got if item in position and scores[position[item]] >= threshold)
            recalls.append(min(hits, args.k) / args.k)
    finally:
        if server:
            server.__exit__()
        shutil.rmtree(run, ignore_errors=True)
    ms = np.asarray(latencies) * 1000.0
    result = {
        "recall": round(float(np.mean(recalls)), 4),
        "recall_min": round(float(np.min(recalls)), 4),
        "recall_by_id": round(float(np.mean(id_recalls)), 4),
        "duplicate_share": round(1.0 - len(np.unique(item_emb, axis=0)) / len(item_emb), 4),
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "mean_ms": round(float(ms.mean()), 3),
        "items": int(index["items"]),
        "k": args.k,
        "requests": len(latencies),
        "degraded": int(degraded),
        "deployment": "milvus-server-2.3.5" if args.milvus_server else "milvus-lite-2.5.1",
        "index_type": index["index_type"],
        "index_params": json.loads(index_params),
        "search_params": json.loads(search_params),
        "index_build_s": index["build_seconds"],
        "index_command_s": round(index_wall_s, 1),
        "cpus": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    print(f"Retrieve top-{args.k} over gRPC, {result['items']:,} items ({result['deployment']}, "
          f"{result['index_type']}): "
          f"recall@{args.k} {result['recall']:.4f}, p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms, "
          f"index build {result['index_build_s']}s")  # fmt: skip
    print(json.dumps(result))


if __name__ == "__main__":
    main()
