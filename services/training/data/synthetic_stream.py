"""`synthetic.generate`'s model written straight to a dataset folder, chunk by chunk, for datasets too big to hold.

`generate_to_folder(out, n_interactions, n_users, n_items, seed)` writes the folder `save_dataset` would
(interactions.parquet sorted by (timestamp, user, item), items.parquet, users.parquet, truth.npz, dataset.json
with the counts), which `load_dataset` and `ray_features.stream_features` read, without ever holding the
interactions whole:

1. The catalogues and the latent model (item genres and factors, Zipf popularity, item quality, demographics,
   user factors) are `generate`'s own: it is called for one interaction, and for the same sizes and seed they are
   equal to those of `generate(n_interactions, ...)` (its random stream draws them before anything that depends
   on the number of interactions).
2. Interactions per user (`synthetic._activity`) and user biases are drawn for every user (O(users)); then the
   users are taken `chunk_users` at a time: their items (`synthetic._sample_pairs`, the same Gumbel top-k over
   importance-corrected pools) and timestamps (`synthetic._timestamps`) are drawn, and the rows (user, item,
   affinity u·v, timestamp) are written to a scratch Parquet file, one row group per time bucket (bucket edges:
   quantiles of the first chunk's timestamps, about `bucket_rows` rows each; users are i.i.d., so the other
   chunks fill them alike), while the affinity's sum and sum of squares are accumulated.
3. Each time bucket is read back from every scratch file, sorted, given its ratings (`generate`'s formula, the
   affinity standardised with the mean and standard deviation of all pairs, as there), and appended to
   interactions.parquet with `ParquetWriter`; the ids become strings only there. Memory: O(users + items) plus a
   chunk or a bucket.

What differs from `generate` for the same arguments: the interactions come from another random stream (so the
rows differ, the distribution is the same); `_sample_pairs` refits its proposal (k-means of the item factors) per
chunk, which changes only which candidates are drawn, not the sampled model; signup times are drawn per chunk.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from recsys.training.data.loaders import TRUTH_FILE, _write_parquet, atomic_directory, write_manifest
from recsys.training.data.synthetic import (
    SyntheticConfig,
    _activity,
    _sample_pairs,
    _timestamps,
    generate,
)

INTERACTIONS_SCHEMA = pa.schema([("user_id", pa.string()), ("item_id", pa.string()), ("rating", pa.float32()),
                                 ("timestamp", pa.int64())])
_SCRATCH_SCHEMA = pa.schema([("u", pa.int32()), ("i", pa.int32()), ("a", pa.float32()), ("t", pa.int64())])


def generate_to_folder(
    out: str | Path,
    n_interactions: int,
    n_users: int | None = None,
    n_items: int | None = None,
    seed: int = 0,
    chunk_users: int = 50_000,
    bucket_rows: int = 1_000_000,
    row_group_rows: int = 262_144,
    progress: bool = False,
    overwrite: bool = False,
    **knobs,
) -> Path:
    """Write a synthetic dataset folder at `out` (see the module docstring); returns its path.

    `knobs` are further `SyntheticConfig` fields. Raises `ValueError` for sizes that cannot fit, and `DataError`
    when `out` exists and is not empty (unless `overwrite`)."""
    if chunk_users < 1 or bucket_rows < 1 or row_group_rows < 1:
        raise ValueError("chunk_users, bucket_rows and row_group_rows must be >= 1")
    cfg = SyntheticConfig(n_interactions=n_interactions, n_users=n_users, n_items=n_items, seed=seed,
                          **knobs).resolved()
    base = generate(1, cfg.n_users, cfg.n_items, seed, **knobs)
    truth = base.meta["truth"]
    rng = np.random.default_rng([cfg.seed, 0x5EED])  # interactions: a stream of their own
    per_user = _activity(rng, cfg.n_users, cfg.n_items, cfg.n_interactions)
    user_bias = (0.35 * rng.normal(size=cfg.n_users)).astype(np.float32)
    quality = truth.item_quality
    n_buckets = max(1, math.ceil(cfg.n_interactions / bucket_rows))
    meta = {k: v for k, v in base.meta.items() if k != "truth"}
    meta.update(n_interactions=cfg.n_interactions, generator="synthetic_stream", chunk_users=chunk_users)
    with atomic_directory(Path(out), overwrite=overwrite) as tmp:
        scratch = tmp / ".scratch"
        scratch.mkdir()
        parts, moments = _write_chunks(scratch, rng, cfg, truth, per_user, chunk_users, n_buckets, progress)
        mean = moments[0] / moments[2]
        std = np.sqrt(max(moments[1] / moments[2] - mean**2, 0.0)) + 1e-9

        def rate(u: np.ndarray, i: np.ndarray, affinity: np.ndarray) -> np.ndarray:
            """`generate`'s ratings: standardised affinity plus user and item biases and noise, rounded to 1-5."""
            raw = 3.5 + 0.9 * (affinity - mean) / std + user_bias[u] + 1.5 * quality[i]
            raw += rng.normal(0.0, 0.6, size=raw.shape)
            return np.clip(np.rint(raw), 1, 5).astype(np.float32)

        user_ids = pa.array(base.users["user_id"].astype(object).to_numpy(), pa.string())
        item_ids = pa.array(base.items["item_id"].astype(object).to_numpy(), pa.string())
        written = _merge(tmp / "interactions.parquet", parts, n_buckets, (user_ids, item_ids), rate,
                         row_group_rows, cfg.n_interactions, progress)
        shutil.rmtree(scratch)
        if written != cfg.n_interactions:  # a bug, not bad input
            raise RuntimeError(f"wrote {written} interactions, expected {cfg.n_interactions}")
        _write_parquet(base.items, tmp / "items.parquet")
        _write_parquet(base.users, tmp / "users.parquet")
        truth.save(tmp / TRUTH_FILE)
        write_manifest(tmp, base.name, meta, {"interactions": cfg.n_interactions, "items": len(base.items),
                                              "users": len(base.users)})
    return Path(out)


