"""Read datasets (MovieLens and our generic folder format) into a `Dataset`; write the generic format.

Recognised folders (or a `.zip` of one, or a folder holding exactly one such folder):
- generic: `interactions.csv|parquet` (user_id, item_id, [rating], timestamp), optional
  `items.csv|parquet` (item_id, [title], [genres `|`-separated], more columns kept) and
  `users.csv|parquet` (user_id, more columns kept); `dataset.json` and `truth.npz` when we wrote it;
  `exposures.parquet` (the logged impressions of `recsys dataset build`, see `schema.py`) when present.
- MovieLens 100k (`u.data`, `u.item`, `u.user`), 1m / 10m (`ratings.dat`, `movies.dat`, [`users.dat`]),
  latest / 20m / 25m / 32m (`ratings.csv`, `movies.csv`).

Interactions whose item (user) is absent from a present catalogue get a row with empty metadata,
counted in `meta["items_added"]` (`meta["users_added"]`). Malformed files raise `DataError` naming the
file, line and column.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import uuid
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recsys.training.data.schema import (
    EXPOSURE_DTYPES,
    ID_DTYPE,
    DataError,
    Dataset,
    arrow_to_pandas,
    genre_lists,
    validate,
)
from recsys.training.data.synthetic import GroundTruth
from recsys.training.data.textfiles import Col, TextFile, read_text, row_lines

FORMAT_NAME = "recsys-dataset"
FORMAT_VERSION = 1
TRUTH_FILE = "truth.npz"
EXPOSURES_FILE = "exposures.parquet"
MANIFEST = "dataset.json"

ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
ML1M_OCCUPATIONS = (
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student", "customer service",
    "doctor/health care", "executive/managerial", "farmer", "homemaker", "K-12 student", "lawyer",
    "programmer", "retired", "sales/marketing", "scientist", "self-employed", "technician/engineer",
    "tradesman/craftsman", "unemployed", "writer",
)  # fmt: skip
NO_GENRES = {"(no genres listed)", "unknown", ""}

_INTERACTION_COLS = [Col("user_id", "id"), Col("item_id", "id"), Col("timestamp", "int")]
_RATING = Col("rating", "float")


def load_dataset(path: str | os.PathLike) -> Dataset:
    """Read the dataset at `path` (format detected from the files present)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    if path.is_file() and zipfile.is_zipfile(path):
        with tempfile.TemporaryDirectory(prefix="recsys-zip-") as tmp:
            with zipfile.ZipFile(path) as archive:
                archive.extractall(tmp)
            ds = load_dataset(tmp)
        if str(ds.meta.get("path", "")).startswith(tmp):  # not from a manifest: name the archive instead
            ds.meta["path"] = str(path)
        if ds.name == Path(tmp).name:
            ds.name = path.stem
        return ds
    if not path.is_dir():
        raise DataError(f"{path}: expected a dataset folder or a .zip of one")
    root = _dataset_root(path)
    kind = detect_format(root)
    if kind is None:
        raise DataError(
            f"{path}: not a dataset folder (expected interactions.csv or .parquet, MovieLens u.data, "
            f"ratings.dat, or ratings.csv with movies.csv)"
        )
    return _READERS[kind](root)


def detect_format(root: Path) -> str | None:
    """'generic', 'ml-100k', 'ml-1m', 'ml-10m', 'ml-latest', or None when nothing is recognised."""
    if (root / "interactions.csv").exists() or (root / "interactions.parquet").exists():
        return "generic"
    if (root / "u.data").exists():
        return "ml-100k"
    if (root / "ratings.dat").exists():
        return "ml-1m" if (root / "users.dat").exists() else "ml-10m"
    if (root / "ratings.csv").exists() and (root / "movies.csv").exists():
        return "ml-latest"
    return None


def _dataset_root(path: Path) -> Path:
    """`path`, or its only subfolder when `path` holds nothing recognisable (an unpacked archive)."""
    if detect_format(path) is not None:
        return path
    children = [c for c in path.iterdir() if not c.name.startswith((".", "__"))]
    if len(children) == 1 and children[0].is_dir() and detect_format(children[0]) is not None:
        return children[0]
    return path


# ---------------------------------------------------------------------------------------------- MovieLens


