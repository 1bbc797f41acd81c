"""`recsys eventlog run | retention | stats`: the log writer, retention by age, and what the log holds."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from recsys.common.config import ConfigError
from recsys.common.errors import CliError

if TYPE_CHECKING:
    from recsys.eventlog.settings import EventLogSettings


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eventlog", help="the event log: Kafka impressions and events as partitioned Parquet (for retraining)"
    )
    sub = parser.add_subparsers(dest="eventlog_command", required=True)
    run = sub.add_parser("run", help="consume Kafka into the log until SIGTERM (the log writer process)")
    run.set_defaults(func=_run)

    keep = sub.add_parser("retention", help="delete the hours (event time) older than --days")
    keep.add_argument("--days", type=int, default=None, help="days kept (default RECSYS_EVENTLOG_RETENTION_DAYS)")
    keep.add_argument("--uri", default=None, help="log root (default RECSYS_EVENTLOG_URI)")
    keep.set_defaults(func=_retention)

    stats = sub.add_parser("stats", help="rows per table, files, complete / incomplete writes, newest hour")
    stats.add_argument("--uri", default=None, help="log root (default RECSYS_EVENTLOG_URI)")
    stats.add_argument("--json", action="store_true", help="print JSON")
    stats.set_defaults(func=_stats)


def _settings() -> EventLogSettings:
    from recsys.eventlog.settings import EventLogSettings

    try:
        return EventLogSettings.from_env()
    except ConfigError as exc:
        raise CliError(str(exc)) from exc


def _run(args: argparse.Namespace) -> int:
    from recsys.eventlog.main import main

    try:
        return main()
    except ConfigError as exc:
        raise CliError(str(exc)) from exc


def _retention(args: argparse.Namespace) -> int:
    from recsys.eventlog.retention import expire

    settings = _settings()
    days = settings.retention_days if args.days is None else args.days
    if days < 1:
        raise CliError(f"retention keeps at least 1 day (got {days}; 0 in the environment means keep everything)")
    report = expire(args.uri or settings.uri, days)
    print(f"deleted {report.files} files ({report.writes} writes) and {len(report.folders)} empty folders older "
          f"than {days} days; {report.kept_for_newer_parts} expired parts kept while their writes have newer parts")
    return 0


def _stats(args: argparse.Namespace) -> int:
    from recsys.eventlog.stats import table_stats

    uri = args.uri or _settings().uri
    tables = table_stats(uri)
    if args.json:
        print(json.dumps({"uri": uri, "tables": [t.as_dict() for t in tables]}))
        return 0
    print(f"event log at {uri}")
    for t in tables:
        print(f"  {t.table}: {t.rows} rows in {t.complete_files} files ({t.writes} writes, {t.bytes} bytes); "
              f"{t.incomplete_files} files of incomplete writes; hours {t.oldest_hour or '-'} .. "
              f"{t.newest_hour or '-'}")
    return 0
