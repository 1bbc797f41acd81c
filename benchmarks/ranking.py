"""Ranking benchmark: 300 candidates through Ray Serve's gRPC ingress, DCN-v2 and LightGBM.

1. Models: `--models-dir` (a registry holding both rankers; trained into when it has none), else a temporary
   registry, trained by the real training pipeline on a synthetic dataset with the rankers at their production
   sizes (DCN-v2: 3 cross layers + 256/128 deep; LightGBM: 300 trees): latency depends on the model size, not
   its quality.
2. Starts the ranking service in this process (`RankingRuntime`: a local Ray with 2 CPUs, Serve's gRPC
   proxy on a free port, Ray state under a temporary folder), stopped at the end even on failure.
3. Requests carry a real user's feature row and 300 items' rows from the version's feature tables plus
   retrieval scores, exactly what the gateway sends.
4. Per ranker: latency at concurrency 1 (sequential calls, client-measured, after a warm-up), the model
   alone on the same input (in this process), and throughput at concurrency `--concurrency` with dynamic
   batching on and then off (switched in place through the deployment's user_config), with the mean batch
   size the replica reported.

Prints figures, then one JSON object on the last line: `p50_ms` / `p99_ms` are the worst of the two
rankers at concurrency 1, `rps` the lower of their throughputs at `--concurrency` with batching as configured
(RECSYS_RANKING_BATCHING, off by default); `models` has the detail.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

from recsys.common.ports import free_port

MODELS = ("dcn", "lightgbm")
APP = "ranking-bench"
TARGET_P99_MS = 8.0


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def train_registry(root: Path, interactions: int) -> None:
    """One registry version from the real pipeline; small retrieval models, production-size rankers."""
    from recsys.model.bundle import save_bundle
    from recsys.model.rankers.dcn import DCNConfig
    from recsys.model.rankers.lightgbm import LGBMConfig
    from recsys.model.registry import Registry
    from recsys.training.data import generate
    from recsys.training.mf import ALSConfig
    from recsys.training.pipeline import TrainConfig, train_all
    from recsys.training.two_tower import TwoTowerConfig

    cfg = TrainConfig(
        threads=2,
        two_tower=TwoTowerConfig(epochs=1, dim=32, hidden=64),
        als=ALSConfig(factors=16, iterations=3),
        dcn=DCNConfig(epochs=1),
        lgbm=LGBMConfig(),
    )
    start = time.perf_counter()
    bundle, _ = train_all(generate(interactions, seed=0), cfg, progress=False)
    version = Registry(root).create(lambda path: save_bundle(bundle, path), {"config": cfg.to_dict()})
    print(f"trained registry version {version} in {time.perf_counter() - start:.1f}s ({interactions} interactions)")


class Requests:
    """Rank requests from a registry version's feature tables."""

    def __init__(self, version_dir: Path, candidates: int) -> None:
        import pandas as pd

        from recsys.model.bundle import load_spec
        from recsys.model.layout import BundleLayout

        self.spec = load_spec(version_dir)
        users = pd.read_parquet(BundleLayout(version_dir).user_features)
        items = pd.read_parquet(BundleLayout(version_dir).item_features)
        self.users = users.set_index(users["user_id"].astype(str))[self.spec.user_features].astype(np.float32)
        self.items = items.set_index(items["item_id"].astype(str))[self.spec.item_features].astype(np.float32)
        if len(self.items) < candidates:
            raise SystemExit(f"the catalogue has {len(self.items)} items, fewer than {candidates} candidates")
        self.candidates = candidates

    def make(self, seed: int, model: str):
        from recsys.v1 import features_pb2, ranking_pb2

        rng = np.random.default_rng(seed)
        user_id = str(self.users.index[seed % len(self.users)])
        item_ids = [str(i) for i in rng.choice(self.items.index.to_numpy(), self.candidates, replace=False)]
        values = self.items.loc[item_ids].to_numpy(np.float32)
        return ranking_pb2.RankRequest(
            user_id=user_id,
            item_ids=item_ids,
            user_features=features_pb2.FeatureMatrix(
                names=self.spec.user_features, entity_ids=[user_id], values=self.users.loc[user_id].tolist()
            ),
            item_features=features_pb2.FeatureMatrix(
                names=self.spec.item_features, entity_ids=item_ids, values=values.ravel().tolist()
            ),
            retrieval_scores=rng.uniform(-1, 1, len(item_ids)).astype(np.float32).tolist(),
            model=model,
        )


