"""Scale benchmark (issue #22): the Ray path on a generated dataset far bigger than the single-process one holds.

Stages, each timed (wall) while a thread samples memory every 0.5 s: the driver's RSS, the PSS of the driver plus
every descendant (the local Ray's GCS, raylet and workers; PSS because the object store is shared memory that RSS
would count once per process) and the largest descendant's RSS:
  generate   `synthetic_stream.generate_to_folder`: the dataset folder, written chunk by chunk (once);
  features   `ray_features.stream_features` on a local Ray of N CPUs (per worker count N);
  arrays     user / item / timestamp columns read from Parquet in row-group batches into int32 codes (dictionary
             codes mapped to catalogue rows) and int64 seconds: never a pandas frame of the interactions (once);
  train      `ray_two_tower.train_two_tower_ray` on N Ray Train workers, --epochs epochs (per N); skipped, and
             said so, when `train_estimate_gb` exceeds --train-max-gb (default 80% of the available memory);
  batch      --batch-users random users scored on N Ray Data actors: the user tower (numpy) and an exact top-20
             over all item embeddings in blocks, seen items excluded; the ranker is left out at this scale (per N;
             with an untrained model of the same shapes when the train stage was skipped: the timing is the same);
  quality    on a dataset of --compare-interactions both paths fit: the single-process fit (load_dataset,
             build_feature_spec, two_tower_inputs, train_two_tower) against this Ray path (stream_features, the
             arrays, train_two_tower_ray on 2 workers) on the same temporal split; Recall@20 of each and their
             ratio, which must be >= RECALL_TOLERANCE;
  pandas     the baseline: `pd.read_parquet` of a slice of up to 1M rows of the interactions in a child process:
             its frame (memory_usage(deep=True)) and the child's peak RSS growth, extrapolated linearly to
             --interactions. The bound: the tree's peak PSS <= half that extrapolated read peak ("far below what
             loading the interactions into pandas takes"; met only at sizes where the interactions, not Ray's and
             torch's fixed ~1-2 GB and the O(users + items) tables, dominate).

Prints a table per stage and worker count, then one JSON object on the last line. Run under `nice -n 19`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from recsys.common.entry import process_defaults

process_defaults()  # the OpenMP wait policy, before torch loads
os.environ.setdefault("RAY_DATA_LOG_LEVEL", "WARNING")  # Ray Data's per-dataset INFO lines drown the figures
warnings.filterwarnings("ignore", message="The maximum number of concurrent tasks")

RECALL_TOLERANCE = 0.97
PANDAS_SLICE = 1_000_000
GB = 1e9


class Monitor:
    """Samples the driver's RSS, the PSS of the driver and all its descendants, and the largest descendant's RSS
    every `interval` s; `stage()` records each stage's wall time and peaks, and shows a status line."""

    KEYS = ("peak_rss_gb", "peak_pss_gb", "peak_worker_rss_gb")

    def __init__(self, interval: float = 0.5) -> None:
        self.interval, self.proc = interval, psutil.Process()
        self.records: list[dict] = []
        self.skipped: dict[str, dict] = {}  # stages left out, by tag, and why
        self._current: dict | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Monitor:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def sample(self) -> tuple[float, float, float]:
        """(driver RSS, PSS of the driver and its descendants, the largest descendant's RSS) in GB."""
        rss = self.proc.memory_info().rss
        pss = self.proc.memory_full_info().pss
        child = 0
        for p in self.proc.children(recursive=True):
            try:
                info = p.memory_full_info()
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            pss, child = pss + info.pss, max(child, info.rss)
        return rss / GB, pss / GB, child / GB

    def _peak(self, rec: dict, now: tuple[float, float, float]) -> None:
        for key, value in zip(self.KEYS, now, strict=True):
            rec[key] = max(rec[key], value)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            now = self.sample()
            with self._lock:
                rec = self._current
                if rec is None:
                    continue
                self._peak(rec, now)
                rec["bar"].set_postfix_str(f"driver RSS {now[0]:.2f} GB, tree PSS {now[1]:.2f} GB", refresh=True)

    @contextmanager
    def stage(self, name: str, tag: object) -> Iterator[None]:
        bar = tqdm(desc=f"{name} [{tag}]", bar_format="{desc}: {elapsed} {postfix}", leave=False, disable=None)
        rec = {"stage": name, "tag": str(tag), **dict(zip(self.KEYS, self.sample(), strict=True)), "bar": bar}
        t0 = time.perf_counter()
        self._current = rec
        try:
            yield
        finally:
            with self._lock:
                self._current = None
            rec["wall_s"] = round(time.perf_counter() - t0, 2)
            self._peak(rec, self.sample())
            rec.update({k: round(rec[k], 3) for k in self.KEYS})
            bar.close()
            del rec["bar"]
            self.records.append(rec)
            print(f"{name} [{tag}]: {rec['wall_s']:.1f} s, driver RSS {rec['peak_rss_gb']:.2f} GB, tree PSS "
                  f"{rec['peak_pss_gb']:.2f} GB, largest worker RSS {rec['peak_worker_rss_gb']:.2f} GB", flush=True)