def _read_ml100k(root: Path) -> Dataset:
    inter = read_text(
        TextFile(root / "u.data", delimiter="\t", names=("user_id", "item_id", "rating", "timestamp")),
        [*_INTERACTION_COLS, _RATING],
    )
    items = users = None
    if (root / "u.item").exists():
        genre_names = _ml100k_genres(root)
        flags = [f"g{j}" for j in range(len(genre_names))]
        spec = TextFile(
            root / "u.item",
            delimiter="|",
            quoting=False,
            encodings=("latin-1",),
            names=("item_id", "title", "release_date", "video_release_date", "imdb_url", *flags),
        )
        table = read_text(spec, [Col("item_id", "id"), Col("title", "str"), *(Col(f, "int") for f in flags)])
        matrix = np.column_stack([table[f].to_numpy() for f in flags]).astype(bool) if flags else None
        names = np.array(genre_names, dtype=object)
        genres = [[g for g in names[row] if g not in NO_GENRES] for row in matrix]
        items = _items_frame(table["item_id"], table["title"], genres, _lines(spec))
    if (root / "u.user").exists():
        spec = TextFile(
            root / "u.user", delimiter="|", quoting=False, names=("user_id", "age", "gender", "occupation", "zip_code")
        )
        table = read_text(
            spec,
            [
                Col("user_id", "id"),
                Col("age", "int"),
                Col("gender", "str"),
                Col("occupation", "str"),
                Col("zip_code", "str"),
            ],
        )
        users = _users_frame(table, _lines(spec))
    return _assemble(root.name, {"source": "movielens-100k", "path": str(root)}, inter, "u.data", items, users)


def _ml100k_genres(root: Path) -> tuple[str, ...]:
    """Genre names by flag position, from u.genre when present."""
    path = root / "u.genre"
    if not path.exists():
        return ML100K_GENRES
    pairs = []
    for n, line in enumerate(path.read_bytes().decode("latin-1").splitlines(), start=1):
        if not line.strip():
            continue
        name, _, index = line.rpartition("|")
        if not name or not index.strip().isdigit():
            raise DataError(f"u.genre line {n}: expected 'name|index', got {line!r}")
        pairs.append((int(index), name))
    return tuple(name for _, name in sorted(pairs))


def _read_ml1m(root: Path) -> Dataset:
    dat = {"delimiter": "::", "quoting": False, "encodings": ("utf-8", "latin-1")}
    ratings = {**dat, "encodings": ("latin-1",)}  # ids and numbers only: skip the utf-8 check
    inter = read_text(
        TextFile(root / "ratings.dat", names=("user_id", "item_id", "rating", "timestamp"), **ratings),
        [*_INTERACTION_COLS, _RATING],
    )
    items = users = None
    if (root / "movies.dat").exists():
        spec = TextFile(root / "movies.dat", names=("item_id", "title", "genres"), **dat)
        table = read_text(spec, [Col("item_id", "id"), Col("title", "str"), Col("genres", "str")])
        items = _items_frame(table["item_id"], table["title"], _split_genres(table["genres"]), _lines(spec))
    if (root / "users.dat").exists():
        spec = TextFile(root / "users.dat", names=("user_id", "gender", "age", "occupation", "zip_code"), **dat)
        table = read_text(
            spec,
            [
                Col("user_id", "id"),
                Col("gender", "str"),
                Col("age", "int"),
                Col("occupation", "int"),
                Col("zip_code", "str"),
            ],
        )
        codes = table["occupation"].to_numpy()
        bad = np.flatnonzero((codes < 0) | (codes >= len(ML1M_OCCUPATIONS)))
        if len(bad):
            line = row_lines(spec, [int(bad[0])])[0]
            raise DataError(f"users.dat line {line}, column occupation: unknown occupation code {codes[bad[0]]}")
        names = pa.array(np.array(ML1M_OCCUPATIONS, dtype=object)[codes], type=pa.string())
        table = table.set_column(table.column_names.index("occupation"), "occupation", names)
        users = _users_frame(table, _lines(spec))
    source = "movielens-1m" if users is not None else "movielens-10m"
    return _assemble(root.name, {"source": source, "path": str(root)}, inter, "ratings.dat", items, users)


