"""What the event log holds, per table: files, complete and incomplete writes, rows, bytes, the hours covered."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import pyarrow.fs as pafs
import pyarrow.parquet as pq

from recsys.eventlog.layout import TABLES, complete, list_files, open_root


@dataclass(frozen=True)
class TableStats:
    """One table of the log; rows and bytes count complete writes only (what readers see)."""

    table: str
    files: int
    complete_files: int
    incomplete_files: int
    writes: int
    rows: int
    bytes: int
    oldest_hour: str
    newest_hour: str

    def as_dict(self) -> dict:
        return asdict(self)


def table_stats(uri: str) -> list[TableStats]:
    """The stats of every table of the log at `uri` (reads each complete file's Parquet footer)."""
    fs, root = open_root(uri)
    return [_stats(fs, root, table) for table in TABLES]


def _stats(fs: pafs.FileSystem, root: str, table: str) -> TableStats:
    files = list_files(fs, root, table)
    done, partial = complete(files)
    rows = sum(pq.ParquetFile(fs.open_input_file(f.path)).metadata.num_rows for f in done)
    size = sum(info.size or 0 for info in fs.get_file_info([f.path for f in done])) if done else 0
    hours = sorted(f"{f.date} {f.hour}:00" for f in done)
    writes = {(f.name.topic, f.name.partition, f.name.first, f.name.last) for f in done}
    return TableStats(
        table=table,
        files=len(files),
        complete_files=len(done),
        incomplete_files=len(partial),
        writes=len(writes),
        rows=rows,
        bytes=size,
        oldest_hour=hours[0] if hours else "",
        newest_hour=hours[-1] if hours else "",
    )
