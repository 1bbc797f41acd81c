"""Offline quality benchmark: the two-stage pipeline against PureSVD, EASE and popularity.

For MovieLens ml-latest-small (when ../shared/data/ml-latest-small exists; read with the Foundation
loader) and a synthetic set: per-user temporal split (last 20% held out), train every model on the
train part, and report retrieval metrics (two-tower, ALS, popularity, PureSVD with 50 factors, EASE),
ranking AUC / logloss / F1 (DCN-v2, LightGBM) and the two-stage Recall@K / NDCG@K, with the targets:
two-stage Recall@20 >= PureSVD's and >= 1.8x popularity's (EASE: the real goal); DCN-v2 AUC within
0.01 of LightGBM's or better, both >= 0.75.

Then times `recsys train` (the real command, in a subprocess) on ml-latest-small (or the synthetic set)
and checks that the same seed gives the same metrics (two evaluations of a small synthetic set).
Reports (metrics.json + report.html) go to --out. Prints figures, then one JSON object on the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from recsys.common.entry import process_defaults

process_defaults()  # the OpenMP wait policy, before torch and LightGBM load

from recsys.training.data.loaders import load_dataset, save_dataset  # noqa: E402
from recsys.training.data.synthetic import generate  # noqa: E402
from recsys.training.evaluate import evaluate  # noqa: E402
from recsys.training.pipeline import TrainConfig  # noqa: E402
from recsys.training.report import clean, write_report  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ML_SMALL = REPO.parent / "shared" / "data" / "ml-latest-small"


def summarize(r: dict) -> dict:
    """Headline figures and target checks of one evaluation."""
    ret, two, rank = r["retrieval"], r["two_stage"], r["ranking"]
    default = r["default_ranker"]
    r20 = {name: m["recall@20"] for name, m in ret.items()}
    two20 = {name: m["recall@20"] for name, m in two.items()}
    main = two20[default]
    pop = r20["popularity"]
    auc = {name: m["auc"] for name, m in rank.items()}
    out = {
        "two_stage_recall@20": main,
        "two_stage_ndcg@20": two[default]["ndcg@20"],
        "two_stage_recall@20_by_ranker": two20,
        "two_stage_ndcg@20_by_ranker": {n: m["ndcg@20"] for n, m in two.items()},
        "retrieval_recall@20": r20,
        "retrieval_ndcg@20": {name: m["ndcg@20"] for name, m in ret.items()},
        "retrieval_recall@300": {name: m["recall@300"] for name, m in ret.items()},
        "auc": auc,
        "logloss": {name: m["logloss"] for name, m in rank.items()},
        "f1": {name: m["f1"] for name, m in rank.items()},
        "ratio_vs_popularity": main / pop if pop else None,
        "targets": {
            "two_stage_ge_puresvd": main >= r20["puresvd"],
            "two_stage_ge_1.8x_popularity": main >= 1.8 * pop,
            "two_stage_ge_ease": main >= r20["ease"] if "ease" in r20 else None,
            "dcn_auc_within_0.01_of_lgbm": auc["dcn"] >= auc["lgbm"] - 0.01,
            "auc_ge_0.75": min(auc.values()) >= 0.75,
        },
        "timings": r["timings"],
    }
    return out


def print_summary(name: str, r: dict, s: dict) -> None:
    print(f"\n== {name}: {r['n_users']} users, {r['n_items']} items, {r['n_train']} train / {r['n_test']} test")
    print(f"{'model':<22}{'R@10':>8}{'R@20':>8}{'R@50':>8}{'R@100':>8}{'R@300':>8}{'N@20':>8}{'cov@20':>8}")
    rows = [(n, m) for n, m in r["retrieval"].items()] + [(f"two-stage {n}", m) for n, m in r["two_stage"].items()]
    for n, m in rows:
        cells = "".join(f"{m.get(k, float('nan')):>8.4f}" for k in
                        ("recall@10", "recall@20", "recall@50", "recall@100", "recall@300", "ndcg@20", "coverage@20"))
        print(f"{n:<22}{cells}")
    for n, m in r["ranking"].items():
        print(f"ranker {n:<6} AUC {m['auc']:.4f}  per-user AUC {m['gauc']:.4f}  logloss {m['logloss']:.4f}  "
              f"F1 {m['f1']:.4f} (threshold {m['f1_threshold']:.3f}, {m['n_examples']} examples)")
    print(f"two-stage ({r['default_ranker']}) Recall@20 = {s['two_stage_recall@20']:.4f} = "
          f"{s['ratio_vs_popularity']:.2f}x popularity; targets: {s['targets']}")
    print(f"timings (s): {r['timings']}")


def time_cli_train(data: Path, seed: int) -> dict:
    """Run `recsys train` as a subprocess; wall time and CPU seconds it used."""
    with tempfile.TemporaryDirectory(prefix="recsys-bench-models-") as models:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "recsys.cli", "train", "--data", str(data), "--out", models, "--seed", str(seed),
             "--quiet"],
            capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"recsys train failed ({done.returncode}):\n{done.stderr[-3000:]}")
    info = json.loads(done.stdout.strip().splitlines()[-1])
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "inner_train_s": info["train_s"],
            "load_avg_1m": round(os.getloadavg()[0], 2), "under_5_min": wall < 300}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ml", default=str(ML_SMALL), help="MovieLens folder (skipped when absent)")
    parser.add_argument("--synthetic-interactions", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(REPO / "var" / "benchmarks" / "quality"), help="report folder")
    parser.add_argument("--no-train-timing", action="store_true")
    parser.add_argument("--no-determinism", action="store_true")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)

    cfg = TrainConfig().with_seed(args.seed)
    out = Path(args.out)
    datasets: list[tuple[str, object]] = []
    ml = Path(args.ml)
    if ml.exists():
        datasets.append(("ml-latest-small", load_dataset(ml)))
    else:
        print(f"{ml} not found: MovieLens skipped")
    synthetic = generate(n_interactions=args.synthetic_interactions, seed=args.seed)
    datasets.append(("synthetic", synthetic))

    summary: dict = {"benchmark": "quality", "seed": args.seed, "datasets": {}}
    for name, ds in datasets:
        t0 = time.perf_counter()
        results = evaluate(ds, "temporal", cfg, progress=not args.quiet)
        results["timings"]["total_s"] = round(time.perf_counter() - t0, 1)
        write_report(results, out / name)
        s = summarize(results)
        print_summary(name, results, s)
        summary["datasets"][name] = s

    if not args.no_train_timing:
        if ml.exists():
            target, label = ml, "ml-latest-small"
        else:
            tmp = Path(tempfile.mkdtemp(prefix="recsys-bench-data-"))
            target, label = save_dataset(synthetic, tmp / "synthetic"), "synthetic"
        timing = time_cli_train(target, args.seed)
        timing["dataset"] = label
        print(f"\n`recsys train` on {label}: {timing['wall_s']} s wall, {timing['cpu_s']} s CPU "
              f"(load average {timing['load_avg_1m']})")
        summary["train_cli"] = timing

    if not args.no_determinism:
        small = generate(n_interactions=20_000, n_users=400, n_items=600, seed=args.seed + 7)
        a = evaluate(small, "temporal", cfg, progress=False)
        b = evaluate(small, "temporal", cfg, progress=False)
        keys = ("retrieval", "ranking", "two_stage")
        same = all(json.dumps(clean(a[k]), sort_keys=True) == json.dumps(clean(b[k]), sort_keys=True) for k in keys)
        print(f"\nsame seed, same metrics (two evaluations of a 20k-interaction synthetic set): {same}")
        summary["same_seed_same_metrics"] = same

    print(f"reports: {out}")
    print(json.dumps(clean(summary)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