def _read_ml_latest(root: Path) -> Dataset:
    inter = read_text(TextFile(root / "ratings.csv"), [
        Col("user_id", "id", "userId"), Col("item_id", "id", "movieId"), Col("timestamp", "int"),
        Col("rating", "float"),
    ])  # fmt: skip
    spec = TextFile(root / "movies.csv")
    table = read_text(spec, [Col("item_id", "id", "movieId"), Col("title", "str"), Col("genres", "str")])
    items = _items_frame(table["item_id"], table["title"], _split_genres(table["genres"]), _lines(spec))
    return _assemble(root.name, {"source": "movielens-latest", "path": str(root)}, inter, "ratings.csv", items, None)


# ---------------------------------------------------------------------------------------------- generic


def _read_generic(root: Path) -> Dataset:
    manifest = _read_manifest(root)
    inter_path = _one_of(root, "interactions")
    if inter_path.suffix == ".csv":
        inter = read_text(TextFile(inter_path), _INTERACTION_COLS, optional=[_RATING])
    else:
        inter = _parquet_columns(inter_path, _INTERACTION_COLS, optional=[_RATING])
    items, users = read_catalogues(root)
    if manifest is not None:
        name, meta = manifest["name"], dict(manifest.get("meta", {}))
    else:
        name, meta = root.name, {"source": "generic", "path": str(root)}
    ds = _assemble(name, meta, inter, inter_path.name, items, users, sort=manifest is None)
    if (root / EXPOSURES_FILE).exists():
        ds.exposures = _read_exposures(root / EXPOSURES_FILE)
        validate(ds)
    if manifest is not None:
        _check_counts(ds, manifest)
    if (root / TRUTH_FILE).exists():
        ds.meta["truth"] = GroundTruth.load(root / TRUTH_FILE)
    return ds


def generic_files(path: str | os.PathLike) -> tuple[Path, Path, dict | None]:
    """A generic dataset folder's root, its interactions file (.csv or .parquet) and its manifest (None when
    absent), for readers that stream the interactions (`recsys.training.ray_features`)."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{path}: expected a dataset folder")
    root = _dataset_root(path)
    if detect_format(root) != "generic":
        raise DataError(f"{path}: not a generic dataset folder (interactions.csv or .parquet)")
    return root, _one_of(root, "interactions"), _read_manifest(root)


def coerce_interactions(table: pa.Table, where: str, only: tuple[str, ...] | None = None) -> pa.Table:
    """An interactions table (a whole file or one block of it) with the contract's columns and types:
    user_id, item_id (string), timestamp (int64 seconds), rating (float64, null when absent; only if present).
    `only`: just these of the required columns (e.g. ("timestamp",))."""
    cols = [c for c in _INTERACTION_COLS if only is None or c.name in only]
    return _coerce_columns(table, where, cols, optional=[_RATING] if only is None else [])


def read_catalogues(root: Path) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """The items and users catalogues of the generic folder `root` (None when a file is absent), as read by
    `load_dataset` before ids only found in the interactions are added (`with_missing`)."""
    items = users = None
    items_path = _one_of(root, "items", required=False)
    if items_path is not None:
        if items_path.suffix == ".csv":
            spec = TextFile(items_path)
            table = read_text(
                spec, [Col("item_id", "id")], optional=[Col("title", "str"), Col("genres", "str")], keep_extra=True
            )
            locate = _lines(spec)
        else:
            table = _parquet_columns(
                items_path, [Col("item_id", "id")], optional=[Col("title", "str")], keep_extra=True
            )
            locate = _parquet_rows(items_path)
        items = _generic_items(table, items_path, locate)
    users_path = _one_of(root, "users", required=False)
    if users_path is not None:
        if users_path.suffix == ".csv":
            spec = TextFile(users_path)
            table = read_text(spec, [Col("user_id", "id")], keep_extra=True)
            locate = _lines(spec)
        else:
            table = _parquet_columns(users_path, [Col("user_id", "id")], keep_extra=True)
            locate = _parquet_rows(users_path)
        users = _users_frame(table, locate)
    return items, users


def _read_manifest(root: Path) -> dict | None:
    path = root / MANIFEST
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{MANIFEST}: not valid JSON ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise DataError(f"{MANIFEST}: not a {FORMAT_NAME} manifest")
    if manifest.get("version", 0) > FORMAT_VERSION:
        raise DataError(f"{MANIFEST}: format version {manifest['version']} is newer than {FORMAT_VERSION}")
    return manifest


def _check_counts(ds: Dataset, manifest: dict) -> None:
    """A manifest written by `save_dataset` must agree with the files (catches truncated copies)."""
    counts = manifest.get("counts", {})
    actual = _counts(ds)
    for key, value in actual.items():
        if key in counts and counts[key] != value:
            raise DataError(f"{MANIFEST}: says {counts[key]} {key}, the files hold {value}")


def _counts(ds: Dataset) -> dict[str, int]:
    counts = {"interactions": len(ds.interactions), "items": len(ds.items), "users": len(ds.users)}
    if ds.exposures is not None:
        counts["exposures"] = len(ds.exposures)
    return counts


def _read_exposures(path: Path) -> pd.DataFrame:
    """exposures.parquet with the contract's dtypes (validated by the caller)."""
    try:
        frame = arrow_to_pandas(pq.read_table(path))
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path.name}: not a readable Parquet file ({exc})") from exc
    missing = [c for c in EXPOSURE_DTYPES if c not in frame.columns]
    if missing:
        raise DataError(f"{path.name}: missing column(s) {', '.join(missing)} (found: {', '.join(frame.columns)})")
    try:
        return frame[list(EXPOSURE_DTYPES)].astype(EXPOSURE_DTYPES)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{path.name}: {exc}") from exc