def _write_chunks(scratch: Path, rng: np.random.Generator, cfg: SyntheticConfig, truth, per_user: np.ndarray,
                  chunk_users: int, n_buckets: int, progress: bool
                  ) -> tuple[list[tuple[Path, dict[int, int]]], tuple[float, float, int]]:
    """Each chunk of users' interactions as a scratch file with a row group per time bucket; returns (file,
    bucket -> row group index) per chunk, and the affinity's (sum, sum of squares, count)."""
    log_pop = truth.item_log_popularity.astype(np.float64)
    edges: np.ndarray | None = None
    moments = [0.0, 0.0, 0]
    parts = []
    bar = tqdm(total=cfg.n_interactions, desc="generating interactions", unit="row", disable=not progress)
    for c, a in enumerate(range(0, cfg.n_users, chunk_users)):
        b = min(a + chunk_users, cfg.n_users)
        chunk_cfg = replace(cfg, n_users=b - a)
        local, items, affinity = _sample_pairs(rng, chunk_cfg, truth.user_factors[a:b], truth.item_factors, log_pop,
                                               per_user[a:b], False)
        a64 = affinity.astype(np.float64)
        moments[0] += float(a64.sum())
        moments[1] += float((a64 * a64).sum())
        moments[2] += len(a64)
        ts = _timestamps(rng, chunk_cfg, local, b - a)
        if edges is None:
            qs = np.quantile(ts, np.linspace(0.0, 1.0, n_buckets + 1)[1:-1]) if len(ts) else np.zeros(0)
            edges = np.unique(np.ceil(qs).astype(np.int64))
        bucket = np.searchsorted(edges, ts, side="right")  # equal timestamps always share a bucket
        order = np.argsort(bucket, kind="stable")
        table = pa.table([pa.array((a + local[order]).astype(np.int32)), pa.array(items[order].astype(np.int32)),
                          pa.array(affinity[order].astype(np.float32)), pa.array(ts[order])],
                         schema=_SCRATCH_SCHEMA)
        path = scratch / f"chunk-{c:05d}.parquet"
        groups: dict[int, int] = {}
        bounds = np.searchsorted(bucket[order], np.arange(n_buckets + 1))
        with pq.ParquetWriter(path, _SCRATCH_SCHEMA, compression="lz4") as writer:
            for k in range(n_buckets):
                lo, hi = int(bounds[k]), int(bounds[k + 1])
                if hi > lo:
                    groups[k] = len(groups)
                    writer.write_table(table.slice(lo, hi - lo), row_group_size=hi - lo)
        parts.append((path, groups))
        bar.update(len(local))
    bar.close()
    return parts, (moments[0], moments[1], moments[2])


def _merge(path: Path, parts: list[tuple[Path, dict[int, int]]], n_buckets: int, ids: tuple[pa.Array, pa.Array],
           rate: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray], row_group_rows: int, total: int,
           progress: bool) -> int:
    """The scratch files' rows, bucket by bucket sorted by (timestamp, user, item) and rated by `rate(user, item,
    affinity)`, appended to `path` with the ids (users, items) as strings; returns the number of rows written."""
    user_ids, item_ids = ids
    files = [(pq.ParquetFile(p), groups) for p, groups in parts]
    written = 0
    bar = tqdm(total=total, desc="sorting by time", unit="row", disable=not progress)
    with pq.ParquetWriter(path, INTERACTIONS_SCHEMA, compression="zstd",
                          dictionary_pagesize_limit=8 << 20) as writer:
        for k in range(n_buckets):
            pieces = [f.read_row_group(groups[k]) for f, groups in files if k in groups]
            if not pieces:
                continue
            bucket = pa.concat_tables(pieces)
            u, i, a, t = (bucket[c].to_numpy() for c in ("u", "i", "a", "t"))
            order = np.lexsort((i, u, t))
            u, i, a, t = u[order], i[order], a[order], t[order]
            table = pa.table([user_ids.take(pa.array(u)), item_ids.take(pa.array(i)), pa.array(rate(u, i, a)),
                              pa.array(t)], schema=INTERACTIONS_SCHEMA)
            writer.write_table(table, row_group_size=row_group_rows)
            written += table.num_rows
            bar.update(table.num_rows)
    bar.close()
    for f, _ in files:
        f.close()
    return written
