"""Request filters: validation (INVALID_ARGUMENT naming the field), Milvus expressions, in-memory masks.

Milvus expressions use only forms both Milvus Lite 2.5.1 and a Milvus server accept (no unary `not`):
`available == true`, `(genre_1 == true or genre_4 == true)`, `genre_2 == false`, `item_id not in [...]`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from google.protobuf.message import Message
from google.protobuf.unknown_fields import UnknownFieldSet

from recsys.candidates import schema
from recsys.common.errors import InvalidArgument

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class FilterSpec:
    """A validated filter; genres are positions in the active index's genre vocabulary."""

    include_genres: tuple[int, ...] = ()
    exclude_genres: tuple[int, ...] = ()
    available_only: bool = False
    exclude_ids: frozenset[str] = field(default_factory=frozenset)

    def with_excluded(self, ids: Iterable[str]) -> FilterSpec:
        extra = frozenset(i for i in ids if i)
        if not extra or extra <= self.exclude_ids:
            return self
        return FilterSpec(self.include_genres, self.exclude_genres, self.available_only, self.exclude_ids | extra)

    def without_ids(self) -> FilterSpec:
        """The same filter less the excluded ids."""
        return FilterSpec(self.include_genres, self.exclude_genres, self.available_only)


def _norm(text: str) -> str:
    return re.sub(r"[^0-9a-z]+", "", text.lower())


class GenreVocabulary:
    """Resolves request genres to field positions: exact label, any case, or punctuation-free ('sci_fi')."""

    def __init__(self, genres: list[str]) -> None:
        self.genres = list(genres)
        self._lookup: dict[str, int] = {}
        for i, genre in enumerate(self.genres):
            for key in (genre, genre.lower(), _norm(genre)):
                self._lookup.setdefault(key, i)

    def position(self, genre: str) -> int | None:
        for key in (genre, genre.lower(), _norm(genre)):
            if key in self._lookup:
                return self._lookup[key]
        return None


def check_unknown_fields(message: Message, name: str) -> None:
    """Fields this server does not know (a newer client's filter) are rejected, not silently ignored."""
    unknown = [f.field_number for f in UnknownFieldSet(message)]
    if unknown:
        raise InvalidArgument(name, f"unknown field number(s) {sorted(set(unknown))} (not supported by this server)")


def _genres(values: Iterable[str], vocabulary: GenreVocabulary, name: str) -> tuple[int, ...]:
    out = []
    for i, genre in enumerate(values):
        position = vocabulary.position(genre)
        if position is None:
            known = ", ".join(vocabulary.genres[:30])
            raise InvalidArgument(f"{name}[{i}]", f"unknown genre {genre!r}; known genres: {known}")
        out.append(position)
    return tuple(sorted(set(out)))


def validate_item_ids(values: Iterable[str], name: str, max_count: int) -> list[str]:
    """Non-empty, bounded, printable ids; at most `max_count`."""
    ids = list(values)
    if len(ids) > max_count:
        raise InvalidArgument(name, f"{len(ids)} ids given, at most {max_count} allowed")
    for i, item_id in enumerate(ids):
        if not item_id:
            raise InvalidArgument(f"{name}[{i}]", "empty item id")
        if len(item_id) > schema.MAX_ID_LENGTH:
            raise InvalidArgument(f"{name}[{i}]", f"longer than {schema.MAX_ID_LENGTH} characters")
        if _CONTROL.search(item_id):
            raise InvalidArgument(f"{name}[{i}]", "contains control characters")
    return ids


def parse_filter(message, vocabulary: GenreVocabulary, max_exclude: int, name: str = "filter") -> FilterSpec:
    """Validate a `recsys.v1.ItemFilter` against the active genre vocabulary."""
    check_unknown_fields(message, name)
    ids = validate_item_ids(message.exclude_item_ids, f"{name}.exclude_item_ids", max_exclude)
    return FilterSpec(
        include_genres=_genres(message.include_genres, vocabulary, f"{name}.include_genres"),
        exclude_genres=_genres(message.exclude_genres, vocabulary, f"{name}.exclude_genres"),
        available_only=bool(message.available_only),
        exclude_ids=frozenset(ids),
    )


def _literal(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def milvus_expr(spec: FilterSpec) -> str:
    """The Milvus boolean expression of `spec` ("" = no filter)."""
    parts = []
    if spec.available_only:
        parts.append(f"{schema.AVAILABLE_FIELD} == true")
    if spec.include_genres:
        parts.append("(" + " or ".join(f"{schema.genre_field(g)} == true" for g in spec.include_genres) + ")")
    parts.extend(f"{schema.genre_field(g)} == false" for g in spec.exclude_genres)
    if spec.exclude_ids:
        ids = ", ".join(_literal(i) for i in sorted(spec.exclude_ids))
        parts.append(f"{schema.ID_FIELD} not in [{ids}]")
    return " and ".join(parts)


def allowed_mask(
    spec: FilterSpec, genre_matrix: np.ndarray, available: np.ndarray, genre_columns: np.ndarray
) -> np.ndarray:
    """Which of the given catalogue rows pass the genre and availability parts of `spec`.

    `genre_matrix` / `available` are the rows' slices; `genre_columns[g]` is the catalogue column of
    index genre g (-1 when the catalogue lacks it). Excluded ids are handled by the caller.
    """
    mask = available.copy() if spec.available_only else np.ones(len(available), dtype=bool)
    if spec.include_genres:
        cols = [genre_columns[g] for g in spec.include_genres if genre_columns[g] >= 0]
        mask &= genre_matrix[:, cols].any(axis=1) if cols else False
    for g in spec.exclude_genres:
        if genre_columns[g] >= 0:
            mask &= ~genre_matrix[:, genre_columns[g]]
    return mask