def serve_pids(app: str) -> dict[str, int]:
    """PIDs of Serve's proxy and of this app's replica (from the GCS actor table)."""
    import ray

    pids = {}
    for actor in ray._private.state.actors().values():
        name, state = actor.get("ActorClassName", ""), actor.get("State")
        if state != "ALIVE":
            continue
        if name == "ProxyActor":
            pids["proxy"] = int(actor["Pid"])
        elif name.startswith(f"ServeReplica:{app}:"):
            pids["replica"] = int(actor["Pid"])
    pids["client"] = os.getpid()
    return pids


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """User + system CPU seconds used so far by each process."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for role, pid in pids.items():
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        out[role] = (int(fields[11]) + int(fields[12])) / tick
    return out


def warm_up(stub, requests: list, metadata, seconds: float) -> None:
    """Untimed calls for `seconds` (at least 50): a fresh Ray node keeps settling for ~20 s after Serve is
    ready (agents, metrics registration; measured: whichever ranker ran first had the worse p99), and that
    is not the steady state measured."""
    until, i = time.perf_counter() + seconds, 0
    while i < 50 or time.perf_counter() < until:
        stub.Rank(requests[i % len(requests)], metadata=metadata, timeout=10)
        i += 1


def latency(stub, requests: list, n: int, metadata) -> list[float]:
    """Client-side milliseconds of n sequential calls."""
    out = []
    for i in range(n):
        start = time.perf_counter()
        stub.Rank(requests[i % len(requests)], metadata=metadata, timeout=10)
        out.append((time.perf_counter() - start) * 1000.0)
    return out


def throughput(target: str, requests: list, concurrency: int, seconds: float, metadata) -> tuple[float, int]:
    """Requests/s of `concurrency` callers in flight (asyncio gRPC client); returns (rps, errors)."""
    import grpc

    from recsys.v1 import ranking_pb2_grpc

    async def run() -> tuple[float, int]:
        done, errors = 0, 0
        async with grpc.aio.insecure_channel(target) as channel:
            stub = ranking_pb2_grpc.RankingServiceStub(channel)
            for r in requests[:concurrency]:
                await stub.Rank(r, metadata=metadata, timeout=10)
            deadline = time.perf_counter() + seconds

            async def worker(k: int) -> None:
                nonlocal done, errors
                i = k
                while time.perf_counter() < deadline:
                    try:
                        await stub.Rank(requests[i % len(requests)], metadata=metadata, timeout=10)
                        done += 1
                    except grpc.aio.AioRpcError:
                        errors += 1
                    i += concurrency

            start = time.perf_counter()
            await asyncio.gather(*(worker(k) for k in range(concurrency)))
            return done / (time.perf_counter() - start), errors

    return asyncio.run(run())


def batch_stats(metrics_port: int, model: str) -> tuple[float, float]:
    """(sum, count) of the replica's batch-size histogram for `model`, from Ray's metrics export.

    Computed from the buckets (one per size up to 16, so exact there): the exported `_sum` of Ray's
    histograms did not match the observations here.
    """
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    cumulative: dict[float, float] = {}
    for line in text.splitlines():
        if "recsys_ranking_batch_requests_bucket{" not in line or f'model="{model}"' not in line:
            continue
        le = re.search(r'le="([^"]+)"', line)
        if le and le.group(1) != "+Inf":
            bound = float(le.group(1))
            cumulative[bound] = cumulative.get(bound, 0.0) + float(line.rsplit(" ", 1)[1])
    total = count = previous = 0.0
    for bound in sorted(cumulative):
        in_bucket = cumulative[bound] - previous
        total += bound * in_bucket
        count += in_bucket
        previous = cumulative[bound]
    return total, count


def wait_for_metrics(metrics_port: int, model: str, before: tuple[float, float], timeout_s: float = 20.0):
    """Ray exports metrics every few seconds: wait until the histogram moved past `before`."""
    deadline = time.time() + timeout_s
    now = batch_stats(metrics_port, model)
    while now[1] <= before[1] and time.time() < deadline:
        time.sleep(1.0)
        now = batch_stats(metrics_port, model)
    time.sleep(3.0)  # one more export interval, so the whole phase is in
    return batch_stats(metrics_port, model)


def model_only(models_dir: str, version: str, model: str, requests: list, n: int) -> list[float]:
    """Milliseconds of the ranker alone (validation, input building, scoring) on the same requests, in this
    process, with the service's thread settings."""
    from recsys.ranking import inputs, rankers
    from recsys.ranking.settings import RankingSettings

    settings = RankingSettings.from_env()
    rankers.configure_threads(settings.torch_threads)
    ranker = rankers.load_ranker(models_dir, model, version, lgbm_threads=settings.lgbm_threads,
                                 compile_dir=settings.lgbm_compile_dir)
    if ranker.scorer is not None:
        ranker.scorer.ready.wait(300)
    out = []
    for i in range(n + 20):
        r = requests[i % len(requests)]
        start = time.perf_counter()
        cand = inputs.check_candidates(r, 10_000)
        user = inputs.user_row(r.user_features, ranker.user_features)
        items = inputs.item_rows(r.item_features, cand.item_ids, ranker.item_features)
        ranker.score(user, items, cand.retrieval_scores)
        if i >= 20:
            out.append((time.perf_counter() - start) * 1000.0)
    return out


