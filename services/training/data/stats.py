"""Summary statistics of a `Dataset`: counts, density, activity quantiles, popularity, genres, time span."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from recsys.training.data.schema import Dataset

QUANTILES = {"min": 0.0, "p25": 0.25, "p50": 0.5, "p75": 0.75, "p90": 0.9, "p99": 0.99, "max": 1.0}


def dataset_stats(ds: Dataset) -> dict:
    """A JSON-ready summary of `ds`."""
    inter = ds.interactions
    n = len(inter)
    per_user = inter["user_id"].value_counts().to_numpy()
    per_item = inter["item_id"].value_counts()
    n_users, n_items = len(per_user), len(ds.items)
    counts = np.sort(per_item.to_numpy())[::-1]
    ratings = inter["rating"].to_numpy()
    rated = ratings[~np.isnan(ratings)]
    stats = {
        "name": ds.name,
        "source": ds.meta.get("source"),
        "interactions": n,
        "users": n_users,
        "users_in_catalogue": len(ds.users),
        "items": n_items,
        "items_with_interactions": len(counts),
        "density": n / (n_users * n_items) if n_users and n_items else 0.0,
        "per_user": _quantiles(per_user),
        "per_item": _quantiles(counts),
        "popularity": {
            "top_1pct_items_share": _top_share(counts, n_items, 0.01, n),
            "top_10pct_items_share": _top_share(counts, n_items, 0.10, n),
            "gini": _gini(np.concatenate([counts, np.zeros(n_items - len(counts))])),
        },
        "ratings": _ratings(rated),
        "genres": _genres(ds, per_item),
        "time": _time(inter["timestamp"].to_numpy()),
        "user_columns": [c for c in ds.users.columns if c != "user_id"],
        "item_columns": [c for c in ds.items.columns if c not in ("item_id",)],
    }
    return stats


def format_stats(stats: dict) -> str:
    """The summary as aligned text lines."""
    lines = [
        f"dataset            {stats['name']} ({stats['source'] or 'unknown source'})",
        f"interactions       {stats['interactions']:,}",
        f"users              {stats['users']:,} with interactions, {stats['users_in_catalogue']:,} in catalogue",
        f"items              {stats['items']:,} in catalogue, {stats['items_with_interactions']:,} with interactions",
        f"density            {stats['density']:.6f}",
        "per user           " + _format_quantiles(stats["per_user"]),
        "per item           " + _format_quantiles(stats["per_item"]),
        f"popularity         top 1% items {stats['popularity']['top_1pct_items_share']:.1%} of interactions, "
        f"top 10% {stats['popularity']['top_10pct_items_share']:.1%}, gini {stats['popularity']['gini']:.3f}",
    ]
    r = stats["ratings"]
    if r["count"]:
        dist = ", ".join(f"{k}: {v:,}" for k, v in r["distribution"].items()) if r["distribution"] else ""
        lines.append(
            f"ratings            {r['count']:,} rated, mean {r['mean']:.3f}, "
            f"range {r['min']:g}-{r['max']:g}" + (f"  ({dist})" if dist else "")
        )
    else:
        lines.append("ratings            none (implicit feedback)")
    g = stats["genres"]
    top = ", ".join(f"{name} {count:,}" for name, count in list(g["items_per_genre"].items())[:10])
    lines.append(
        f"genres             {g['count']} distinct, {g['items_without_genres']:,} items without; "
        f"items per genre: {top}{' ...' if g['count'] > 10 else ''}"
    )
    t = stats["time"]
    lines.append(f"time               {t['first']} .. {t['last']} ({t['span_days']:.1f} days)")
    if stats["user_columns"]:
        lines.append(f"user columns       {', '.join(stats['user_columns'])}")
    lines.append(f"item columns       {', '.join(stats['item_columns'])}")
    return "\n".join(lines)


def _quantiles(values: np.ndarray) -> dict:
    if len(values) == 0:
        return {k: 0 for k in (*QUANTILES, "mean")}
    out = {k: float(np.quantile(values, q)) for k, q in QUANTILES.items()}
    out["mean"] = float(values.mean())
    return out


def _format_quantiles(q: dict) -> str:
    return "  ".join(f"{k} {v:,.0f}" if k != "mean" else f"mean {v:,.1f}" for k, v in q.items())


def _top_share(sorted_counts: np.ndarray, n_items: int, fraction: float, total: int) -> float:
    k = max(1, int(round(n_items * fraction)))
    return float(sorted_counts[:k].sum() / total) if total else 0.0


def _gini(counts: np.ndarray) -> float:
    """Gini coefficient of interactions over the catalogue (0 = uniform, 1 = one item takes all)."""
    if counts.sum() == 0:
        return 0.0
    x = np.sort(counts.astype(np.float64))
    n = len(x)
    return float((2 * np.arange(1, n + 1) - n - 1).dot(x) / (n * x.sum()))


def _ratings(rated: np.ndarray) -> dict:
    if len(rated) == 0:
        return {"count": 0, "mean": None, "min": None, "max": None, "distribution": {}}
    values, counts = np.unique(rated, return_counts=True)
    distribution = {f"{v:g}": int(c) for v, c in zip(values, counts, strict=True)} if len(values) <= 20 else {}
    return {
        "count": int(len(rated)),
        "mean": float(rated.mean()),
        "min": float(rated.min()),
        "max": float(rated.max()),
        "distribution": distribution,
    }


def _genres(ds: Dataset, per_item: pd.Series) -> dict:
    items = ds.items[["item_id", "genres"]].copy()
    items["n"] = items["item_id"].map(per_item).fillna(0).astype(np.int64).to_numpy()
    exploded = items.explode("genres").dropna(subset=["genres"])
    items_per = exploded["genres"].value_counts()
    interactions_per = exploded.groupby("genres")["n"].sum().sort_values(ascending=False)
    return {
        "count": int(len(items_per)),
        "items_without_genres": int(sum(1 for g in ds.items["genres"] if not g)),
        "items_per_genre": {str(k): int(v) for k, v in items_per.items()},
        "interactions_per_genre": {str(k): int(v) for k, v in interactions_per.items()},
    }


def _time(ts: np.ndarray) -> dict:
    first, last = int(ts.min()), int(ts.max())
    iso = lambda t: dt.datetime.fromtimestamp(t, dt.UTC).isoformat().replace("+00:00", "Z")  # noqa: E731
    return {
        "first": iso(first),
        "last": iso(last),
        "first_ts": first,
        "last_ts": last,
        "span_days": (last - first) / 86_400,
    }
