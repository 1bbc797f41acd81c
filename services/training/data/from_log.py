"""Training data from the event log: logged traffic joined onto a base dataset (`recsys dataset build`).

- Positives: click, purchase and rating events become interactions (rating = the event's value for ratings,
  NaN otherwise; timestamp = event time in seconds), one per event_id, appended to the base interactions.
  Ratings count because a rating says the user consumed the item, which is what an interaction means in
  every dataset we import (MovieLens rows are ratings); views are left out (a page view is not a choice).
- Exposures: every logged impression, labelled 1 when the same (request_id, item_id) got a click or a
  purchase and 0 otherwise (the exposure-aware negatives of the rankers), with its served position, variant
  and model version. A click whose impression is not in the window still gives a labelled row (its position
  comes from the event), so every logged positive keeps its position.
- Position bias is corrected by inverse-propensity weights, not a position feature: the propensity of each
  position is fitted on these exposures (`propensity.fit_position_bias`: theta_k = (1 + k)^-eta, eta
  estimated with a relevance per item so the ranker's own ordering does not pass for bias, clipped at 0.1).
  A labelled row weighs 1 / theta_k, a negative 1. Weights leave serving untouched (a position feature
  would need a made-up value at serving and a value for the base interactions and sampled negatives, which
  were never shown anywhere), and they make the loss on clicks an unbiased estimate of the loss on relevance.
- Items and users the base lacks get catalogue rows with empty metadata, as the loaders add them; then the
  catalogue's changes (the log's `items` table) apply: new items, changed titles and genres, and availability
  (`item_changes`).
- A base built from the log itself (daily builds on yesterday's output) keeps its exposures, refitted with
  the new ones; its windows are in `meta["log_windows"]`, and a window overlapping one of them is refused
  (the events would count twice: interactions carry no event ids to deduplicate by).

A click that arrives after `until_ms` does not label its impression: the log snapshot is the truth.
Deterministic: the same log snapshot, window and base give the same frames, row for row (every frame is put
in a total order of its keys; nothing depends on file or set order).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from recsys.training.data.item_changes import apply_item_changes, read_item_changes
from recsys.training.data.loaders import ITEM_FILL, with_missing
from recsys.training.data.log_tables import LogTable, read_events, read_impressions
from recsys.training.data.propensity import DEFAULT_FLOOR, PositionBias, fit_position_bias
from recsys.training.data.schema import EXPOSURE_DTYPES, ID_DTYPE, DataError, Dataset, validate

CLICKS = ("click", "purchase")  # label an impression 1
POSITIVES = (*CLICKS, "rating")  # become interactions
_EXPOSURE_ORDER = ("timestamp", "user_id", "request_id", "position", "item_id")


def build_from_log(
    log_uri: str,
    base: Dataset,
    since_ms: int | None = None,
    until_ms: int | None = None,
    floor: float = DEFAULT_FLOOR,
    progress: bool = False,
) -> Dataset:
    """`base` plus the log's positives as interactions and its impressions as `exposures` (module docstring);
    the log window is since_ms <= timestamp_ms < until_ms (None: open)."""
    windows = _windows(base, since_ms, until_ms)
    steps = tqdm(total=4, desc="dataset build", unit="step", delay=1.0, disable=not progress)
    events = read_events(log_uri, POSITIVES, since_ms, until_ms)
    impressions = read_impressions(log_uri, since_ms, until_ms)
    steps.update(2)
    added = log_interactions(events.rows)
    exposures = label_exposures(impressions.rows, events.rows[events.rows["type"].isin(CLICKS)])
    if base.exposures is not None:
        exposures = _ordered(_stack(base.exposures, exposures), list(_EXPOSURE_ORDER))
    bias = fit_position_bias(pd.factorize(exposures["item_id"], sort=True)[0], exposures["position"].to_numpy(),
                             exposures["label"].to_numpy(), floor=floor)
    exposures = with_weights(exposures, bias)
    steps.update(1)
    interactions = _ordered(_stack(base.interactions, added), ["timestamp", "user_id"])
    items, items_added = with_missing(base.items, _ids(added, exposures, "item_id"), "item_id", ITEM_FILL)
    users, users_added = with_missing(base.users, _ids(added, exposures, "user_id"), "user_id", {})
    items, item_changes = apply_item_changes(items, read_item_changes(log_uri, until_ms))
    meta = {**base.meta, "log_windows": windows, "log": {
        "uri": str(log_uri), "since_ms": since_ms, "until_ms": until_ms,
        "positives_added": len(added), "positives_by_type": _type_counts(events.rows),
        "exposures": len(exposures), "clicked_exposures": int(exposures["label"].sum()),
        "items_added": items_added, "users_added": users_added, "item_changes": item_changes,
        "events": _counts(events), "impressions": _counts(impressions), "position_bias": bias.to_dict(),
    }}
    ds = Dataset(interactions, items, users, name=base.name, meta=meta, exposures=exposures)
    validate(ds)
    steps.update(1)
    steps.close()
    return ds


def log_interactions(events: pd.DataFrame) -> pd.DataFrame:
    """Positive events -> interaction rows (user_id, item_id, rating, timestamp), in a total order."""
    rating = np.where(events["type"] == "rating", events["value"].to_numpy(np.float64, na_value=np.nan), np.nan)
    frame = pd.DataFrame({
        "user_id": events["user_id"].astype(ID_DTYPE).array,
        "item_id": events["item_id"].astype(ID_DTYPE).array,
        "rating": rating.astype(np.float32),
        "timestamp": (events["timestamp_ms"].to_numpy(np.int64) // 1000),
        "event_id": events["event_id"].to_numpy(),
    })
    frame = _ordered(frame, ["timestamp", "user_id", "item_id", "event_id"])
    return frame.drop(columns="event_id")


def label_exposures(impressions: pd.DataFrame, clicks: pd.DataFrame) -> pd.DataFrame:
    """Impressions labelled by the clicks/purchases on the same (request_id, item_id), plus the clicks whose
    impression is not logged; columns of `schema.EXPOSURE_DTYPES` but propensity and weight."""
    keys = ["request_id", "item_id"]
    clicks = clicks[clicks["request_id"] != ""].sort_values([*keys, "timestamp_ms", "event_id"], kind="stable")
    clicks = clicks.drop_duplicates(keys)
    shown = impressions[[*keys, "user_id", "position", "timestamp_ms", "variant", "model_version"]]
    labelled = shown.merge(clicks[keys].assign(label=1), on=keys, how="left")
    orphans = clicks.merge(shown[keys], on=keys, how="left", indicator=True)
    orphans = orphans[orphans["_merge"] == "left_only"].assign(model_version="", label=1)
    frame = _stack(labelled, orphans[labelled.columns])
    frame["label"] = frame["label"].fillna(0)
    frame["timestamp"] = frame.pop("timestamp_ms").to_numpy(np.int64) // 1000
    frame["propensity"] = frame["weight"] = 1.0
    frame = frame[list(EXPOSURE_DTYPES)].astype(EXPOSURE_DTYPES)
    return _ordered(frame, list(_EXPOSURE_ORDER))


def with_weights(exposures: pd.DataFrame, bias: PositionBias) -> pd.DataFrame:
    """`exposures` with the propensity of each row's position and its weight (1 / propensity when labelled)."""
    out = exposures.copy()
    propensity = bias.propensity(out["position"].to_numpy())
    out["propensity"] = propensity.astype(np.float32)
    out["weight"] = np.where(out["label"].to_numpy() == 1, 1.0 / propensity, 1.0).astype(np.float32)
    return out