def precompile_lightgbm(models_dir: str, settings) -> bool:
    """Compile the latest LightGBM forest into the service's cache before the service starts, so that the
    replica loads it at once instead of serving with LightGBM's predictor while it compiles."""
    from recsys.ranking import rankers

    if not settings.lgbm_compile_dir:
        return False
    version = rankers.latest_version(models_dir, "lightgbm")
    start = time.perf_counter()
    scorer = rankers.compile_lightgbm(models_dir, version, settings.lgbm_compile_dir)
    state = "ready" if scorer.compiled else f"FAILED ({scorer.error})"
    print(f"lightgbm {version}: compiled forest {state} in {time.perf_counter() - start:.1f}s "
          f"(cache {settings.lgbm_compile_dir})")
    return scorer.compiled


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--models-dir", default="", help="registry with both rankers (trained into it when it has none; default: temp)"
    )
    parser.add_argument("--interactions", type=int, default=20_000, help="synthetic interactions when training")
    parser.add_argument("--candidates", type=int, default=300)
    parser.add_argument("--requests", type=int, default=1000, help="sequential calls per ranker")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=8.0, help="per throughput phase")
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--warmup-s", type=float, default=10.0, help="untimed calls before each ranker's c=1 run")
    parser.add_argument("--batch-wait-ms", type=float, default=0.0)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="rkb-", dir="/tmp"))  # short: Ray's unix sockets live below it
    runtime = None
    try:
        models_dir = args.models_dir or str(work / "models")
        from recsys.ranking.rankers import list_versions

        if not all(list_versions(models_dir, m) for m in MODELS):
            train_registry(Path(models_dir), args.interactions)
        port, metrics_port = free_port(), free_port()
        os.environ.update(
            {
                "RECSYS_MODELS_DIR": models_dir,
                "RECSYS_RANKING_APP": APP,
                "RECSYS_RANKING_PORT": str(port),
                "RECSYS_METRICS_PORT": str(metrics_port),
                "RECSYS_RAY_TEMP_DIR": str(work / "ray"),
                "RECSYS_RANKING_WATCH_S": "0",
                "RECSYS_RANKING_FETCH_FEATURES": "false",
                "RECSYS_RANKING_MAX_BATCH": str(args.max_batch),
                "RECSYS_RANKING_BATCH_WAIT_MS": str(args.batch_wait_ms),
                "RECSYS_RANKING_MAX_CANDIDATES": str(max(1000, args.candidates)),
                "RECSYS_LOG_LEVEL": "WARNING",
            }
        )
        import grpc

        from recsys.common.logs import configure_logging
        from recsys.model.registry import Registry
        from recsys.ranking.runtime import RankingRuntime
        from recsys.ranking.settings import RankingSettings
        from recsys.v1 import ranking_pb2_grpc

        configure_logging("ranking-bench", "WARNING")
        settings = RankingSettings.from_env()
        compiled = precompile_lightgbm(models_dir, settings)
        start = time.perf_counter()
        runtime = RankingRuntime(settings, ray_address="").start()
        print(f"ray + serve + ranker ready in {time.perf_counter() - start:.1f}s; versions {runtime.versions}")
        missing = [m for m in MODELS if m not in runtime.versions]
        if missing:
            raise SystemExit(f"the registry {models_dir} has no {', '.join(missing)} ranker")
        version_dir = Registry(models_dir).path(runtime.versions["dcn"])
        maker = Requests(version_dir, args.candidates)
        metadata = (("application", APP),)
        target = f"127.0.0.1:{port}"
        report: dict[str, dict] = {}
        with grpc.insecure_channel(target) as channel:
            stub = ranking_pb2_grpc.RankingServiceStub(channel)
            for model in MODELS:
                requests = [maker.make(seed, model) for seed in range(64)]
                pids = serve_pids(APP)
                warm_up(stub, requests, metadata, args.warmup_s)
                cpu_before = cpu_seconds(pids)
                lat = latency(stub, requests, args.requests, metadata)
                cpu_after = cpu_seconds(pids)
                cpu_ms = {
                    role: round((cpu_after[role] - cpu_before[role]) * 1000.0 / args.requests, 3)
                    for role in pids
                }
                alone = model_only(models_dir, runtime.versions[model], model, requests, 300)
                row = {
                    "version": runtime.versions[model],
                    "p50_ms": round(_pct(lat, 50), 3),
                    "p90_ms": round(_pct(lat, 90), 3),
                    "p99_ms": round(_pct(lat, 99), 3),
                    "mean_ms": round(float(np.mean(lat)), 3),
                    "model_only_p50_ms": round(_pct(alone, 50), 3),
                    "model_only_p99_ms": round(_pct(alone, 99), 3),
                    "cpu_ms_per_request": cpu_ms,
                }
                print(
                    f"{model:8s} c=1  p50 {row['p50_ms']:.2f} ms  p90 {row['p90_ms']:.2f}  p99 {row['p99_ms']:.2f}  "
                    f"(model alone p50 {row['model_only_p50_ms']:.2f} / p99 {row['model_only_p99_ms']:.2f} ms)"
                )
                print(f"{model:8s} c=1  CPU ms per request: {cpu_ms}")
                for batching in (True, False):
                    runtime.activate({}, batching=batching)
                    before = batch_stats(metrics_port, model)
                    rps, errors = throughput(target, requests, args.concurrency, args.seconds, metadata)
                    after = wait_for_metrics(metrics_port, model, before)
                    batches = after[1] - before[1]
                    mean_batch = (after[0] - before[0]) / batches if batches > 0 else float("nan")
                    key = "on" if batching else "off"
                    row[f"rps_batching_{key}"] = round(rps, 1)
                    row[f"mean_batch_{key}"] = round(mean_batch, 2)
                    row[f"errors_batching_{key}"] = errors
                    print(
                        f"{model:8s} c={args.concurrency}  batching {key:3s}: {rps:7.1f} req/s  "
                        f"mean batch {mean_batch:.2f}  errors {errors}"
                    )
                runtime.activate({}, batching=settings.batching)
                report[model] = row
        summary = {
            "p50_ms": max(r["p50_ms"] for r in report.values()),
            "p99_ms": max(r["p99_ms"] for r in report.values()),
            "rps": min(r[f"rps_batching_{'on' if settings.batching else 'off'}"] for r in report.values()),
            "candidates": args.candidates,
            "concurrency": args.concurrency,
            "batching_at_c1": settings.batching,
            "batch_wait_ms": settings.batch_wait_ms,
            "lgbm_threads": settings.lgbm_threads,
            "lgbm_compiled": compiled,
            "torch_threads": settings.torch_threads,
            "target_p99_ms": TARGET_P99_MS,
            "meets_target": all(r["p99_ms"] <= TARGET_P99_MS for r in report.values()),
            "load_avg_1m": round(os.getloadavg()[0], 2),
            "cpus": os.cpu_count(),
            "models": report,
        }
        print(json.dumps(summary))
        return 0
    finally:
        if runtime is not None:
            runtime.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
