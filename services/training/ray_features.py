"""The user and item feature tables of a dataset folder, computed as a stream through Ray Data (issue #22).

`stream_features(path)` returns the same frames as `build_user_features` / `build_item_features` on
`load_dataset(path)` without ever holding the interactions whole. Ray Data reads `interactions.parquet` (or
`interactions.csv`) in blocks; `map_batches` tasks turn each batch of at most `StreamConfig.block_rows` rows into a
partial aggregate per user or item (`ray_feature_blocks`: counts, sums, sums of squares, min/max timestamps,
per-genre counts); the driver folds the partials, as `iter_batches` streams them out, into one array per aggregate
indexed by key (`_Fold`), and the final values come from the formulas `recsys.training.features` uses
(`item_stats`, `item_table`, `user_table`). The catalogues (items, users files) are read whole: the tables have a
row per item and per user anyway.

Three passes over the file, because each needs the previous one's final values:
  0. the reference time (the last timestamp; timestamp column only), for the 30- and 90-day counts;
  1. per-item aggregates (-> item_log_count, which user_mean_item_pop averages);
  2. per-user aggregates, the items' log count, year and genres looked up in each batch.
With a `spec` given, pass 0 is skipped (its reference time is used).

Memory: the driver holds O(users + items) (catalogues and fold arrays) plus the partials in flight; a task holds one
batch, its partial (at most one row per row of the batch) and, in pass 2, the items' attributes (O(items)). One
task reads the file, in blocks cut at `max_block_bytes` (a Parquet row group at most), at most `max_in_flight`
aggregate tasks run at once, the driver prefetches one partial, and Ray Data's streaming executor stops reading
while the driver lags. Not `groupby().aggregate()`:
its hash shuffle sends every block's partial to reducers that concatenate all of a partition's partials before
combining them, so its memory grows with the number of interactions rather than of keys.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from recsys.model.spec import FeatureSpec
from recsys.training.data.loaders import ITEM_FILL, generic_files, read_catalogues, with_missing
from recsys.training.data.schema import ID_DTYPE, DataError
from recsys.training.features import (
    ItemSums,
    UserSums,
    genre_matrix,
    item_stats,
    item_table,
    spec_from_catalogues,
    user_table,
)
from recsys.training.ray_feature_blocks import item_partial, time_partial, user_partial

REQUIRED = ("user_id", "item_id", "timestamp")
_ITEM_SUMS = ("count", "recent", "r_count", "r_sum", "first", "last")
_USER_SUMS = ("count", "recent", "r_n", "r_sum", "r_sq", "first", "last", "known", "pop_sum", "year_sum")
_CSV_TYPES = {"user_id": pa.string(), "item_id": pa.string(), "timestamp": pa.int64(), "rating": pa.float64()}


@dataclass(frozen=True)
class StreamConfig:
    """How the interactions stream: rows per aggregated batch, concurrent tasks, Ray Data's block size cap."""

    block_rows: int = 65_536
    max_in_flight: int = 2
    max_block_bytes: int = 32 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.block_rows < 1 or self.max_in_flight < 1 or self.max_block_bytes < 1024:
            raise ValueError("block_rows and max_in_flight must be >= 1, max_block_bytes >= 1024")


@dataclass
class StreamedFeatures:
    """The spec, the user and item feature tables, and counts of what was folded (`partial_rows` per pass)."""

    spec: FeatureSpec
    users: pd.DataFrame
    items: pd.DataFrame
    interactions: int
    partial_rows: dict[str, int] = field(default_factory=dict)


