"""Delimited text files read fast with pyarrow, and diagnosed precisely when they are malformed.

The fast path parses with pyarrow (multi-threaded, typed). When that fails, or a value breaks a rule
pyarrow does not check (empty ids, missing integers, non-finite numbers), the file is scanned again
with Python's csv module to find the first bad line and column, so the error reads like
"interactions.csv line 17, column timestamp: 'abc' is not an integer".
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from recsys.training.data.schema import DataError

_ARROW_TYPES = {"id": pa.string(), "str": pa.string(), "int": pa.int64(), "float": pa.float64()}
_INT = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_UNIT_SEPARATOR = "\x1f"  # stands in for a multi-character delimiter such as MovieLens' "::"
_INT64 = (-(2**63), 2**63 - 1)


@dataclass(frozen=True)
class Col:
    """A column we read: `name` in our frames, `kind` in id|str|int|float, `source` its name in the file."""

    name: str
    kind: str
    source: str = ""

    def __post_init__(self) -> None:
        if not self.source:
            object.__setattr__(self, "source", self.name)


@dataclass(frozen=True)
class TextFile:
    """How to read one delimited file; `names` for files without a header line."""

    path: Path
    delimiter: str = ","
    names: tuple[str, ...] | None = None
    quoting: bool = True
    encodings: tuple[str, ...] = ("utf-8",)

    @property
    def display(self) -> str:
        return self.path.name


def read_text(spec: TextFile, cols: Sequence[Col], optional: Sequence[Col] = (), keep_extra: bool = False) -> pa.Table:
    """The columns `cols` (+ `optional` ones present, + all others if `keep_extra`), renamed and typed.

    Types: id/str -> string (ids non-empty), int -> int64 (required), float -> float64 (empty -> null).
    Raises `DataError` naming the file, line and column of the first problem.
    """
    names = list(spec.names) if spec.names else _header(spec)
    missing = [c.source for c in cols if c.source not in names]
    if missing:
        raise DataError(f"{spec.display}: missing column(s) {', '.join(missing)} (header: {', '.join(names)})")
    wanted = list(cols) + [c for c in optional if c.source in names]
    types = {c.source: _ARROW_TYPES[c.kind] for c in wanted}
    include = None if keep_extra else [c.source for c in wanted]
    try:
        table = _arrow_read(spec, names, types, include)
    except pa.ArrowInvalid as exc:
        _raise_first_problem(spec, names, wanted)
        if not keep_extra:
            raise DataError(f"{spec.display}: {exc}") from exc
        # The problem is in a column whose type pyarrow inferred from the first rows: keep those as text.
        try:
            table = _arrow_read(spec, names, {n: types.get(n, pa.string()) for n in names}, include)
        except pa.ArrowInvalid as exc2:
            raise DataError(f"{spec.display}: {exc2}") from exc2
    if _breaks_rules(table, wanted):
        _raise_first_problem(spec, names, wanted)
        raise DataError(f"{spec.display}: invalid values")
    return table.rename_columns([_rename(n, wanted) for n in table.column_names])


def row_lines(spec: TextFile, rows: Sequence[int]) -> list[int]:
    """Line numbers (1-based, as an editor shows them) of data rows given by 0-based index."""
    wanted = set(rows)
    found: dict[int, int] = {}
    for index, (line, _) in enumerate(_rows(spec)):
        if index in wanted:
            found[index] = line
            if len(found) == len(wanted):
                break
    return [found.get(r, 0) for r in rows]


def _rename(source: str, wanted: Sequence[Col]) -> str:
    for col in wanted:
        if col.source == source:
            return col.name
    return source


def _arrow_read(spec: TextFile, names: list[str], types: dict, include: list[str] | None) -> pa.Table:
    source, delimiter = _arrow_source(spec)
    return pcsv.read_csv(
        source,
        read_options=pcsv.ReadOptions(column_names=list(spec.names) if spec.names else None),
        parse_options=pcsv.ParseOptions(
            delimiter=delimiter, quote_char='"' if spec.quoting else False, double_quote=spec.quoting
        ),
        convert_options=pcsv.ConvertOptions(
            column_types=types,
            include_columns=include,
            null_values=[""],
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    )


def _arrow_source(spec: TextFile):
    """What pyarrow reads: the path itself when possible, else the transcoded text."""
    if len(spec.delimiter) == 1 and spec.encodings == ("utf-8",):
        return str(spec.path), spec.delimiter
    return io.BytesIO(_text(spec).encode("utf-8")), _delimiter(spec)


def _delimiter(spec: TextFile) -> str:
    return spec.delimiter if len(spec.delimiter) == 1 else _UNIT_SEPARATOR


def _text(spec: TextFile) -> str:
    """The whole file decoded, multi-character delimiters replaced (for files pyarrow cannot read as is)."""
    text = spec.path.read_bytes().decode(_encoding(spec))
    return text.replace(spec.delimiter, _UNIT_SEPARATOR) if len(spec.delimiter) > 1 else text


def _encoding(spec: TextFile) -> str:
    """The first of `spec.encodings` that decodes the whole file (checked in a streaming pass)."""
    names = ["utf-8-sig" if e == "utf-8" else e for e in spec.encodings]
    if len(names) == 1:
        return names[0]
    data = spec.path.read_bytes()
    for name in names:
        try:
            data.decode(name)
            return name
        except UnicodeDecodeError:
            continue
    line = _first_undecodable_line(spec.path, names[0])
    raise DataError(f"{spec.display} line {line}: not valid {spec.encodings[0]} text")


def _first_undecodable_line(path: Path, encoding: str) -> int | None:
    try:
        for _ in _decoded_lines(path, encoding):
            pass
    except _Undecodable as exc:
        return exc.line
    return None


class _Undecodable(Exception):
    def __init__(self, line: int) -> None:
        super().__init__(line)
        self.line = line


def _decoded_lines(path: Path, encoding: str) -> Iterator[str]:
    """Lines decoded one by one (a newline byte never sits inside a utf-8 or latin-1 character)."""
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                yield raw.decode(encoding)
            except UnicodeDecodeError:
                raise _Undecodable(number) from None


def _rows(spec: TextFile, with_header: bool = False) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of each non-empty row, the header row skipped unless `with_header`.

    Streams the file, so it is cheap for a header and bounded in memory for a diagnosis.
    """
    encoding = _encoding(spec)
    quoting = csv.QUOTE_MINIMAL if spec.quoting else csv.QUOTE_NONE
    header_pending = spec.names is None and not with_header
    lines = _decoded_lines(spec.path, encoding)
    if len(spec.delimiter) > 1:
        lines = (line.replace(spec.delimiter, _UNIT_SEPARATOR) for line in lines)
    reader = csv.reader(lines, delimiter=_delimiter(spec), quoting=quoting)
    try:
        for fields in reader:
            if not fields:
                continue  # pyarrow skips empty lines too
            if header_pending:
                header_pending = False
                continue
            yield reader.line_num, fields
    except _Undecodable as exc:
        raise DataError(f"{spec.display} line {exc.line}: not valid {spec.encodings[0]} text") from None
    except csv.Error as exc:
        raise DataError(f"{spec.display} line {reader.line_num}: {exc}") from exc


