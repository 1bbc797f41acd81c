"""THE feature definition, shared by training and serving (no train/serve skew).

`build_user_features(ds)` and `build_item_features(ds)` return numeric frames keyed by `user_id` /
`item_id` with an `event_timestamp` column: they are both the models' inputs and the Feast offline
parquet tables the feature service serves. `build_user_history(ds)` gives each user's most recent item
ids (the two-tower user tower's history input). `ranking_inputs(...)` turns one user row and N item rows
into the rankers' input matrix; the ranking service calls it online, so it is vectorised numpy only.

Feature names (stable; `FeatureSpec` lists them in order and is saved with every model version):

user (`user_` prefix)
  user_log_count        log1p(number of interactions)
  user_count_30d        interactions in the 30 days before the reference time
  user_mean_rating      mean rating (global mean when the user has no ratings)
  user_rating_std       rating standard deviation (0 when fewer than two ratings)
  user_days_since_last  days from the user's last interaction to the reference time
  user_active_days      days between the user's first and last interaction
  user_mean_item_pop    mean item_log_count over the user's interactions (mainstream taste)
  user_mean_item_year   mean release year of the items the user interacted with
  user_genre_<g>        share of the user's interactions whose item has genre g (affinity)
  user_demo_<col>       numeric demographic column, as is (NaN -> column mean)
  user_demo_<col>_<v>   one-hot of a categorical demographic column (vocabulary in the spec)

item (`item_` prefix)
  item_log_count        log1p(number of interactions)
  item_log_count_90d    log1p(interactions in the 90 days before the reference time)
  item_mean_rating      rating mean shrunk toward the global mean (prior weight 5)
  item_days_since_first days from the first interaction with the item to the reference time (age)
  item_days_since_last  days from the last interaction with the item to the reference time
  item_year             release year (items.year, or "(1995)" at the end of the title; median if unknown)
  item_n_genres         number of genres
  item_genre_<g>        1 when the item has genre g

cross (computed by `ranking_inputs`, after the user and item columns)
  x_genre_affinity      user genre affinities . item genres
  x_genre_affinity_mean x_genre_affinity / max(1, item_n_genres)
  x_year_gap            |item_year - user_mean_item_year|
  x_pop_gap             item_log_count - user_mean_item_pop
  x_rating_gap          item_mean_rating - user_mean_rating
  retrieval_score       the retrieval model's score of the item for the user (cosine)

The reference time is the dataset's last interaction timestamp; it is also every row's
`event_timestamp` (UTC), the time as of which the features hold.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.model import layout
from recsys.model.spec import HISTORY_LEN, FeatureSpec, feature_name
from recsys.training.data.schema import Dataset

DAY = 86400.0
_YEAR_RE = re.compile(r"\((\d{4})\)\s*$")
_MAX_CATEGORIES = 20


def _unique_names(labels: list[str], prefix: str) -> list[str]:
    names: list[str] = []
    for label in labels:
        base = f"{prefix}{feature_name(label)}"
        name, n = base, 2
        while name in names:
            name, n = f"{base}_{n}", n + 1
        names.append(name)
    return [n[len(prefix) :] for n in names]


def build_feature_spec(ds: Dataset, history_len: int = HISTORY_LEN) -> FeatureSpec:
    """The spec for `ds`: genre vocabulary from its catalogue, demographic encodings from its users."""
    ref = int(ds.interactions["timestamp"].max()) if len(ds.interactions) else 0
    return spec_from_catalogues(ds.genres, ds.users, ref, history_len)


def spec_from_catalogues(
    genres: list[str], users: pd.DataFrame, reference_ts: int, history_len: int = HISTORY_LEN
) -> FeatureSpec:
    """The spec from what it depends on: the sorted genre vocabulary, the users catalogue, the reference time."""
    genre_names = _unique_names(genres, "")
    numeric, categorical = [], {}
    for col in users.columns:
        if col == "user_id":
            continue
        series = users[col]
        if pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series):
            numeric.append(col)
        else:
            counts = series.dropna().astype(str).value_counts()
            vocab = sorted(counts.index[:_MAX_CATEGORIES].tolist())
            if vocab:
                categorical[col] = vocab
    user_features = [
        "user_log_count",
        "user_count_30d",
        "user_mean_rating",
        "user_rating_std",
        "user_days_since_last",
        "user_active_days",
        "user_mean_item_pop",
        "user_mean_item_year",
        *[f"user_genre_{g}" for g in genre_names],
        *[f"user_demo_{feature_name(c)}" for c in numeric],
    ]
    for col, vocab in categorical.items():
        values = _unique_names(vocab, f"user_demo_{feature_name(col)}_")
        user_features += [f"user_demo_{feature_name(col)}_{v}" for v in values]
    item_features = [
        "item_log_count",
        "item_log_count_90d",
        "item_mean_rating",
        "item_days_since_first",
        "item_days_since_last",
        "item_year",
        "item_n_genres",
        *[f"item_genre_{g}" for g in genre_names],
    ]
    return FeatureSpec(
        user_features=user_features,
        item_features=item_features,
        genres=list(genres),
        genre_names=genre_names,
        numeric_demographics=numeric,
        categorical_demographics=categorical,
        history_len=history_len,
        reference_ts=reference_ts,
    )


def _event_timestamp(spec: FeatureSpec, n: int) -> pd.Series:
    return pd.Series(pd.to_datetime(np.full(n, spec.reference_ts, dtype=np.int64), unit="s", utc=True))


def _item_years(items: pd.DataFrame) -> np.ndarray:
    if "year" in items.columns:
        years = pd.to_numeric(items["year"], errors="coerce").to_numpy(dtype=np.float64)
    else:
        years = np.full(len(items), np.nan)
    if "title" in items.columns:
        parsed = items["title"].astype(str).str.extract(_YEAR_RE, expand=False)
        parsed = pd.to_numeric(parsed, errors="coerce").to_numpy(dtype=np.float64)
        years = np.where(np.isnan(years), parsed, years)
    known = years[~np.isnan(years)]
    fill = float(np.median(known)) if len(known) else 0.0
    return np.where(np.isnan(years), fill, years)


def genre_matrix(items: pd.DataFrame, genres: list[str]) -> np.ndarray:
    """(items, genres) float32 matrix: 1 where the item (row of `items`) has the genre of `genres` (column)."""
    col = {g: j for j, g in enumerate(genres)}
    mat = np.zeros((len(items), len(genres)), dtype=np.float32)
    for row, item_genres in enumerate(items["genres"]):
        for g in item_genres if item_genres is not None else ():
            j = col.get(g)
            if j is not None:
                mat[row, j] = 1.0
    return mat


@dataclass
class ItemSums:
    """Per-item aggregates of the interactions, indexed like the items catalogue (the item features' inputs)."""

    count: np.ndarray  # interactions
    recent: np.ndarray  # interactions in the 90 days before the reference time
    r_count: np.ndarray  # rated interactions
    r_sum: np.ndarray  # sum of their ratings
    first: np.ndarray  # first interaction timestamp (inf when none)
    last: np.ndarray  # last interaction timestamp (-inf when none)


def _item_sums(ds: Dataset, spec: FeatureSpec) -> tuple[ItemSums, float]:
    """`ItemSums` of ds (indexed like ds.items) and the global mean rating."""
    inter = ds.interactions
    items = ds.items.reset_index(drop=True)
    pos = pd.Index(items["item_id"].astype(object)).get_indexer(inter["item_id"].astype(object))
    known = pos >= 0
    pos, ts = pos[known], inter["timestamp"].to_numpy()[known]
    rating = inter["rating"].to_numpy(dtype=np.float64)[known]
    n = len(items)
    ref = spec.reference_ts
    count = np.bincount(pos, minlength=n).astype(np.float64)
    recent = np.bincount(pos[ts >= ref - 90 * DAY], minlength=n).astype(np.float64)
    has_r = ~np.isnan(rating)
    r_count = np.bincount(pos[has_r], minlength=n)
    r_sum = np.bincount(pos[has_r], weights=rating[has_r], minlength=n)
    global_mean = float(rating[has_r].mean()) if has_r.any() else 0.0
    first = np.full(n, np.inf)
    last = np.full(n, -np.inf)
    np.minimum.at(first, pos, ts)
    np.maximum.at(last, pos, ts)
    return ItemSums(count, recent, r_count, r_sum, first, last), global_mean


def item_stats(items: pd.DataFrame, sums: ItemSums, global_mean: float, reference_ts: int) -> pd.DataFrame:
    """Per-item statistics (indexed like `items`, reset) from their aggregates; used by both feature tables."""
    ref = reference_ts
    never = sums.count == 0
    return pd.DataFrame(
        {
            "item_log_count": np.log1p(sums.count),
            "item_log_count_90d": np.log1p(sums.recent),
            "item_mean_rating": (sums.r_sum + 5.0 * global_mean) / (sums.r_count + 5.0),
            "item_days_since_first": np.where(never, 0.0, (ref - sums.first) / DAY),
            "item_days_since_last": np.where(never, 0.0, (ref - sums.last) / DAY),
            "item_year": _item_years(items.reset_index(drop=True)),
        }
    )


def _item_stats(ds: Dataset, spec: FeatureSpec) -> pd.DataFrame:
    """Per-item statistics (indexed like ds.items) used by both feature tables."""
    sums, global_mean = _item_sums(ds, spec)
    return item_stats(ds.items, sums, global_mean, spec.reference_ts)


def build_item_features(ds: Dataset, spec: FeatureSpec | None = None) -> pd.DataFrame:
    """Item feature table: item_id, spec.item_features (float32), event_timestamp; one row per catalogue item."""
    spec = spec or build_feature_spec(ds)
    return item_table(ds.items, _item_stats(ds, spec), spec)


def item_table(items: pd.DataFrame, stats: pd.DataFrame, spec: FeatureSpec) -> pd.DataFrame:
    """The item feature table from the catalogue and its `item_stats` (see `build_item_features`)."""
    items = items.reset_index(drop=True)
    stats = stats.copy()
    genres = genre_matrix(items, spec.genres)
    stats["item_n_genres"] = genres.sum(axis=1)
    for j, g in enumerate(spec.genre_names):
        stats[f"item_genre_{g}"] = genres[:, j]
    out = stats[spec.item_features].astype(np.float32)
    out.insert(0, "item_id", items["item_id"].astype("string[pyarrow]").to_numpy())
    out["event_timestamp"] = _event_timestamp(spec, len(out))
    if "available" in items.columns:  # the live catalogue's availability (item_changes), for the index
        out["available"] = items["available"].fillna(True).astype(bool).to_numpy()
    return out


def _user_demographics(users: pd.DataFrame, spec: FeatureSpec, user_ids: pd.Index) -> dict[str, np.ndarray]:
    cols: dict[str, np.ndarray] = {}
    users = users.drop_duplicates("user_id").set_index(users["user_id"].drop_duplicates().astype(object))
    users = users.reindex(user_ids)
    for col in spec.numeric_demographics:
        values = pd.to_numeric(users[col] if col in users else np.nan, errors="coerce").astype(np.float64)
        values = pd.Series(values, index=user_ids)
        mean = values.mean()
        cols[f"user_demo_{feature_name(col)}"] = values.fillna(0.0 if np.isnan(mean) else mean).to_numpy()
    for col, vocab in spec.categorical_demographics.items():
        raw = users[col].astype(object) if col in users else pd.Series(None, index=user_ids, dtype=object)
        raw = raw.where(raw.isna(), raw.astype(str))
        for value, name in zip(vocab, _unique_names(vocab, f"user_demo_{feature_name(col)}_"), strict=True):
            cols[f"user_demo_{feature_name(col)}_{name}"] = (raw == value).to_numpy(dtype=np.float64)
    return cols


@dataclass
class UserSums:
    """Per-user aggregates of the interactions, indexed like the user ids (the user features' inputs)."""

    count: np.ndarray  # interactions
    recent: np.ndarray  # interactions in the 30 days before the reference time
    r_n: np.ndarray  # rated interactions
    r_sum: np.ndarray  # sum of their ratings
    r_sq: np.ndarray  # sum of their squared ratings
    first: np.ndarray  # first interaction timestamp (inf when none)
    last: np.ndarray  # last interaction timestamp (-inf when none)
    known: np.ndarray  # interactions with a catalogue item
    pop_sum: np.ndarray  # sum of item_log_count over those
    year_sum: np.ndarray  # sum of item_year over those
    genre_sum: np.ndarray  # (users, genres): how many of those have each genre


def build_user_features(ds: Dataset, spec: FeatureSpec | None = None) -> pd.DataFrame:
    """User feature table: user_id, spec.user_features (float32), event_timestamp.

    One row per user in ds.users or ds.interactions; users without interactions get zero activity.
    """
    spec = spec or build_feature_spec(ds)
    inter = ds.interactions
    user_ids = pd.Index(
        pd.unique(np.concatenate([ds.users["user_id"].astype(object).to_numpy(),
                                  inter["user_id"].astype(object).to_numpy()]))
    )
    n = len(user_ids)
    upos = user_ids.get_indexer(inter["user_id"].astype(object))
    items = ds.items.reset_index(drop=True)
    ipos = pd.Index(items["item_id"].astype(object)).get_indexer(inter["item_id"].astype(object))
    ts = inter["timestamp"].to_numpy().astype(np.float64)
    rating = inter["rating"].to_numpy(dtype=np.float64)
    ref = spec.reference_ts

    count = np.bincount(upos, minlength=n).astype(np.float64)
    recent = np.bincount(upos[ts >= ref - 30 * DAY], minlength=n).astype(np.float64)
    has_r = ~np.isnan(rating)
    r_n = np.bincount(upos[has_r], minlength=n).astype(np.float64)
    r_sum = np.bincount(upos[has_r], weights=rating[has_r], minlength=n)
    r_sq = np.bincount(upos[has_r], weights=rating[has_r] ** 2, minlength=n)
    global_mean = float(rating[has_r].mean()) if has_r.any() else 0.0
    first = np.full(n, np.inf)
    last = np.full(n, -np.inf)
    np.minimum.at(first, upos, ts)
    np.maximum.at(last, upos, ts)

    stats = _item_stats(ds, spec)
    known = ipos >= 0
    item_pop = stats["item_log_count"].to_numpy()
    item_year = stats["item_year"].to_numpy()
    genres = genre_matrix(items, spec.genres)
    genre_sum = np.zeros((n, genres.shape[1]))
    np.add.at(genre_sum, upos[known], genres[ipos[known]])
    sums = UserSums(
        count=count,
        recent=recent,
        r_n=r_n,
        r_sum=r_sum,
        r_sq=r_sq,
        first=first,
        last=last,
        known=np.bincount(upos[known], minlength=n),
        pop_sum=np.bincount(upos[known], weights=item_pop[ipos[known]], minlength=n),
        year_sum=np.bincount(upos[known], weights=item_year[ipos[known]], minlength=n),
        genre_sum=genre_sum,
    )
    return user_table(ds.users, user_ids, sums, global_mean, item_year, spec)


def user_table(
    users: pd.DataFrame,
    user_ids: pd.Index,
    sums: UserSums,
    global_mean: float,
    item_year: np.ndarray,
    spec: FeatureSpec,
) -> pd.DataFrame:
    """The user feature table from its aggregates (see `build_user_features`): `users` is the catalogue (for
    demographics), `user_ids` the rows (object Index), `item_year` every catalogue item's `item_year`."""
    ref = spec.reference_ts
    count, r_n = sums.count, sums.r_n
    mean_r = np.where(r_n > 0, sums.r_sum / np.maximum(r_n, 1), global_mean)
    var_r = np.where(r_n > 1, sums.r_sq / np.maximum(r_n, 1) - mean_r**2, 0.0)
    active = count > 0
    denom = np.maximum(sums.known, 1)
    year_fill = float(np.median(item_year)) if len(item_year) else 0.0
    cols: dict[str, np.ndarray] = {
        "user_log_count": np.log1p(count),
        "user_count_30d": sums.recent,
        "user_mean_rating": mean_r,
        "user_rating_std": np.sqrt(np.maximum(var_r, 0.0)),
        "user_days_since_last": np.where(active, (ref - sums.last) / DAY, 0.0),
        "user_active_days": np.where(active, (sums.last - sums.first) / DAY, 0.0),
        "user_mean_item_pop": sums.pop_sum / denom,
        "user_mean_item_year": np.where(active, sums.year_sum / denom, year_fill),
    }
    affinity = sums.genre_sum / np.maximum(count, 1)[:, None]
    for j, g in enumerate(spec.genre_names):
        cols[f"user_genre_{g}"] = affinity[:, j]
    cols.update(_user_demographics(users, spec, user_ids))
    out = pd.DataFrame(cols)[spec.user_features].astype(np.float32)
    out.insert(0, "user_id", pd.array(user_ids.to_numpy(), dtype="string[pyarrow]"))
    out["event_timestamp"] = _event_timestamp(spec, len(out))
    return out


def build_user_history(ds: Dataset, spec: FeatureSpec | None = None) -> pd.DataFrame:
    """Each user's most recent item ids (oldest first, at most spec.history_len): user_id,
    recent_item_ids (list of str), event_timestamp."""
    spec = spec or build_feature_spec(ds)
    inter = ds.interactions.sort_values("timestamp", kind="stable")
    grouped = inter.groupby(inter["user_id"].astype(object), sort=False)["item_id"]
    tails = grouped.apply(lambda s: [str(x) for x in s.to_numpy()[-spec.history_len :]])
    out = pd.DataFrame(
        {"user_id": pd.array(tails.index.to_numpy(), dtype="string[pyarrow]"), "recent_item_ids": tails.to_numpy()}
    )
    out["event_timestamp"] = _event_timestamp(spec, len(out))
    return out


def write_offline_tables(ds: Dataset, out_dir: Path | str, spec: FeatureSpec | None = None) -> dict[str, Path]:
    """Write the three Feast offline tables of dataset `ds` into `out_dir` (atomically each); returns paths.

    A model version holds the same tables (`recsys.model.layout`); this builds them without training
    (`recsys features materialize --data`).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    spec = spec or build_feature_spec(ds)
    frames = {
        layout.USER_FEATURES: build_user_features(ds, spec),
        layout.ITEM_FEATURES: build_item_features(ds, spec),
        layout.USER_HISTORY: build_user_history(ds, spec),
    }
    paths = {}
    for name, frame in frames.items():
        path = out / name
        tmp = path.with_suffix(".tmp")
        frame.to_parquet(tmp, index=False)
        tmp.replace(path)
        paths[name] = path
    return paths
