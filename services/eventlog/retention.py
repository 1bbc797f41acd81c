"""Retention by age: delete the hour partitions (event time) older than N days, in every table.

A write whose parts all lie in expired hours is deleted whole. A write that also has a part in a kept hour (a
batch that mixed late events with recent ones) keeps its expired part until that write expires entirely:
deleting one part would make the whole write incomplete, hiding its recent rows from readers. Incomplete writes
are left to the writer, which deletes them when it is next assigned their partition. Hour and date folders
that end up empty are removed.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field

import pyarrow.fs as pafs

from recsys.eventlog.layout import KEPT_FOREVER, TABLES, LogFile, complete, hour_start_ms, list_files, open_root
from recsys.eventlog.sink import delete

log = logging.getLogger(__name__)

_DAY_MS = 86_400_000


@dataclass
class RetentionReport:
    """What one retention pass deleted."""

    cutoff_ms: int
    files: int = 0
    writes: int = 0
    folders: list[str] = field(default_factory=list)
    kept_for_newer_parts: int = 0


def expire(uri: str, days: int, now_ms: int | None = None) -> RetentionReport:
    """Delete what is older than `days` days before `now_ms` (default: now) in the log at `uri`."""
    if days < 1:
        raise ValueError(f"retention needs at least 1 day, got {days}")
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    report = RetentionReport(cutoff_ms=now_ms - days * _DAY_MS)
    fs, root = open_root(uri)
    for table in (t for t in TABLES if t not in KEPT_FOREVER):
        _expire_table(fs, root, table, report)
    if report.files or report.folders:
        log.info("retention pass", extra={"files": report.files, "writes": report.writes,
                                          "folders": len(report.folders), "cutoff_ms": report.cutoff_ms})
    return report


def _expire_table(fs: pafs.FileSystem, root: str, table: str, report: RetentionReport) -> None:
    done, _ = complete(list_files(fs, root, table))
    writes: dict[tuple, list[LogFile]] = defaultdict(list)
    for f in done:
        writes[(f.name.topic, f.name.partition, f.name.first, f.name.last)].append(f)
    for parts in writes.values():
        expired = [p for p in parts if _expired(p.date, p.hour, report.cutoff_ms)]
        if len(expired) == len(parts):
            report.files += delete(fs, [p.path for p in parts])
            report.writes += 1
        elif expired:
            report.kept_for_newer_parts += len(expired)
    report.folders.extend(_remove_empty_folders(fs, f"{root.rstrip('/')}/{table}", report.cutoff_ms))


def _expired(date: str, hour: str, cutoff_ms: int) -> bool:
    """True when the whole hour lies before the cutoff."""
    try:
        return hour_start_ms(date, hour) + 3_600_000 <= cutoff_ms
    except ValueError:  # a folder that is not a date=/hour= partition: never ours to delete
        return False


def _remove_empty_folders(fs: pafs.FileSystem, base: str, cutoff_ms: int) -> list[str]:
    """Remove the expired hour folders below `base` that hold nothing, then the date folders left empty."""
    removed = []
    for day in _folders(fs, base, "date="):
        date = day.base_name.removeprefix("date=")
        hours = _folders(fs, day.path, "hour=")
        for hour in hours:
            if _expired(date, hour.base_name.removeprefix("hour="), cutoff_ms) and _empty(fs, hour.path):
                fs.delete_dir(hour.path)
                removed.append(hour.path)
        if _empty(fs, day.path) and _expired(date, "23", cutoff_ms):
            fs.delete_dir(day.path)
            removed.append(day.path)
    return removed


def _folders(fs: pafs.FileSystem, base: str, prefix: str) -> list[pafs.FileInfo]:
    try:
        entries = fs.get_file_info(pafs.FileSelector(base, allow_not_found=True))
    except FileNotFoundError:
        return []
    return [e for e in entries if e.type == pafs.FileType.Directory and e.base_name.startswith(prefix)]


def _empty(fs: pafs.FileSystem, folder: str) -> bool:
    return not fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