def read_codes(file: Path, users, items, batch_rows: int = 262_144) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user rows int32, item rows int32, timestamps int64) of the interactions file, read in batches of the three
    columns (ids as dictionary arrays: each batch's dictionary mapped to `users` / `items` rows once)."""
    pf = pq.ParquetFile(file, read_dictionary=["user_id", "item_id"])
    n = pf.metadata.num_rows
    out = np.empty(n, np.int32), np.empty(n, np.int32), np.empty(n, np.int64)
    pos = 0
    batches = pf.iter_batches(batch_size=batch_rows, columns=["user_id", "item_id", "timestamp"])
    for batch in tqdm(batches, total=-(-n // batch_rows), desc="arrays", unit="batch", leave=False):
        k = batch.num_rows
        for j, index in enumerate((users, items)):
            out[j][pos:pos + k] = _codes(batch.column(j), index)
        out[2][pos:pos + k] = batch.column(2).to_numpy().astype(np.int64, copy=False)
        pos += k
    return out


def _codes(column: pa.Array, index) -> np.ndarray:
    """Rows of `index` (an IdIndex) for a column of ids; unknown ids raise."""
    if pa.types.is_dictionary(column.type):
        lut = index.lookup(column.dictionary.cast(pa.string()).to_numpy(zero_copy_only=False))
        codes = lut[column.indices.to_numpy(zero_copy_only=False)]
    else:
        codes = index.lookup(column.cast(pa.string()).to_numpy(zero_copy_only=False))
    if (codes < 0).any():
        raise SystemExit("an interaction's id is not in the catalogue the features were built from")
    return codes.astype(np.int32)


class _TopK:
    """A Ray Data actor: the user tower (numpy, as `UserEncoder` computes it, on rows instead of ids) and an exact
    top-k over all item embeddings in blocks, seen items excluded (torch.topk on one thread: 30x faster here than
    numpy's argpartition over a block of 2,048 x 65,536 scores)."""

    def __init__(self, refs: dict, k: int, block: int = 65_536) -> None:
        import ray
        import torch

        torch.set_num_threads(1)
        self.tower = ray.get(refs["tower"])  # zero-copy views of the object store, shared by the actors
        self.emb = torch.from_numpy(ray.get(refs["items"]).copy())  # torch wants a writable array: one copy
        self.k, self.block = k, block

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        a, hist = self.tower, batch["hist"]
        z = np.nan_to_num((batch["feats"] - a["feat_mean"]) / a["feat_std"])
        hist_mean = a["hist_emb"][hist].sum(axis=1) / np.maximum((hist > 0).sum(axis=1, keepdims=True), 1)
        x = np.concatenate([a["user_emb"][batch["row"] + 1], z, hist_mean], axis=1)
        q = np.maximum(x @ a["w1"] + a["b1"], 0.0) @ a["w2"] + a["b2"]
        q = torch.from_numpy((q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)).astype(np.float32))
        seen_rows = torch.from_numpy(np.repeat(np.arange(len(q)), [len(s) for s in batch["seen"]]))
        seen = torch.from_numpy(np.concatenate([np.asarray(s, np.int64) for s in batch["seen"]] + [np.zeros(0, int)]))
        cand_i, cand_s = [], []
        for lo in range(0, len(self.emb), self.block):
            scores = q @ self.emb[lo:lo + self.block].T
            m = (seen >= lo) & (seen < lo + self.block)
            scores[seen_rows[m], seen[m] - lo] = -torch.inf
            val, idx = torch.topk(scores, min(self.k, scores.shape[1]), dim=1)
            cand_i.append(idx + lo)
            cand_s.append(val)
        val, j = torch.topk(torch.cat(cand_s, dim=1), min(self.k, len(self.emb)), dim=1)
        items = torch.where(torch.isinf(val), -1, torch.gather(torch.cat(cand_i, dim=1), 1, j))
        return {"row": batch["row"], "items": items.numpy().astype(np.int32), "scores": val.numpy()}


def batch_score(model, inputs: tuple, n_users: int, k: int, workers: int, out: Path, block: int = 2048) -> dict:
    """Top-k of `n_users` random users on `workers` Ray Data actors, written as Parquet into `out`."""
    import ray
    from ray.data.extensions import ArrowTensorArray

    _, _, uf, _, u, i, t = inputs
    rng = np.random.default_rng(0)
    chosen = np.sort(rng.choice(len(uf), size=min(n_users, len(uf)), replace=False)).astype(np.int32)
    pick = np.zeros(len(uf), bool)
    pick[chosen] = True
    rows = np.flatnonzero(pick[u])
    su, si, st = u[rows], i[rows], t[rows]
    order = np.lexsort((st, su))
    su, si = su[order], si[order]
    pos = np.searchsorted(chosen, su)  # each row's user position among `chosen`
    starts = np.searchsorted(su, chosen)
    ends = np.searchsorted(su, chosen, side="right")
    L = model.config.history_len
    from_end = ends[pos] - np.arange(len(su)) - 1
    hist = np.zeros((len(chosen), L), np.int32)  # the last L items, 1-based rows, right-aligned
    keep = from_end < L
    hist[pos[keep], L - 1 - from_end[keep]] = si[keep] + 1
    seen = pa.ListArray.from_arrays(pa.array(np.r_[starts, len(su)].astype(np.int32)), pa.array(si))
    table = pa.table({"row": chosen, "feats": ArrowTensorArray.from_numpy(uf[chosen]),
                      "hist": ArrowTensorArray.from_numpy(hist), "seen": seen})
    tower = {k_: v for k_, v in model.user_tower_arrays().items() if k_ not in ("user_ids", "item_ids")}
    refs = {"tower": ray.put(tower), "items": ray.put(model.item_embeddings())}
    t0 = time.perf_counter()
    ds = ray.data.from_arrow([table.slice(a, block) for a in range(0, table.num_rows, block)])
    recs = ds.map_batches(_TopK, fn_constructor_kwargs={"refs": refs, "k": k}, batch_size=block,
                          batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=1)
    recs.write_parquet(str(out), ray_remote_args={"num_cpus": 0})  # the actors hold every CPU; writes need none
    seconds = time.perf_counter() - t0
    written = sum(pq.ParquetFile(p).metadata.num_rows for p in out.glob("*.parquet"))
    if written != len(chosen):
        raise SystemExit(f"batch scoring wrote {written} rows for {len(chosen)} users")
    return {"users": len(chosen), "seconds": round(seconds, 2), "users_per_s": round(len(chosen) / seconds, 1)}


def pandas_probe(file: Path) -> dict:
    """In a fresh process: what `pd.read_parquet` of `file` takes, per row (frame deep bytes; peak RSS growth)."""
    import pandas as pd

    pq.ParquetFile(file).read_row_group(0).slice(0, 100).to_pandas()  # imports, first-call allocations
    before = psutil.Process().memory_info().rss
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    frame = pd.read_parquet(file)
    rows = len(frame)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    frame_bytes = int(frame.memory_usage(deep=True).sum())
    dtypes = [str(d) for d in frame.dtypes]
    del frame
    arrow_bytes = int(pd.read_parquet(file, dtype_backend="pyarrow").memory_usage(deep=True).sum())
    return {"rows": rows, "dtypes": dtypes, "frame_bytes_per_row": frame_bytes / rows,
            "peak_bytes_per_row": (max(peak, peak_before) - before) / rows,
            "arrow_frame_bytes_per_row": arrow_bytes / rows}


def _streamed_inputs(folder: Path, workers: int, mon: Monitor, tag: str, arrays: bool = True) -> tuple:
    """Features through Ray Data, then (optionally) the interaction arrays: train_two_tower's data arguments."""
    from recsys.model.ids import IdIndex
    from recsys.training.ray_features import StreamConfig, stream_features

    with mon.stage("features", tag):
        feats = stream_features(folder, config=StreamConfig(max_in_flight=workers))
    spec = feats.spec
    users = IdIndex(feats.users["user_id"].astype(object))
    items = IdIndex(feats.items["item_id"].astype(object))
    uf = feats.users[spec.user_features].to_numpy(np.float32)
    itf = feats.items[spec.item_features].to_numpy(np.float32)
    del feats
    if not arrays:
        return users, items, uf, itf
    with mon.stage("arrays", tag):
        codes = read_codes(folder / "interactions.parquet", users, items)
    return (users, items, uf, itf, *codes)


def train_estimate_gb(n: int, n_users: int, n_items: int, cfg, workers: int) -> float:
    """What `train_two_tower_ray` adds to the tree's PSS, from a fit to measured runs (history 30; 1 / 2 workers:
    300k interactions on 20k users 1.9 / 2.8 GB, 2M on 100k users 6.1 / 8.3 GB, 200k on 1M users and 200k items
    8.3 / 11.2 GB): the examples (history int64 [n, L], user and item rows int64) exist in about 6.7 + 2.9 x workers
    copies at once (the driver's, the pickled config, the object store's, each worker's unpickled tensors), the
    embedding tables ((users + 2 items) x dim float32) in about 12.5 + 5.9 x workers (weights, gradients, Adam's
    moments, DDP's buckets, the pickled starting state, the checkpoints the driver writes and loads), plus ~0.55 GB
    for Ray Train's controller and ~0.65 GB per worker (torch)."""
    examples = n * (8 * cfg.history_len + 16) * (6.7 + 2.9 * workers)
    tables = (n_users + 2 * n_items + 3) * cfg.dim * 4 * (12.5 + 5.9 * workers)
    return (examples + tables + (0.55 + 0.65 * workers) * GB) / GB


def _fit_ray(inputs: tuple, cfg, workers: int, storage: Path, mon: Monitor, tag: str,
             max_gb: float = float("inf")):
    """The Ray Train fit, or None (skipped, printed) when `train_estimate_gb` exceeds `max_gb`: the machine is
    shared, and an out-of-memory kill takes others' work with it."""
    from recsys.training.ray_two_tower import train_two_tower_ray

    users, items, n = inputs[0], inputs[1], len(inputs[4])
    need = train_estimate_gb(n, len(users), len(items), cfg, workers)
    if need > max_gb:
        print(f"train [{tag}]: skipped, needs ~{need:.1f} GB, allowed {max_gb:.1f} GB (--train-max-gb)")
        mon.skipped[tag] = {"train_estimate_gb": round(need, 2), "allowed_gb": round(max_gb, 2)}
        return None
    with mon.stage("train", tag):
        model, _ = train_two_tower_ray(*inputs, cfg, workers, storage, name=f"scale-{tag}")
    return model


def _untrained(inputs: tuple, cfg):
    """A model of the trained one's shapes with its initial weights: for the batch stage's timing only."""
    from recsys.training.two_tower import TwoTowerModel, new_net
    from recsys.training.two_tower_fit import standardise

    users, items, uf, itf = inputs[:4]
    net, _ = new_net(users, items, uf.shape[1], itf.shape[1], cfg)
    item_stats = standardise(itf)
    itf_std = ((itf - item_stats[0]) / item_stats[1]).astype(np.float32)
    return TwoTowerModel(net.eval(), users, items, cfg, standardise(uf), item_stats, itf_std)


def scale_runs(args, folder: Path, work: Path, mon: Monitor) -> dict:
    """Features, training and batch scoring on a local Ray of each worker count."""
    from recsys.training.ray_cluster import ray_for
    from recsys.training.two_tower import TwoTowerConfig

    cfg = TwoTowerConfig(epochs=args.epochs, history_len=args.history_len)
    inputs = None
    scored = {}
    for w in args.workers:
        with ExitStack() as stack:
            with mon.stage("ray_start", w):
                stack.enter_context(ray_for(None, w))
            if inputs is None:
                inputs = _streamed_inputs(folder, w, mon, str(w))
            else:
                _streamed_inputs(folder, w, mon, str(w), arrays=False)
            free = psutil.virtual_memory().available / GB
            model = _fit_ray(inputs, cfg, w, work / "ray", mon, str(w),
                             0.8 * free if args.train_max_gb is None else args.train_max_gb)
            trained = model is not None
            model = model or _untrained(inputs, cfg)
            with mon.stage("batch", w):
                scored[w] = batch_score(model, inputs, args.batch_users, 20, w, work / f"recs-{w}")
            scored[w]["model"] = "trained" if trained else "untrained (train skipped)"
            del model
    return scored


def quality(args, work: Path, mon: Monitor) -> dict:
    """Recall@20 of the single-process fit and of the Ray path (2 workers) on one temporal split."""
    import pandas as pd

    from recsys.model.ids import IdIndex
    from recsys.training import metrics as M
    from recsys.training.data.loaders import load_dataset, save_dataset
    from recsys.training.data.synthetic_stream import generate_to_folder
    from recsys.training.features import build_feature_spec
    from recsys.training.matrix import InteractionMatrix, top_k
    from recsys.training.pipeline import two_tower_inputs
    from recsys.training.ray_cluster import ray_for
    from recsys.training.split import split_dataset
    from recsys.training.two_stage import user_state
    from recsys.training.two_tower import TwoTowerConfig, train_two_tower

    n = args.compare_interactions
    n_users, n_items = max(200, n // 20), max(200, n // 100)
    folder = generate_to_folder(work / "compare", n, n_users, n_items, seed=1, overwrite=True)
    parts = split_dataset(load_dataset(folder))
    train_folder = save_dataset(parts.train, work / "compare-train", overwrite=True)
    spec = build_feature_spec(parts.train)
    cfg = TwoTowerConfig(epochs=args.compare_epochs, history_len=args.history_len)
    with mon.stage("quality_single", "1"):
        single = train_two_tower(*two_tower_inputs(parts.train, spec), cfg, progress=True)
    with ray_for(None, 2):
        inputs = _streamed_inputs(train_folder, 2, mon, "compare")
        ray_model = _fit_ray(inputs, cfg, 2, work / "ray", mon, "compare")
    test_users = list(pd.unique(parts.test["user_id"].astype(object)))
    relevant = InteractionMatrix.from_interactions(parts.test, single.items, IdIndex(test_users)).seen(
        np.arange(len(test_users)))

    def recall(model) -> float:
        if model.items.to_list() != single.items.to_list():
            raise SystemExit("the two paths index the items differently")
        state = user_state(parts.train, spec, model.items, test_users)
        emb = model.encoder().embed_batch(list(state.user_ids), state.features, state.histories)
        ranked, _ = top_k(emb @ model.item_embeddings().T, 20, state.seen)
        return M.recall_at_k(M.hits_matrix(ranked, relevant), np.array([len(r) for r in relevant]), 20)

    r_single, r_ray = recall(single), recall(ray_model)
    return {"compare_interactions": n, "compare_users": n_users, "compare_items": n_items,
            "compare_epochs": args.compare_epochs, "recall_single": round(r_single, 4), "recall_ray": round(r_ray, 4),
            "recall_ratio_vs_single_process": round(r_ray / r_single, 4) if r_single > 0 else None}


def pandas_baseline(file: Path, total: int, work: Path) -> dict:
    """The probe's per-row figures (a child process reads a slice of up to 1M rows) times `total`."""
    pf = pq.ParquetFile(file)
    batches, rows = [], 0
    for batch in pf.iter_batches(batch_size=65_536):
        batches.append(batch.slice(0, min(batch.num_rows, PANDAS_SLICE - rows)))
        rows += batches[-1].num_rows
        if rows >= PANDAS_SLICE:
            break
    piece = work / "pandas-slice.parquet"
    pq.write_table(pa.Table.from_batches(batches), piece, compression="zstd")
    del batches
    done = subprocess.run([sys.executable, __file__, "--pandas-probe", str(piece)], capture_output=True, text=True,
                          check=True)
    probe = json.loads(done.stdout.strip().splitlines()[-1])
    gb = total / 1e9
    return {"pandas_slice_rows": probe["rows"],
            "pandas_estimate_gb": round(probe["frame_bytes_per_row"] * gb, 3),
            "pandas_read_peak_gb": round(probe["peak_bytes_per_row"] * gb, 3),
            "pandas_pyarrow_estimate_gb": round(probe["arrow_frame_bytes_per_row"] * gb, 3),
            "pandas_probe": probe}


def _workers(text: str) -> list[int]:
    workers = sorted({int(w) for w in text.split(",") if w.strip()})
    if not workers or min(workers) < 1:
        raise argparse.ArgumentTypeError("--workers: a comma-separated list of counts >= 1")
    return workers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interactions", type=int, default=20_000_000)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--workers", type=_workers, default=[1, 2], help="worker counts, e.g. 1,2")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--history-len", type=int, default=30, help="two-tower history length (its default 30)")
    parser.add_argument("--batch-users", type=int, default=100_000)
    parser.add_argument("--compare-interactions", type=int, default=200_000)
    parser.add_argument("--compare-epochs", type=int, default=4)
    parser.add_argument("--train-max-gb", type=float, default=None,
                        help="skip a train stage whose estimated memory exceeds this (default: 80%% of the memory "
                        "available then; 0: no training, the batch stage then scores with an untrained model)")
    parser.add_argument("--out", type=Path, default=None, help="work folder (default: a temporary one, removed)")
    parser.add_argument("--pandas-probe", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.pandas_probe is not None:
        print(json.dumps(pandas_probe(args.pandas_probe)))
        return 0
    with ExitStack() as stack:
        work = args.out or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="recsys-scale-")))
        work.mkdir(parents=True, exist_ok=True)
        for old in [work / "ray", *work.glob("recs-*")]:  # a rerun in --out must not resume old checkpoints
            shutil.rmtree(old, ignore_errors=True)
        mon = stack.enter_context(Monitor())
        from recsys.training.data.synthetic_stream import generate_to_folder

        folder = work / "data"
        with mon.stage("generate", "-"):
            generate_to_folder(folder, args.interactions, args.users, args.items, seed=0, progress=True,
                               overwrite=True)
        with mon.stage("pandas_probe", "-"):
            baseline = pandas_baseline(folder / "interactions.parquet", args.interactions, work)
        scored = scale_runs(args, folder, work, mon)
        compare = quality(args, work, mon)
    return report(args, mon, baseline, scored, compare)


