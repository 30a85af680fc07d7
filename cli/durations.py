"""`--since` values: a span back from now (`30m`, `1h30m`, `2d`) or an RFC 3339 time."""

import re
from datetime import datetime, timedelta

UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_SPAN = re.compile(r"(?:\d+(?:\.\d+)?[smhdw])+")
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def parse_duration(text: str) -> timedelta:
    """`90s`, `30m`, `1h30m`, `2d`, `1w`; ValueError for anything else or for zero."""
    span = text.strip().lower()
    if not _SPAN.fullmatch(span):
        raise ValueError(f"{text!r} is not a duration such as 30m, 1h30m or 2d")
    seconds = sum(float(n) * UNIT_SECONDS[unit] for n, unit in _PART.findall(span))
    if seconds <= 0:
        raise ValueError(f"{text!r} is zero; give a duration such as 30m")
    return timedelta(seconds=seconds)


def parse_since(text: str, now: datetime) -> datetime:
    """The moment `text` names: `now` minus a duration, or an RFC 3339 time with a zone."""
    try:
        return now - parse_duration(text)
    except ValueError as not_a_span:
        try:
            moment = datetime.fromisoformat(text.strip())
        except ValueError:
            raise not_a_span from None
    if moment.tzinfo is None:
        # A naive time could be local or UTC; guessing would silently shift the window.
        raise ValueError(f"{text!r} has no time zone; add Z or an offset such as +02:00")
    return moment


def describe_age(seconds: float) -> str:
    """`42s`, `3m 07s`, `2h 05m`, `3d 4h`: an age that reads at a glance."""
    whole = max(0, int(seconds))
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"
