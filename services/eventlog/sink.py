"""Durable writes of the event log, and the clean-up of the writes a crash left incomplete.

One write is the rows of one batch of one topic partition (offsets `first`..`last`), split by event hour into
`n` parts (layout.FileName). Each part appears under its final name only once its bytes are durable:

- local folder: written to a temporary name in the part's folder (`.<final name>.<random>.tmp`, which
  `FileName.parse` and the usual readers ignore), flushed and fsync'ed, renamed over the final name
  (os.replace), and the folder fsync'ed (folders made on the way are fsync'ed into their parents too);
- object store (s3://, gs://, …): streamed to the final name with `open_output_stream`; the object appears
  whole when the upload completes (a PUT is atomic), never in part.

A write is complete when all its parts exist; until then readers skip it and, when the writer is next assigned
the partition, `recover` deletes it (its records are consumed again).
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from recsys.eventlog.batch import split_by_hour
from recsys.eventlog.layout import FileName, complete, list_files, next_offsets, partition_dir

log = logging.getLogger(__name__)

_TEMP_SUFFIX = ".tmp"


@dataclass(frozen=True)
class Part:
    """One durable part of a write."""

    path: str
    rows: int
    bytes: int


def write(
    fs: pafs.FileSystem, root: str, table: str, topic: str, partition: int, first: int, last: int, rows: pa.Table
) -> list[Part]:
    """Write `rows` (offsets first..last of topic[partition]) as the parts of one write; returns them once every
    part is durable. No rows: nothing is written."""
    hours = split_by_hour(rows)
    local = isinstance(fs, pafs.LocalFileSystem)
    parts = []
    for i, (date, hour, part) in enumerate(hours, start=1):
        folder = partition_dir(root, table, date, hour)
        name = str(FileName(topic, partition, first, last, i, len(hours)))
        size = _write_local(folder, name, part) if local else _write_remote(fs, folder, name, part)
        parts.append(Part(f"{folder}/{name}", part.num_rows, size))
    return parts


def _write_local(folder: str, name: str, rows: pa.Table) -> int:
    _make_folders(folder)
    temp = os.path.join(folder, temp_name(name))
    try:
        with open(temp, "wb") as out:
            pq.write_table(rows, out)
            out.flush()
            os.fsync(out.fileno())
            size = out.tell()
        os.replace(temp, os.path.join(folder, name))
    except BaseException:
        _remove(temp)
        raise
    _fsync_folder(folder)
    return size


def _write_remote(fs: pafs.FileSystem, folder: str, name: str, rows: pa.Table) -> int:
    with fs.open_output_stream(f"{folder}/{name}") as out:
        pq.write_table(rows, out)
        return out.tell()


def temp_name(name: str) -> str:
    """The temporary name a part is written under before it is renamed to `name`."""
    return f".{name}.{uuid.uuid4().hex[:12]}{_TEMP_SUFFIX}"


def parse_temp(name: str) -> FileName | None:
    """The final name behind a temporary file's name; None for any other name."""
    if not (name.startswith(".") and name.endswith(_TEMP_SUFFIX)):
        return None
    return FileName.parse(name[1:-len(_TEMP_SUFFIX)].rsplit(".", 1)[0])


def _make_folders(folder: str) -> None:
    """Create `folder` and its missing parents, each made durable in its parent."""
    missing = []
    path = os.path.abspath(folder)
    while not os.path.isdir(path):
        missing.append(path)
        path = os.path.dirname(path)
    for path in reversed(missing):
        try:
            os.mkdir(path)
        except FileExistsError:
            continue
        _fsync_folder(os.path.dirname(path))


def _fsync_folder(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def delete(fs: pafs.FileSystem, paths: Iterable[str]) -> int:
    """Delete files (those already gone are skipped); returns how many this call deleted."""
    deleted = 0
    for path in paths:
        try:
            fs.delete_file(path)
        except FileNotFoundError:
            continue
        deleted += 1
    return deleted


def recover(
    fs: pafs.FileSystem, root: str, table: str, partitions: set[tuple[str, int]]
) -> dict[tuple[str, int], int]:
    """Before consuming `partitions` (topic, partition) into `table`: delete their incomplete writes and
    temporary files, and return where each partition's complete writes end (the offset to resume from)."""
    files = list_files(fs, root, table)
    done, partial = complete([f for f in files if (f.name.topic, f.name.partition) in partitions])
    if partial:
        log.info("deleting incomplete writes", extra={"table": table, "files": sorted(f.path for f in partial)})
        delete(fs, [f.path for f in partial])
    if isinstance(fs, pafs.LocalFileSystem):
        delete(fs, _temp_files(f"{root.rstrip('/')}/{table}", partitions))
    return next_offsets(done)


def _temp_files(base: str, partitions: set[tuple[str, int]]) -> list[str]:
    """Temporary files of `partitions` below a local folder (left by a writer killed mid-write)."""
    found = []
    for folder, _, names in os.walk(base):
        for name in names:
            final = parse_temp(name)
            if final is not None and (final.topic, final.partition) in partitions:
                found.append(os.path.join(folder, name))
    return found