def _header(spec: TextFile) -> list[str]:
    for _, fields in _rows(spec, with_header=True):
        return [f.strip() for f in fields]
    raise DataError(f"{spec.display}: empty file (expected a header line)")


def _breaks_rules(table: pa.Table, wanted: Sequence[Col]) -> bool:
    """Whether a value breaks a rule that pyarrow's parsing let through."""
    for col in wanted:
        column = table[col.source]
        if col.kind == "id" and pc.any(pc.equal(column, "")).as_py():
            return True
        if col.kind == "int" and column.null_count:
            return True
        if col.kind == "float" and pc.any(pc.invert(pc.is_finite(column))).as_py():
            return True
    return False


def _raise_first_problem(spec: TextFile, names: list[str], wanted: Sequence[Col]) -> None:
    """Scan the file and raise `DataError` for its first bad line; return when none is found."""
    positions = [(names.index(c.source), c) for c in wanted]
    for line, fields in _rows(spec):
        if len(fields) != len(names):
            raise DataError(f"{spec.display} line {line}: expected {len(names)} columns, got {len(fields)}")
        for position, col in positions:
            problem = _check(col.kind, fields[position])
            if problem:
                raise DataError(f"{spec.display} line {line}, column {col.source}: {problem}")


def _check(kind: str, value: str) -> str | None:
    if kind == "id":
        return "missing value" if value == "" else None
    if kind == "str":
        return None
    text = value.strip()
    if kind == "int":
        if not text:
            return "missing value"
        if not _INT.fullmatch(text):
            return f"{value!r} is not an integer"
        if not _INT64[0] <= int(text) <= _INT64[1]:
            return f"{value!r} is out of the 64-bit integer range"
        return None
    if text and not _FLOAT.fullmatch(text):
        return f"{value!r} is not a number"
    return None
