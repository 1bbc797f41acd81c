"""Batch inference on Ray Data: `recsys batch-recommend --workers N [--ray-address ADDR]`.

The users' state (features, recent items, seen items) is computed once, as the in-process path does, and handed to
Ray Data as a table; a pool of N actors (one CPU each) loads the model bundle once per actor and scores blocks of
users with the same two-stage code (`recommend_rows`: user tower, exact top-C search over the item embeddings,
the ranker); the rows are written as CSV or Parquet shards in a folder, one or more per block. The output is
the same as the in-process path's, row for row (a test holds them equal).

Without --ray-address a local Ray with N CPUs is started for the call (in its own temp folder) and stopped after;
with one, the job joins that cluster (e.g. the head of a KubeRay RayJob).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from recsys.common.errors import CliError
from recsys.model.bundle import load_bundle
from recsys.training.data.schema import Dataset
from recsys.training.ray_cluster import ray_for
from recsys.training.two_stage import TwoStage, UserState, recommend_rows

FORMATS = ("csv", "parquet")


class _Scorer:
    """A Ray Data actor: the model loaded once, then blocks of users scored (one torch/numpy thread)."""

    def __init__(self, model_dir: str, k: int, ranker: str | None) -> None:
        import torch

        torch.set_num_threads(1)
        bundle = load_bundle(Path(model_dir))
        self.stage = TwoStage(bundle)
        self.k, self.ranker = k, ranker
        self.candidates = int(bundle.config.get("candidates", 300))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        state = UserState(
            np.asarray(batch["user_id"], dtype=object),
            np.stack([np.asarray(f, dtype=np.float32) for f in batch["features"]]),
            [[str(i) for i in h] for h in batch["history"]],
            [np.asarray(s, dtype=np.int64) for s in batch["seen"]],
        )
        return recommend_rows(self.stage, state, self.k, self.ranker, self.candidates)


def users_table(state: UserState) -> pa.Table:
    """The users' state as an Arrow table (user_id, features, history, seen), in the state's order."""
    return pa.table({
        "user_id": pa.array([str(u) for u in state.user_ids], pa.string()),
        "features": pa.array(list(state.features), pa.list_(pa.float32())),
        "history": pa.array(state.histories, pa.list_(pa.string())),
        "seen": pa.array([np.asarray(s, dtype=np.int64) for s in state.seen], pa.list_(pa.int64())),
    })


def batch_recommend_ray(model_dir: Path, ds: Dataset, k: int, out: Path, *, workers: int,
                        ray_address: str | None = None, ranker: str | None = None, fmt: str = "csv",
                        block_users: int = 1024) -> dict:
    """Top-k for every user of `ds` on Ray Data, written as `fmt` shards into the folder `out` (replaced).
    Returns a summary: users, rows, shards, seconds, workers."""
    import ray

    if fmt not in FORMATS:
        raise CliError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if workers < 1:
        raise CliError(f"--workers must be at least 1, got {workers}")
    t0 = time.perf_counter()
    bundle = load_bundle(model_dir)
    state = TwoStage(bundle).state(ds)
    table = users_table(state)
    del bundle
    with ray_for(ray_address, workers):
        # blocks of at most block_users, at least two per worker when there are users enough: a block is the
        # unit an actor scores and a shard is written from
        size = max(1, min(block_users, max(64, -(-table.num_rows // (2 * workers)))))
        users = ray.data.from_arrow([table.slice(i, size) for i in range(0, max(table.num_rows, 1), size)])
        recs = users.map_batches(
            _Scorer, fn_constructor_kwargs={"model_dir": str(model_dir), "k": k, "ranker": ranker},
            batch_size=size, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=1,
        )
        if out.exists():
            shutil.rmtree(out)
        if fmt == "parquet":
            recs.write_parquet(str(out))
        else:
            recs.write_csv(str(out))
    shards = sorted(p for p in out.iterdir() if p.suffix == f".{fmt}")
    rows = sum(len(read_shard(p)) for p in shards)
    return {"users": len(state.user_ids), "rows": rows, "shards": len(shards), "out": str(out),
            "workers": workers, "seconds": round(time.perf_counter() - t0, 2)}


def read_shard(path: Path) -> pd.DataFrame:
    """One output shard (CSV or Parquet) as a frame."""
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, dtype={"user_id": str,
                                                                                         "item_id": str})


def read_output(folder: Path) -> pd.DataFrame:
    """Every shard of a batch-recommend output folder, concatenated (user_id, item_id, rank, score)."""
    frames = [read_shard(p) for p in sorted(folder.iterdir()) if p.suffix in (".csv", ".parquet")]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["user_id", "item_id", "rank",
                                                                                       "score"])