def _one_of(root: Path, stem: str, required: bool = True) -> Path | None:
    found = [p for p in (root / f"{stem}.parquet", root / f"{stem}.csv") if p.exists()]
    if len(found) > 1:
        raise DataError(f"{root}: both {stem}.csv and {stem}.parquet exist; keep one")
    if not found:
        if required:
            raise DataError(f"{root}: missing {stem}.csv or {stem}.parquet")
        return None
    return found[0]


def _parquet_columns(path: Path, cols: list[Col], optional=(), keep_extra: bool = False) -> pa.Table:
    """A Parquet table with `cols` coerced to the contract's types; errors name the file, row and column."""
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path.name}: not a readable Parquet file ({exc})") from exc
    return _coerce_columns(table, path.name, cols, optional, keep_extra)


def _coerce_columns(table: pa.Table, where: str, cols: list[Col], optional=(), keep_extra: bool = False) -> pa.Table:
    missing = [c.source for c in cols if c.source not in table.column_names]
    if missing:
        raise DataError(f"{where}: missing column(s) {', '.join(missing)} (found: {', '.join(table.column_names)})")
    wanted = list(cols) + [c for c in optional if c.source in table.column_names]
    for col in wanted:
        index = table.column_names.index(col.source)
        table = table.set_column(index, col.name, _coerce(table.column(index), col, where))
    if not keep_extra:
        table = table.select([c.name for c in wanted])
    return table


def _coerce(column: pa.ChunkedArray, col: Col, where: str) -> pa.ChunkedArray:
    t = column.type
    label = f"{where}, column {col.source}"
    if col.kind in ("id", "str"):
        if pa.types.is_integer(t) or pa.types.is_dictionary(t):
            column = pc.cast(column, pa.string())
        elif pa.types.is_large_string(t):
            column = pc.cast(column, pa.string())
        elif not pa.types.is_string(t):
            raise DataError(f"{label}: type {t} cannot hold {'ids' if col.kind == 'id' else 'text'}")
        if col.kind == "id":
            _first_bad(pc.or_kleene(pc.is_null(column), pc.equal(column, "")), where, col, "missing value")
        else:
            column = pc.fill_null(column, "")
        return column
    if col.kind == "int":
        if pa.types.is_timestamp(t):
            column = pc.cast(pc.cast(column, pa.timestamp("s")), pa.int64())
        elif not pa.types.is_integer(t):
            raise DataError(f"{label}: type {t} is not an integer type")
        _first_bad(pc.is_null(column), where, col, "missing value")
        return pc.cast(column, pa.int64())
    if not (pa.types.is_floating(t) or pa.types.is_integer(t) or pa.types.is_decimal(t)):
        raise DataError(f"{label}: type {t} is not a number type")
    column = pc.cast(column, pa.float64())
    _first_bad(pc.invert(pc.is_finite(column)), where, col, "not a finite number")
    return column


def _first_bad(mask: pa.ChunkedArray, where: str, col: Col, problem: str) -> None:
    mask = pc.fill_null(mask, False)
    if pc.any(mask).as_py():
        row = int(pc.index(mask, True).as_py())
        raise DataError(f"{where} row {row + 1}, column {col.source}: {problem}")


