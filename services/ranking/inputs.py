"""Turn a RankRequest's feature matrices into the arrays the rankers take, rejecting bad input.

Columns are matched by name against the model's `FeatureSpec` (extra columns are ignored, so the feature
service may send more than a model uses); every problem raises `InvalidArgument` naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from recsys.common.errors import InvalidArgument
from recsys.v1 import features_pb2, ranking_pb2


@dataclass(frozen=True)
class Candidates:
    """The validated per-item part of a request: the ids and their retrieval scores (None = absent)."""

    item_ids: list[str]
    retrieval_scores: np.ndarray | None


def is_empty(matrix: features_pb2.FeatureMatrix) -> bool:
    """True when the caller sent no feature values (the service may fetch them)."""
    return len(matrix.values) == 0


def check_candidates(request: ranking_pb2.RankRequest, max_candidates: int) -> Candidates:
    """Validate item_ids and retrieval_scores: count limit, aligned lengths, finite values."""
    n = len(request.item_ids)
    if n > max_candidates:
        raise InvalidArgument("item_ids", f"{n} candidates, more than the maximum of {max_candidates}")
    item_ids = list(request.item_ids)
    if not request.retrieval_scores:
        return Candidates(item_ids, None)
    if len(request.retrieval_scores) != n:
        raise InvalidArgument(
            "retrieval_scores", f"{len(request.retrieval_scores)} scores for {n} item_ids (one per item or none)"
        )
    scores = np.asarray(request.retrieval_scores, dtype=np.float32)
    bad = np.flatnonzero(~np.isfinite(scores))
    if len(bad):
        raise InvalidArgument("retrieval_scores", f"[{bad[0]}] (item {item_ids[bad[0]]!r}) is {scores[bad[0]]}")
    return Candidates(item_ids, scores)


@lru_cache(maxsize=256)
def _column_index(have: tuple[str, ...], want: tuple[str, ...]) -> tuple[np.ndarray | None, tuple[str, ...]]:
    """Positions of `want` in `have` (None when identical) and the names missing from `have`."""
    if have == want:
        return None, ()
    pos = {name: i for i, name in enumerate(have)}
    missing = tuple(name for name in want if name not in pos)
    if missing:
        return None, missing
    return np.array([pos[name] for name in want], dtype=np.int64), ()


def _matrix(matrix: features_pb2.FeatureMatrix, field: str, want: tuple[str, ...]) -> np.ndarray:
    """The matrix as float32 (rows, len(want)) in `want` order; checks shape and names."""
    names = tuple(matrix.names)
    if not names:
        raise InvalidArgument(f"{field}.names", "empty (one name per column is required)")
    if len(set(names)) != len(names):
        raise InvalidArgument(f"{field}.names", "duplicate column names")
    values = np.asarray(matrix.values, dtype=np.float32)
    if len(values) % len(names):
        raise InvalidArgument(f"{field}.values", f"{len(values)} values is not a multiple of {len(names)} names")
    rows = len(values) // len(names)
    if matrix.entity_ids and len(matrix.entity_ids) != rows:
        raise InvalidArgument(f"{field}.entity_ids", f"{len(matrix.entity_ids)} ids for {rows} rows of values")
    index, missing = _column_index(names, want)
    if missing:
        shown = ", ".join(missing[:5]) + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else "")
        raise InvalidArgument(f"{field}.names", f"missing feature(s) the model needs: {shown}")
    mat = values.reshape(rows, len(names))
    if index is not None:
        mat = mat[:, index]
    finite = np.isfinite(mat)
    if not finite.all():
        row, col = (int(v[0]) for v in np.nonzero(~finite))
        entity = f" ({matrix.entity_ids[row]!r})" if matrix.entity_ids else ""
        raise InvalidArgument(f"{field}.values", f"row {row}{entity} column {want[col]!r} is {mat[row, col]}")
    return mat


def user_row(matrix: features_pb2.FeatureMatrix, want: tuple[str, ...], field: str = "user_features") -> np.ndarray:
    """One user's features (len(want),) from a one-row matrix."""
    mat = _matrix(matrix, field, want)
    if mat.shape[0] != 1:
        raise InvalidArgument(field, f"{mat.shape[0]} rows (exactly one user row is required)")
    return mat[0]


def item_rows(
    matrix: features_pb2.FeatureMatrix, item_ids: list[str], want: tuple[str, ...], field: str = "item_features"
) -> np.ndarray:
    """The items' features (len(item_ids), len(want)), one row per item_ids entry and in the same order."""
    mat = _matrix(matrix, field, want)
    if mat.shape[0] != len(item_ids):
        raise InvalidArgument(field, f"{mat.shape[0]} rows for {len(item_ids)} item_ids (one row per item)")
    if matrix.entity_ids:
        ids = list(matrix.entity_ids)
        if ids != item_ids:
            i = next(i for i, (a, b) in enumerate(zip(ids, item_ids, strict=True)) if a != b)
            raise InvalidArgument(f"{field}.entity_ids", f"[{i}] is {ids[i]!r} but item_ids[{i}] is {item_ids[i]!r}")
    return mat
