"""Points in time as the CLI takes them: ISO date-times, epoch seconds or milliseconds, or a span back from now
(`7d`)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

_SPAN = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}
_EPOCH = re.compile(r"^\d+(?:\.\d+)?$")
#: A plain number at least this large is epoch milliseconds (as seconds it would be past the year 5000).
MS_FROM = 10**11


def parse_instant(text: str, now_s: float) -> int:
    """Epoch milliseconds of `text`: `2024-05-01`, `2024-05-01T12:00[:00][Z|+02:00]` (no zone: UTC), epoch
    seconds (`1714521600`) or milliseconds (`1714521600000`, any number from MS_FROM), or a span before `now_s`
    (`90s`, `30m`, `24h`, `7d`, `2w`). ValueError otherwise."""
    value = text.strip()
    if not value:
        raise ValueError("empty time")
    span = _SPAN.match(value.lower())
    if span is not None:
        return int(round((now_s - float(span[1]) * _UNIT_S[span[2]]) * 1000))
    if _EPOCH.match(value):
        number = float(value)
        return int(round(number if number >= MS_FROM else number * 1000))
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{text!r} is not an ISO date-time, epoch seconds or milliseconds, or a span like 7d / 24h / 30m"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(round(moment.timestamp() * 1000))