def _generic_items(table: pa.Table, path: Path, locate: Locate) -> pd.DataFrame:
    if "genres" in table.column_names:
        column = table["genres"]
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            genres = _split_genres(column)
        elif pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
            genres = genre_lists(column.to_pylist())
        else:
            raise DataError(f"{path.name}, column genres: type {column.type} is neither text nor a list")
    else:
        genres = [[] for _ in range(table.num_rows)]
    title = table["title"] if "title" in table.column_names else pa.array([""] * table.num_rows, pa.string())
    extra = table.drop_columns([c for c in ("item_id", "title", "genres") if c in table.column_names])
    return _items_frame(table["item_id"], title, genres, locate, extra=extra)


# ---------------------------------------------------------------------------------------------- frames


def _split_genres(column) -> list[list[str]]:
    """`a|b|c` strings -> lists, '(no genres listed)' and blanks -> []."""
    split = pc.split_pattern(pc.fill_null(column, ""), "|").to_pylist()
    return [[g for g in gs if g not in NO_GENRES] for gs in split]


def _items_frame(ids, titles, genres, locate: Locate, extra: pa.Table | None = None) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "item_id": pd.arrays.ArrowStringArray(pc.cast(_chunked(ids), pa.large_string())),
            "title": pd.arrays.ArrowStringArray(pc.cast(_chunked(titles), pa.large_string())),
            "genres": genres,
        }
    )
    if extra is not None and extra.num_columns:
        frame = pd.concat([frame, arrow_to_pandas(extra)], axis=1)
    _no_duplicates(frame, "item_id", locate)
    return frame


def _users_frame(table: pa.Table, locate: Locate) -> pd.DataFrame:
    frame = arrow_to_pandas(table)
    frame["user_id"] = frame["user_id"].astype(ID_DTYPE)
    frame = frame[["user_id", *[c for c in frame.columns if c != "user_id"]]]
    _no_duplicates(frame, "user_id", locate)
    return frame


def _chunked(values) -> pa.ChunkedArray:
    return values if isinstance(values, pa.ChunkedArray) else pa.chunked_array([values])


Locate = Callable[[list[int]], list[str]]


def _lines(spec: TextFile) -> Locate:
    """Rows (0-based) -> "u.item line 12" for messages."""
    return lambda rows: [f"{spec.display} line {n}" for n in row_lines(spec, rows)]


def _parquet_rows(path: Path) -> Locate:
    return lambda rows: [f"{path.name} row {r + 1}" for r in rows]


def _no_duplicates(frame: pd.DataFrame, column: str, locate: Locate) -> None:
    dup = frame[column].duplicated()
    if not dup.any():
        return
    row = int(np.argmax(dup.to_numpy()))
    value = frame[column].iloc[row]
    first = int(np.argmax((frame[column] == value).to_numpy()))
    at, before = locate([row, first])
    raise DataError(f"{at}, column {column}: duplicate {column} {value!r} (first at {before.split(' ', 1)[1]})")


def _assemble(
    name: str,
    meta: dict,
    inter: pa.Table,
    inter_file: str,
    items: pd.DataFrame | None,
    users: pd.DataFrame | None,
    sort: bool = True,
) -> Dataset:
    """Interactions table + catalogues -> a `Dataset` that satisfies the contract."""
    if inter.num_rows == 0:
        raise DataError(f"{inter_file}: no interactions")
    if "rating" not in inter.column_names:
        inter = inter.append_column("rating", pa.nulls(inter.num_rows, pa.float32()))
    inter = inter.select(["user_id", "item_id", "rating", "timestamp"])
    if sort:
        inter = inter.take(pc.sort_indices(inter, [("timestamp", "ascending"), ("user_id", "ascending")]))
    frame = arrow_to_pandas(inter)
    frame["rating"] = frame["rating"].astype(np.float32)
    meta = dict(meta)
    items, added = with_missing(items, frame["item_id"], "item_id", ITEM_FILL)
    if added:
        meta["items_added"] = added
    users, added = with_missing(users, frame["user_id"], "user_id", {})
    if added:
        meta["users_added"] = added
    ds = Dataset(interactions=frame, items=items, users=users, name=name, meta=meta)
    validate(ds)
    return ds