class _Fold:
    """Running per-key aggregates of partial tables (a `key` column, then value columns): each column summed, or
    min-ed / max-ed when named in `mins` / `maxs`, into a float64 array over the catalogue's keys then new keys."""

    def __init__(self, keys: pd.Index, mins: tuple[str, ...] = (), maxs: tuple[str, ...] = ()) -> None:
        self._index = keys
        self.extra: dict[str, int] = {}  # keys absent from the catalogue -> position, in order of appearance
        self._cols: dict[str, np.ndarray] = {}
        self._mins, self._maxs = set(mins), set(maxs)
        self.rows = 0

    def _default(self, name: str) -> float:
        return np.inf if name in self._mins else -np.inf if name in self._maxs else 0.0

    def add(self, part: pa.Table) -> None:
        """Fold one partial in; a key may repeat (Ray Data may merge several partials into one block)."""
        keys = part["key"].to_numpy(zero_copy_only=False)
        pos = self._index.get_indexer(keys)
        for i in np.flatnonzero(pos < 0):
            pos[i] = self.extra.setdefault(keys[i], len(self._index) + len(self.extra))
        size = len(self._index) + len(self.extra)
        for name in part.column_names[1:]:
            arr = self._cols.get(name)
            if arr is None or len(arr) < size:
                grown = np.full(max(size, 2 * len(arr)) if arr is not None else size, self._default(name))
                if arr is not None:
                    grown[: len(arr)] = arr
                arr = self._cols[name] = grown
            ufunc = np.minimum if name in self._mins else np.maximum if name in self._maxs else np.add
            ufunc.at(arr, pos, part[name].to_numpy())
        self.rows += part.num_rows

    def take(self, keys: pd.Index) -> dict[str, np.ndarray]:
        """Each column's values in the order of `keys`; keys never seen get the column's neutral value."""
        index = self._index.append(pd.Index(list(self.extra), dtype=object)) if self.extra else self._index
        pos = index.get_indexer(keys)
        return {name: np.where(pos >= 0, arr[pos], self._default(name)) for name, arr in self._cols.items()}


def stream_features(path: str | Path, spec: FeatureSpec | None = None, config: StreamConfig | None = None
                    ) -> StreamedFeatures:
    """Feature spec and tables of the generic dataset folder `path`, the interactions streamed through Ray Data
    (on the Ray already initialised, e.g. inside `ray_cluster.ray_for`, else a local one Ray Data starts).
    With `spec` (e.g. a model version's), its reference time and genres are used, as `build_*_features` do."""
    config = config or StreamConfig()
    root, file, manifest = generic_files(path)
    items_cat, users_cat = read_catalogues(root)
    stream = _Stream(file, config)
    with _data_context(config):
        ref = spec.reference_ts if spec else stream.reference_time()
        item_fold = _Fold(_ids(items_cat, "item_id"), mins=("first",), maxs=("last",))
        for part in stream.partials(item_partial, ref=ref):
            item_fold.add(part)
        items = _complete(items_cat, item_fold, "item_id", ITEM_FILL)
        got = item_fold.take(_ids(items, "item_id"))
        total = int(got["count"].sum())
        expected = (manifest or {}).get("counts", {}).get("interactions")
        if total == 0:
            raise DataError(f"{file.name}: no interactions")
        if expected is not None and expected != total:  # as load_dataset: catches truncated copies
            raise DataError(f"dataset.json: says {expected} interactions, the files hold {total}")
        r_count = got["r_count"].sum()
        global_mean = float(got["r_sum"].sum() / r_count) if r_count else 0.0
        stats = item_stats(items, ItemSums(**{k: got[k] for k in _ITEM_SUMS}), global_mean, ref)
        genres = spec.genres if spec else sorted({g for gs in items["genres"] for g in gs})
        user_fold = _Fold(_ids(users_cat, "user_id"), mins=("first",), maxs=("last",))
        attrs = {"item_ids": pa.array(items["item_id"].astype(object).to_numpy(), pa.string()),
                 "pop": stats["item_log_count"].to_numpy(), "year": stats["item_year"].to_numpy(),
                 "genres": genre_matrix(items, genres)}
        for part in stream.partials(user_partial, ref=ref, **attrs):
            user_fold.add(part)
    users = _complete(users_cat, user_fold, "user_id", {})
    spec = spec or spec_from_catalogues(genres, users, ref)
    user_ids = _ids(users, "user_id")
    got = user_fold.take(user_ids)
    genre_sum = np.column_stack([got[f"g{j}"] for j in range(len(genres))]) if genres else np.zeros((len(users), 0))
    user_sums = UserSums(**{k: got[k] for k in _USER_SUMS}, genre_sum=genre_sum)
    return StreamedFeatures(
        spec=spec,
        users=user_table(users, user_ids, user_sums, global_mean, stats["item_year"].to_numpy(), spec),
        items=item_table(items, stats, spec),
        interactions=total,
        partial_rows={"items": item_fold.rows, "users": user_fold.rows},
    )


