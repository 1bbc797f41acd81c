"""Training speed against a baseline commit, on the same machine in the same run.

Runs the real commands, `recsys train` and then `recsys batch-recommend`, on two datasets: the demo's (3,000
users, 2,000 items, 150k events, as `make demo` generates it) and a MovieLens-100K-size one (ml-latest-small
when ../shared/data/ml-latest-small exists, else a synthetic set of 100k interactions on 943 users and 1,682
items). Each is run by this tree's code and by the baseline commit's (a `git worktree` of --baseline, imported
first through PYTHONPATH), alternating which goes first, --repeats times; the figure is the median wall time.
Machines differ 2x, so the ratio (baseline / this tree) is the figure that travels. Quality is not measured here
(the same seed gives the same models either way); `benchmarks/quality.py` holds it.

Prints a table, then one JSON object on the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ML_SMALL = REPO.parent / "shared" / "data" / "ml-latest-small"
DEMO = {"users": 3000, "items": 2000, "interactions": 150_000, "seed": 42}
ML100K_SIZE = {"users": 943, "items": 1682, "interactions": 100_000, "seed": 0}


def _cli(pythonpath: str | None) -> tuple[list[str], dict[str, str]]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath + os.pathsep + env.get("PYTHONPATH", "")
    return [sys.executable, "-m", "recsys.cli"], env


def _run(argv: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv[2:5])} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return time.perf_counter() - t0


def train_and_score(data: Path, work: Path, pythonpath: str | None, seed: int) -> dict[str, float]:
    """Seconds of `recsys train` and of `recsys batch-recommend` (k=20) with the code at pythonpath (None: this
    tree's)."""
    cli, env = _cli(pythonpath)
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        models = Path(tmp) / "models"
        train_s = _run([*cli, "train", "--data", str(data), "--out", str(models), "--seed", str(seed), "--quiet"],
                       env)
        batch_s = _run([*cli, "batch-recommend", "--model", str(models), "--data", str(data), "--k", "20",
                        "--out", str(Path(tmp) / "recs.csv"), "--quiet"], env)
    return {"train_s": train_s, "batch_s": batch_s, "total_s": train_s + batch_s}


def baseline_tree(ref: str, work: Path) -> str:
    """A worktree of `ref`; returns the folder to put first on PYTHONPATH (it holds `recsys` -> services)."""
    tree = work / "baseline"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-f", str(tree), ref], check=True,
                   capture_output=True)
    pkg = work / "baseline-pkg"
    pkg.mkdir()
    (pkg / "recsys").symlink_to(tree / "services")
    return str(pkg)


def datasets(work: Path) -> dict[str, tuple[Path, int]]:
    cli, env = _cli(None)
    out = {}
    for name, spec in (("demo", DEMO), ("ml100k_size", ML100K_SIZE)):
        if name == "ml100k_size" and ML_SMALL.exists():
            out[name] = (ML_SMALL, 0)
            continue
        path = work / name
        subprocess.run([*cli, "data", "generate", "--out", str(path), "--users", str(spec["users"]), "--items",
                        str(spec["items"]), "--interactions", str(spec["interactions"]), "--seed", str(spec["seed"])],
                       env=env, check=True, capture_output=True)
        out[name] = (path, spec["seed"])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="ef48df7", help="git ref of the baseline (default: main before the "
                        "training speed work)")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="recsys-train-speed-") as tmp:
        work = Path(tmp)
        base = baseline_tree(args.baseline, work)
        try:
            results: dict[str, dict] = {}
            for name, (data, seed) in datasets(work).items():
                runs: dict[str, list[dict[str, float]]] = {"baseline": [], "current": []}
                for r in range(args.repeats):
                    order = [("baseline", base), ("current", None)]
                    for label, path in order if r % 2 == 0 else order[::-1]:
                        runs[label].append(train_and_score(data, work, path, seed))
                        cells = "  ".join(f"{k} {v:6.1f}" for k, v in runs[label][-1].items())
                        print(f"{name:<12} {label:<9} {cells}", flush=True)
                med = {label: {k: statistics.median(x[k] for x in rs) for k in rs[0]} for label, rs in runs.items()}
                results[name] = {
                    "data": str(data),
                    "baseline": {k: round(v, 1) for k, v in med["baseline"].items()},
                    "current": {k: round(v, 1) for k, v in med["current"].items()},
                    "speedup_train": round(med["baseline"]["train_s"] / med["current"]["train_s"], 2),
                    "speedup_total": round(med["baseline"]["total_s"] / med["current"]["total_s"], 2),
                }
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(work / "baseline")],
                           capture_output=True)
    print("\ndataset       baseline train  current train  speedup   (train + batch-recommend: speedup)")
    for name, r in results.items():
        print(f"{name:<13} {r['baseline']['train_s']:>13.1f}  {r['current']['train_s']:>13.1f}  "
              f"{r['speedup_train']:>6.2f}x   {r['speedup_total']:.2f}x")
    print(json.dumps({"benchmark": "train_speed", "baseline": args.baseline, "cpus": os.cpu_count(),
                      "load_avg_1m": round(os.getloadavg()[0], 2), "datasets": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