def _id_order(ids: pa.Array) -> pa.Array:
    """Sort indices of ids: numerically when every id is an integer (MovieLens), else as text."""
    try:
        return pc.sort_indices(pc.cast(ids, pa.int64()))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return pc.sort_indices(ids)


ITEM_FILL = {"title": "", "genres": None}  # an item row with empty metadata (`with_missing`)


def with_missing(catalogue: pd.DataFrame | None, ids: pd.Series, column: str, fill: dict):
    """The catalogue plus rows for ids it lacks (sorted; `fill`: column -> value, None for empty lists),
    and how many were added."""
    known = catalogue[column] if catalogue is not None else pd.Series([], dtype=ID_DTYPE)
    unique = pc.unique(pa.array(ids.array, type=pa.large_string()))
    missing = unique.filter(pc.invert(pc.is_in(unique, value_set=pa.array(known.array))))
    missing = missing.take(_id_order(missing))
    n = len(missing)
    rows = pd.DataFrame({column: pd.arrays.ArrowStringArray(pc.cast(missing, pa.large_string()))})
    for key, value in fill.items():
        rows[key] = [[] for _ in range(n)] if value is None else pd.array([value] * n, dtype=ID_DTYPE)
    if catalogue is None:
        return rows.reset_index(drop=True), 0
    if n == 0:
        return catalogue.reset_index(drop=True), 0
    merged = pd.concat([catalogue, rows], ignore_index=True)
    if "genres" in merged.columns:
        merged["genres"] = [g if isinstance(g, list) else [] for g in merged["genres"]]
    return merged, n


# ---------------------------------------------------------------------------------------------- writing


def save_dataset(ds: Dataset, out_dir: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write `ds` as Parquet + `dataset.json` (+ `exposures.parquet`, `truth.npz`) into `out_dir`, atomically."""
    validate(ds)
    meta = {k: v for k, v in ds.meta.items() if k != "truth"}
    try:
        json.dumps(meta)
    except TypeError as exc:
        raise DataError(f"dataset {ds.name!r}: meta is not JSON-serialisable ({exc})") from exc
    truth = ds.meta.get("truth")
    out = Path(out_dir)
    with atomic_directory(out, overwrite=overwrite) as tmp:
        _write_parquet(ds.interactions, tmp / "interactions.parquet")
        _write_parquet(ds.items, tmp / "items.parquet")
        _write_parquet(ds.users, tmp / "users.parquet")
        if ds.exposures is not None:
            _write_parquet(ds.exposures, tmp / EXPOSURES_FILE)
        if isinstance(truth, GroundTruth):
            truth.save(tmp / TRUTH_FILE)
        write_manifest(tmp, ds.name, meta, _counts(ds))
    return out


def write_manifest(folder: Path, name: str, meta: dict, counts: dict[str, int]) -> None:
    """`dataset.json` of a dataset folder: format, name, meta, counts and the files beside it."""
    manifest = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "name": name,
        "meta": meta,
        "counts": counts,
        "files": sorted(p.name for p in folder.iterdir()),
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _write_parquet(frame: pd.DataFrame, path: Path) -> None:
    table = pa.Table.from_pandas(frame, preserve_index=False)
    if "genres" in frame.columns:
        genres = pa.array(list(frame["genres"]), type=pa.list_(pa.string()))
        table = table.set_column(table.column_names.index("genres"), "genres", genres)
    pq.write_table(table, path, compression="zstd")


@contextlib.contextmanager
def atomic_directory(target: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside `target`; on success it becomes `target`, on failure it vanishes."""
    target = Path(target)
    if target.exists() and not (target.is_dir() and not any(target.iterdir())) and not overwrite:
        raise DataError(f"{target} already exists (use --force to replace it)")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.{uuid.uuid4().hex[:12]}.tmp"
    tmp.mkdir()  # not mkdtemp: its 0700 mode would stick to the result
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if target.exists():
        old = target.parent / f".{target.name}.{uuid.uuid4().hex[:12]}.old"
        os.rename(target, old)
    os.rename(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()


_READERS = {
    "generic": _read_generic,
    "ml-100k": _read_ml100k,
    "ml-1m": _read_ml1m,
    "ml-10m": _read_ml1m,
    "ml-latest": _read_ml_latest,
}
