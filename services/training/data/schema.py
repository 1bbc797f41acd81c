"""The in-memory dataset every offline job works on.

Ids are strings everywhere (pyarrow-backed), so any source format maps onto them; models factorize
them to contiguous integers themselves.

- interactions: user_id (str), item_id (str), rating (float32, NaN when absent), timestamp (int64,
  epoch seconds), sorted by (timestamp, user_id).
- items: item_id (str), title (str), genres (list of str, may be empty), and optionally more columns;
  every interacted item appears here (missing ones are added with empty metadata by the loaders).
- users: user_id (str) plus any demographic columns (may be only user_id).
- exposures (optional, from the event log: `recsys.training.data.from_log`): one row per logged impression,
  user_id, item_id, request_id (str), position (int32, 0 = top), timestamp (int64, epoch seconds), variant,
  model_version (str), label (int8: 1 when clicked or purchased, 0 when shown without either), propensity
  (float32, the examination probability of the position, in (0, 1]) and weight (float32, the ranker
  training weight: 1 / propensity for label 1, 1 for label 0); sorted by (timestamp, user_id), ids in the
  catalogues. None when the dataset has no logged traffic.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa

from recsys.common.errors import CliError

ID_DTYPE = "string[pyarrow]"
INTERACTION_COLUMNS = ("user_id", "item_id", "rating", "timestamp")
ITEM_COLUMNS = ("item_id", "title", "genres")
EXPOSURE_DTYPES = {
    "user_id": ID_DTYPE,
    "item_id": ID_DTYPE,
    "request_id": ID_DTYPE,
    "position": "int32",
    "timestamp": "int64",
    "variant": ID_DTYPE,
    "model_version": ID_DTYPE,
    "label": "int8",
    "propensity": "float32",
    "weight": "float32",
}
EXPOSURE_COLUMNS = tuple(EXPOSURE_DTYPES)


@dataclass
class Dataset:
    """Interactions plus item and user metadata; `name` says where it came from."""

    interactions: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame
    name: str = "dataset"
    meta: dict = field(default_factory=dict)
    exposures: pd.DataFrame | None = None

    @property
    def n_users(self) -> int:
        return int(self.interactions["user_id"].nunique())

    @property
    def n_items(self) -> int:
        return int(len(self.items))

    @property
    def genres(self) -> list[str]:
        """Sorted distinct genres over the catalogue."""
        return sorted({g for gs in self.items["genres"] for g in gs})


class DataError(CliError):
    """A dataset file or frame breaks the contract; the message names the file, line and column."""


def arrow_to_pandas(table: pa.Table) -> pd.DataFrame:
    """Arrow table -> DataFrame with every string column as `string[pyarrow]` (lists stay numpy arrays)."""
    mapping = {pa.string(): pd.StringDtype("pyarrow"), pa.large_string(): pd.StringDtype("pyarrow")}
    return table.to_pandas(types_mapper=mapping.get)


def genre_lists(values) -> list[list[str]]:
    """Any column of genre sequences (lists, numpy arrays, None/NaN/NA) -> Python lists of str."""
    return [[] if _is_missing(v) else [str(g) for g in v] for v in values]


def _is_missing(value) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value))


def validate(ds: Dataset) -> None:
    """Raise `DataError` naming the first way `ds` breaks the column contract in this module's docstring."""
    inter, items, users = ds.interactions, ds.items, ds.users
    where = f"dataset {ds.name!r}"
    if len(inter) == 0:
        raise DataError(f"{where}: no interactions")
    for frame, label, columns in (
        (inter, "interactions", INTERACTION_COLUMNS),
        (items, "items", ITEM_COLUMNS),
        (users, "users", ("user_id",)),
    ):
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise DataError(f"{where}: {label} lacks column(s) {', '.join(missing)}")
    expected = {
        ("interactions", "user_id"): ID_DTYPE,
        ("interactions", "item_id"): ID_DTYPE,
        ("interactions", "rating"): "float32",
        ("interactions", "timestamp"): "int64",
        ("items", "item_id"): ID_DTYPE,
        ("items", "title"): ID_DTYPE,
        ("users", "user_id"): ID_DTYPE,
    }
    frames = {"interactions": inter, "items": items, "users": users}
    for (label, column), dtype in expected.items():
        actual = frames[label][column].dtype
        if actual != dtype:
            raise DataError(f"{where}: {label}.{column} has dtype {actual}, expected {dtype}")
    for label, column in (
        ("interactions", "user_id"),
        ("interactions", "item_id"),
        ("items", "item_id"),
        ("users", "user_id"),
    ):
        if frames[label][column].isna().any():
            raise DataError(f"{where}: {label}.{column} has missing values")
    if not inter["timestamp"].is_monotonic_increasing:
        raise DataError(f"{where}: interactions are not sorted by timestamp")
    for frame, label, column in ((items, "items", "item_id"), (users, "users", "user_id")):
        dup = frame[column].duplicated()
        if dup.any():
            raise DataError(f"{where}: {label}.{column} repeats {frame[column][dup].iloc[0]!r}")
    if not all(isinstance(g, list) for g in items["genres"]):
        raise DataError(f"{where}: items.genres must hold Python lists of str")
    _known_ids(inter, "interactions", items, users, where)
    if ds.exposures is not None:
        validate_exposures(ds.exposures, items, users, where)


def validate_exposures(exp: pd.DataFrame, items: pd.DataFrame, users: pd.DataFrame, where: str) -> None:
    """Raise `DataError` naming the first way the exposures frame breaks the contract in the module docstring."""
    missing = [c for c in EXPOSURE_COLUMNS if c not in exp.columns]
    if missing:
        raise DataError(f"{where}: exposures lack column(s) {', '.join(missing)}")
    for column, dtype in EXPOSURE_DTYPES.items():
        if exp[column].dtype != dtype:
            raise DataError(f"{where}: exposures.{column} has dtype {exp[column].dtype}, expected {dtype}")
    for column in ("user_id", "item_id", "request_id"):
        if exp[column].isna().any():
            raise DataError(f"{where}: exposures.{column} has missing values")
    checks = (
        ((exp["position"] < 0).to_numpy(), "position must be >= 0"),
        (~exp["label"].isin((0, 1)).to_numpy(), "label must be 0 or 1"),
        (~((exp["propensity"] > 0) & (exp["propensity"] <= 1)).to_numpy(), "propensity must be in (0, 1]"),
        (~(np.isfinite(exp["weight"]) & (exp["weight"] > 0)).to_numpy(), "weight must be finite and > 0"),
    )
    for bad, problem in checks:
        if bad.any():
            raise DataError(f"{where}: exposures row {int(np.argmax(bad)) + 1}: {problem}")
    if not exp["timestamp"].is_monotonic_increasing:
        raise DataError(f"{where}: exposures are not sorted by timestamp")
    _known_ids(exp, "exposures", items, users, where)


def _known_ids(frame: pd.DataFrame, name: str, items: pd.DataFrame, users: pd.DataFrame, where: str) -> None:
    """Every item_id / user_id of `frame` must be in the catalogues."""
    for label, column, catalogue in (("items", "item_id", items), ("users", "user_id", users)):
        unknown = ~frame[column].isin(catalogue[column])
        if unknown.any():
            raise DataError(f"{where}: {name} refer to {column} {frame[column][unknown].iloc[0]!r} absent from {label}")
