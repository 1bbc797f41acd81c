"""Per-batch partial aggregates of interactions, run by Ray Data's `map_batches` tasks (`ray_features`).

Each function takes one pyarrow batch of the interactions file, coerces it to the dataset contract
(`loaders.coerce_interactions`; ratings rounded to float32 as `load_dataset` stores them) and returns a small
table with one row per distinct key of the batch: a `key` column, then additive aggregates (counts, sums) and
first/last timestamps, which the driver folds into exact totals. Row numbers in errors count within the batch.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recsys.training.data.loaders import coerce_interactions
from recsys.training.features import DAY


def _codes(column: pa.ChunkedArray) -> tuple[np.ndarray, pa.Array]:
    """Per row the index of its value among the distinct values, and those values (in order of appearance)."""
    encoded = column.combine_chunks().dictionary_encode()
    return encoded.indices.to_numpy().astype(np.int64), encoded.dictionary


def _batch(batch: pa.Table, where: str) -> tuple[pa.ChunkedArray, pa.ChunkedArray, np.ndarray, np.ndarray]:
    """user ids, item ids, timestamps (int64) and ratings (float64 of float32, NaN when absent) of a batch."""
    table = coerce_interactions(batch, where)
    ts = table["timestamp"].to_numpy()
    if "rating" in table.column_names:
        rating = pc.fill_null(table["rating"], np.nan).to_numpy().astype(np.float32).astype(np.float64)
    else:
        rating = np.full(len(ts), np.nan)
    return table["user_id"], table["item_id"], ts, rating


def _count(pos: np.ndarray, n: int, weights: np.ndarray | None = None) -> np.ndarray:
    return np.bincount(pos, weights=weights, minlength=n).astype(np.float64)


def _first_last(pos: np.ndarray, n: int, ts: np.ndarray) -> dict[str, np.ndarray]:
    first, last = np.full(n, np.inf), np.full(n, -np.inf)
    np.minimum.at(first, pos, ts)
    np.maximum.at(last, pos, ts)
    return {"first": first, "last": last}


def time_partial(batch: pa.Table, where: str) -> pa.Table:
    """Pass 0: the batch's last timestamp (null for an empty batch)."""
    ts = coerce_interactions(batch, where, only=("timestamp",))["timestamp"]
    return pa.table({"max_ts": pa.array([pc.max(ts).as_py()], pa.int64())})


def item_partial(batch: pa.Table, where: str, ref: int) -> pa.Table:
    """Pass 1, per item: interactions, those in the 90 days before `ref`, rated ones, rating sum, first/last time."""
    _, items, ts, rating = _batch(batch, where)
    pos, keys = _codes(items)
    n, rated = len(keys), ~np.isnan(rating)
    return pa.table({
        "key": keys,
        "count": _count(pos, n),
        "recent": _count(pos[ts >= ref - 90 * DAY], n),
        "r_count": _count(pos[rated], n),
        "r_sum": _count(pos[rated], n, rating[rated]),
        **_first_last(pos, n, ts),
    })


def user_partial(
    batch: pa.Table,
    where: str,
    ref: int,
    item_ids: pa.Array,
    pop: np.ndarray,
    year: np.ndarray,
    genres: np.ndarray,
) -> pa.Table:
    """Pass 2, per user: the `UserSums` fields; `item_ids` (string) with their item_log_count `pop`, item_year
    `year` and genre matrix `genres` (rows like `item_ids`) give each interaction's item attributes."""
    users, items, ts, rating = _batch(batch, where)
    upos, keys = _codes(users)
    icodes, ikeys = _codes(items)
    ipos = pc.fill_null(pc.index_in(ikeys, value_set=item_ids), -1).to_numpy().astype(np.int64)[icodes]
    n, rated, known = len(keys), ~np.isnan(rating), ipos >= 0
    tsf = ts.astype(np.float64)
    ku, ki = upos[known], ipos[known]
    cols = {
        "key": keys,
        "count": _count(upos, n),
        "recent": _count(upos[tsf >= ref - 30 * DAY], n),
        "r_n": _count(upos[rated], n),
        "r_sum": _count(upos[rated], n, rating[rated]),
        "r_sq": _count(upos[rated], n, rating[rated] ** 2),
        **_first_last(upos, n, tsf),
        "known": _count(ku, n),
        "pop_sum": _count(ku, n, pop[ki]),
        "year_sum": _count(ku, n, year[ki]),
    }
    for j in range(genres.shape[1]):
        cols[f"g{j}"] = _count(ku, n, genres[ki, j].astype(np.float64))
    return pa.table(cols)
