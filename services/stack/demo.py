"""`recsys demo`: the main job on one machine, end to end.

generate data → train every model → materialize features → index embeddings → start every service
(Milvus Lite, SQLite online store, local Ray, the local Kafka) → simulate traffic that clicks by the
synthetic ground truth → print live CTR per variant from the monitoring service → summary.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from recsys.client import RecsysClient
from recsys.common import children
from recsys.common.errors import CliError
from recsys.stack.local import StackConfig, start_stack
from recsys.stack.simulator import by_variant, simulate
from recsys.training.data.loaders import load_dataset

log = logging.getLogger("recsys.demo")


@dataclass
class DemoOptions:
    var_dir: Path
    kafka_bootstrap: str
    users: int = 3000
    items: int = 2000
    interactions: int = 150_000
    seed: int = 42
    seconds: float = 60.0
    concurrency: int = 4
    keep_running: bool = False
    data: str | None = None  # an existing dataset folder instead of generating one
    #: When the generated interactions end: "now", so that the traffic the stack logs follows on from them
    #: (a retrain on base + log then sees one continuous history, as a live system would).
    data_end: str = "now"


def _step(title: str) -> float:
    print(f"\n==> {title}", flush=True)
    return time.perf_counter()


def _done(started: float) -> float:
    seconds = time.perf_counter() - started
    print(f"    done in {seconds:.1f} s", flush=True)
    return round(seconds, 1)


def _run_cli(cfg: StackConfig, argv: list[str]) -> None:
    """One `recsys` step as its own process, with the stack's environment (folders, broker)."""
    proc = children.spawn([sys.executable, "-m", "recsys.cli", *argv], env={**os.environ, **cfg.env()})
    try:
        code = proc.wait()
    except BaseException:  # Ctrl-C reaches only this process (the step has a session of its own): stop the step
        children.stop(proc)
        raise
    if code != 0:
        raise CliError(f"`recsys {' '.join(argv)}` failed with exit code {code}")


def prepare(opts: DemoOptions, cfg: StackConfig | None = None) -> tuple[Path, StackConfig]:
    """Data, models, features and index: everything the services load at start-up."""
    cfg = cfg or StackConfig.default(opts.var_dir, opts.kafka_bootstrap)
    data_dir = Path(opts.data) if opts.data else opts.var_dir / "demo-data"
    if not opts.data and not (data_dir / "dataset.json").exists():
        t = _step(f"generate a synthetic dataset ({opts.users} users, {opts.items} items, {opts.interactions} events)")
        _run_cli(cfg, ["data", "generate", "--out", str(data_dir), "--users", str(opts.users),
                       "--items", str(opts.items), "--interactions", str(opts.interactions),
                       "--seed", str(opts.seed), "--end", opts.data_end, "--force"])
        _done(t)
    t = _step("train two-tower, MF, DCN-v2 and LightGBM into the model registry")
    quiet = [] if sys.stderr.isatty() else ["--quiet"]  # a bar per model with its time left, at a terminal
    _run_cli(cfg, ["train", "--data", str(data_dir), "--out", str(cfg.models_dir), "--seed", str(opts.seed), *quiet])
    _done(t)
    write_drift_reference(data_dir, cfg)
    compile_ranker(cfg)
    materialize_and_index(cfg)
    return data_dir, cfg


def materialize_and_index(cfg: StackConfig) -> dict[str, float]:
    """The latest version's features into the online store and its embeddings into Milvus; seconds of each."""
    t = _step("materialize features into the Feast online store (SQLite)")
    _run_cli(cfg, ["materialize"])
    seconds = {"materialize_s": _done(t)}
    t = _step("index item embeddings into Milvus (Milvus Lite unless RECSYS_MILVUS_URI names a server)")
    _run_cli(cfg, ["index", "--quiet"])
    seconds["index_s"] = _done(t)
    return seconds


def compile_ranker(cfg: StackConfig) -> None:
    """Compile the latest LightGBM forest into the stack's cache (a cache hit when it already is)."""
    t = _step("compile the LightGBM forest for this CPU (the ranking replicas load it from the cache)")
    try:
        _run_cli(cfg, ["ranking", "compile"])
    except CliError as exc:  # the replicas compile it themselves, serving with LightGBM meanwhile
        print(f"  {exc}; continuing")
    _done(t)


