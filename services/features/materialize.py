"""Load the offline feature tables into the online store through Feast (`recsys materialize`).

Incremental by default: a view whose source table is unchanged since its last materialization goes through
Feast's `materialize_incremental` (rows newer than the last run); a view whose table was rewritten (another
training run), or that was never materialized, is materialized over the table's whole time range, because a
rebuilt table may carry rows older than the last run. `full=True` does that for every view. Feast shows a
progress bar per view.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from feast import FeatureStore

from recsys.features import definitions, offline, store
from recsys.features.settings import FeatureSettings

STATE_FILE = "materialized.json"


class MaterializeError(ValueError):
    """A requested view does not exist or cannot be materialized."""


@dataclass
class MaterializeReport:
    """What one run did: the mode per view ("full" or "incremental") and the time it took."""

    modes: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    end: datetime | None = None


def batch_views(names: list[str] | None, available: list[str]) -> list[str]:
    """The views to materialize: `names` (validated) or every batch view of the project."""
    if not names:
        return list(available)
    unknown = [n for n in names if n not in available]
    if unknown:
        raise MaterializeError(f"unknown feature view(s) {', '.join(unknown)}; known: {', '.join(available)}")
    return list(dict.fromkeys(names))


def materialize(
    settings: FeatureSettings,
    views: list[str] | None = None,
    *,
    full: bool = False,
    fs: FeatureStore | None = None,
) -> MaterializeReport:
    """Apply the project, then materialize `views` (default: all batch views) up to now."""
    started = time.perf_counter()
    fs = fs or store.open_store(settings)
    store.apply(fs, settings)
    available = sorted({v.name for v in fs.list_feature_views()} - set(_stream_views()))
    chosen = batch_views(views, available)
    state_path = settings.feast_dir / STATE_FILE
    state = _read_state(state_path)
    now = datetime.now(UTC).replace(microsecond=0)
    report = MaterializeReport(end=now)
    incremental: list[str] = []
    digests: dict[str, str] = {}
    for name in chosen:
        fv = fs.get_feature_view(name)
        source = Path(fv.batch_source.path)
        digests[name] = offline.fingerprint(source)
        if not full and fv.most_recent_end_time is not None and state.get(name) == digests[name]:
            incremental.append(name)
            continue
        bounds = offline.timestamp_range(source)
        report.modes[name] = "full"
        if bounds is None:
            continue
        start = bounds[0].to_pydatetime() - timedelta(seconds=1)
        end = max(now, bounds[1].to_pydatetime() + timedelta(seconds=1))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fs.materialize(start_date=start, end_date=end, feature_views=[name])
        state[name] = digests[name]
        _write_state(state_path, state)
    if incremental:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fs.materialize_incremental(end_date=now, feature_views=incremental)
        for name in incremental:
            report.modes[name] = "incremental"
            state[name] = digests[name]
        _write_state(state_path, state)
    report.seconds = time.perf_counter() - started
    return report


def _stream_views() -> tuple[str, ...]:
    return (definitions.USER_STREAM, definitions.ITEM_STREAM)


def _read_state(path: Path) -> dict[str, str]:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


def _write_state(path: Path, state: dict[str, str]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=1, sort_keys=True))
    tmp.replace(path)