def report(args, mon: Monitor, baseline: dict, scored: dict, compare: dict) -> int:
    from recsys.training.two_tower import TwoTowerConfig

    print(f"\n{'stage':<16}{'workers':>8}{'wall s':>10}{'driver RSS GB':>15}{'tree PSS GB':>13}{'worker RSS GB':>15}")
    for r in mon.records:
        print(f"{r['stage']:<16}{r['tag']:>8}{r['wall_s']:>10.1f}{r['peak_rss_gb']:>15.2f}{r['peak_pss_gb']:>13.2f}"
              f"{r['peak_worker_rss_gb']:>15.2f}")
    for w, s in scored.items():
        print(f"batch, {w} worker(s): {s['users']} users, {s['users_per_s']:.0f} users/s, model {s['model']}")
    peak_rss = max(r["peak_rss_gb"] for r in mon.records)
    peak_pss = max(r["peak_pss_gb"] for r in mon.records)
    bound = round(baseline["pandas_read_peak_gb"] / 2, 3)
    ratio = compare["recall_ratio_vs_single_process"]
    print(f"pandas: frame {baseline['pandas_estimate_gb']:.2f} GB, read peak {baseline['pandas_read_peak_gb']:.2f} GB "
          f"(extrapolated to {args.interactions:,} rows); bound {bound:.2f} GB; peak tree PSS {peak_pss:.2f} GB")
    print(f"recall@20 single {compare['recall_single']:.4f}, ray {compare['recall_ray']:.4f}, ratio {ratio}")

    def per_worker(stage: str) -> dict[str, float]:
        return {r["tag"]: r["wall_s"] for r in mon.records if r["stage"] == stage}

    out = {"benchmark": "scale", "interactions": args.interactions, "users": args.users, "items": args.items,
           "workers": args.workers, "epochs": args.epochs, "history_len": args.history_len,
           "batch_users": args.batch_users, "generate_s": per_worker("generate")["-"],
           "features_s": {t: v for t, v in per_worker("features").items() if t != "compare"},
           "arrays_s": per_worker("arrays").get(str(args.workers[0])),
           "train_s": {t: v for t, v in per_worker("train").items() if t != "compare"},
           "batch_s": per_worker("batch"), "ray_start_s": per_worker("ray_start"),
           "batch_users_per_s": {str(w): s["users_per_s"] for w, s in scored.items()},
           "peak_rss_gb": peak_rss, "peak_pss_gb": peak_pss,
           "peak_worker_rss_gb": max(r["peak_worker_rss_gb"] for r in mon.records),
           "peak_pss_gb_without_train": max(r["peak_pss_gb"] for r in mon.records if r["stage"] != "train"),
           "stages": mon.records,
           "train_skipped": mon.skipped,
           "train_estimate_gb": {str(w): round(train_estimate_gb(args.interactions, args.users, args.items,
                                                                 TwoTowerConfig(history_len=args.history_len), w), 2)
                                 for w in args.workers},
           **{k: v for k, v in baseline.items() if k != "pandas_probe"}, "bound_gb": bound,
           "bound_ok": peak_pss <= bound, **compare, "recall_tolerance": RECALL_TOLERANCE,
           "recall_ok": ratio is not None and ratio >= RECALL_TOLERANCE, "ranker": "left out at this scale",
           "cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2)}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