def write_drift_reference(data_dir: Path, cfg: StackConfig, rows: int = 20_000) -> Path:
    """The monitoring service's drift reference: the training items' features, weighted by interactions
    (what users were served and chose), from the registry version just trained."""
    from recsys.model.layout import BundleLayout
    from recsys.model.registry import resolve_model_dir

    items = pd.read_parquet(BundleLayout(resolve_model_dir(cfg.models_dir)).item_features)
    interactions = pd.read_parquet(data_dir / "interactions.parquet", columns=["item_id"])
    sample = interactions.sample(n=min(rows, len(interactions)), random_state=0)
    reference = sample.merge(items, on="item_id", how="inner").drop(columns=["item_id", "event_timestamp"],
                                                                   errors="ignore")
    path = cfg.var_dir / "monitoring" / "reference.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    reference.to_parquet(path, index=False)
    return path


def run_demo(opts: DemoOptions) -> dict:
    """The whole main job; returns the summary it prints."""
    data_dir, cfg = prepare(opts)
    dataset = load_dataset(data_dir)
    truth = dataset.meta.get("truth")
    users = list(dataset.interactions["user_id"].astype(str).unique())
    t = _step("start features, candidates, ranking, monitoring and gateway (each its own process)")
    supervisor = start_stack(cfg)
    _done(t)
    try:
        gateway, monitoring = cfg.address("gateway"), cfg.address("monitoring")
        print(f"    gateway {gateway} · monitoring {monitoring} · logs {cfg.var_dir / 'logs'}")
        print(f"    dashboard {cfg.dashboard_url} (live while the demo runs; --keep-running leaves it up)")
        t = _step(f"simulate {opts.seconds:.0f} s of traffic ({opts.concurrency} clients) clicking by ground truth")
        stats = simulate(gateway, truth, users, seconds=opts.seconds, concurrency=opts.concurrency, seed=opts.seed)
        _done(t)
        time.sleep(3)  # let the last clicks reach monitoring
        with RecsysClient(gateway, monitoring=monitoring) as client:
            online = client.online_metrics()
        summary = {
            "dashboard": cfg.dashboard_url,
            "traffic": stats.summary(),
            "simulated_by_variant": by_variant(stats),
            "monitoring": {
                "impressions": online.impressions, "clicks": online.clicks, "ctr": round(online.ctr, 4),
                "catalogue_coverage": round(online.catalogue_coverage, 4),
                "variants": {v.variant: {"impressions": v.impressions, "clicks": v.clicks, "ctr": round(v.ctr, 4),
                                         "ctr_lift": round(v.ctr_lift, 4),
                                         "ci": [round(v.ctr_lift_ci_low, 4), round(v.ctr_lift_ci_high, 4)]}
                             for v in online.variants},
            },
        }
        _print_summary(summary)
        if opts.keep_running:
            print(f"\nservices keep running; dashboard {cfg.dashboard_url}; Ctrl-C stops them", flush=True)
            while True:
                time.sleep(3600)
        return summary
    finally:
        supervisor.stop()


def _print_summary(summary: dict) -> None:
    traffic = summary["traffic"]
    print("\n==> summary")
    print(f"    requests {traffic['requests']}  errors {traffic['errors']}  degraded {traffic['degraded_rate']:.1%}")
    print(f"    latency p50 {traffic['p50_ms']:.1f} ms  p95 {traffic['p95_ms']:.1f} ms  p99 {traffic['p99_ms']:.1f} ms")
    print("    live CTR per variant (monitoring service):")
    for name, v in summary["monitoring"]["variants"].items():
        print(f"      {name:<10} impressions {v['impressions']:>7}  clicks {v['clicks']:>6}  CTR {v['ctr']:.4f}"
              f"  lift {v['ctr_lift']:+.3f} [{v['ci'][0]:+.3f}, {v['ci'][1]:+.3f}]")
    print(json.dumps(summary, default=str))