def _windows(base: Dataset, since_ms: int | None, until_ms: int | None) -> list[list[int | None]]:
    """The base's log windows plus [since_ms, until_ms); DataError when the new one overlaps one of them."""
    windows = [list(w) for w in base.meta.get("log_windows", [])]
    for start, end in windows:
        if (until_ms is None or start is None or until_ms > start) and (since_ms is None or end is None
                                                                         or since_ms < end):
            raise DataError(f"dataset {base.name!r} already holds the log window [{start}, {end}) (epoch ms); "
                            f"build on a base without it, or from a window that does not overlap it")
    return [*windows, [since_ms, until_ms]]


def _ordered(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """`frame` stably sorted by `keys` (text compared as text), with a fresh index."""
    columns = [frame[k].to_numpy() if frame[k].dtype.kind in "iuf" else pd.factorize(frame[k], sort=True)[0]
               for k in keys]
    order = np.lexsort([np.arange(len(frame)), *reversed(columns)])
    return frame.iloc[order].reset_index(drop=True)


def _stack(first: pd.DataFrame, second: pd.DataFrame) -> pd.DataFrame:
    """The rows of `first` then `second` (same columns), without concatenating an empty frame."""
    if len(second) == 0 or len(first) == 0:
        return (first if len(second) == 0 else second).reset_index(drop=True)
    return pd.concat([first, second], ignore_index=True)


def _ids(interactions: pd.DataFrame, exposures: pd.DataFrame, column: str) -> pd.Series:
    return pd.Series(np.concatenate([interactions[column].to_numpy(object), exposures[column].to_numpy(object)]),
                     dtype=ID_DTYPE)


def _type_counts(events: pd.DataFrame) -> dict[str, int]:
    counts = events["type"].value_counts()
    return {str(t): int(counts[t]) for t in sorted(counts.index)}


def _counts(table: LogTable) -> dict[str, int]:
    return {"read": table.read, "duplicates": table.duplicates, "malformed": table.malformed}