class _Stream:
    """The interactions file as Ray Data datasets of partial aggregates."""

    def __init__(self, file: Path, config: StreamConfig) -> None:
        self.file, self.config, self.where = file, config, f"{file.name} (a block of it)"
        if file.suffix == ".parquet":
            names = list(pq.read_schema(file).names)
        else:
            with pcsv.open_csv(file) as reader:
                names = list(reader.schema.names)
        missing = [c for c in REQUIRED if c not in names]
        if missing:
            raise DataError(f"{file.name}: missing column(s) {', '.join(missing)} (found: {', '.join(names)})")
        self.columns = [c for c in (*REQUIRED, "rating") if c in names]

    def reference_time(self) -> int:
        """Pass 0: the last interaction's timestamp."""
        last = [p["max_ts"].drop_null().to_numpy() for p in self.partials(time_partial, columns=["timestamp"])]
        values = np.concatenate(last) if last else np.zeros(0, dtype=np.int64)
        if not len(values):
            raise DataError(f"{self.file.name}: no interactions")
        return int(values.max())

    def partials(self, fn, columns: list[str] | None = None, **kwargs) -> Iterator[pa.Table]:
        """`fn(batch, where, **kwargs)` of every batch of `columns` (default: all it has), as they stream out."""
        import ray.data

        columns = columns or self.columns
        if self.file.suffix == ".parquet":  # the projection is pushed into the read: only `columns` are decoded
            ds = ray.data.read_parquet(str(self.file)).select_columns(columns)
        else:
            types = {c: _CSV_TYPES[c] for c in columns}
            convert = pcsv.ConvertOptions(column_types=types, include_columns=columns, null_values=[""],
                                          strings_can_be_null=False)
            ds = ray.data.read_csv(str(self.file), convert_options=convert)
        mapped = ds.map_batches(fn, batch_size=self.config.block_rows, batch_format="pyarrow",
                                fn_kwargs={"where": self.where, **kwargs},
                                compute=ray.data.TaskPoolStrategy(size=self.config.max_in_flight))
        yield from mapped.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=1)


@contextmanager
def _data_context(config: StreamConfig) -> Iterator[None]:
    """Ray Data's block size cap from `config`, without progress bars, restored after."""
    from ray.data import DataContext

    ctx = DataContext.get_current()
    saved = ctx.target_max_block_size, ctx.enable_progress_bars
    ctx.target_max_block_size, ctx.enable_progress_bars = config.max_block_bytes, False
    try:
        yield
    finally:
        ctx.target_max_block_size, ctx.enable_progress_bars = saved


def _ids(frame: pd.DataFrame | None, column: str) -> pd.Index:
    if frame is None:
        return pd.Index([], dtype=object)
    return pd.Index(frame[column].astype(object))


def _complete(catalogue: pd.DataFrame | None, fold: _Fold, column: str, fill: dict) -> pd.DataFrame:
    """The catalogue plus the ids only the interactions hold, as `load_dataset` adds them (`with_missing`)."""
    frame, _ = with_missing(catalogue, pd.Series(list(fold.extra), dtype=ID_DTYPE), column, fill)
    return frame
