"""Parsing and formatting of anny's ISO 8601 timestamps."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

Instant = datetime | str


def parse_instant(value: Instant, tz: str) -> datetime:
    """An aware UTC datetime; values without an offset are local time in `tz`."""
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(tz))
    return moment.astimezone(UTC)


def parse_bound(value: str, tz: str, *, end: bool) -> datetime:
    """A filter bound: a datetime, or a date meaning that day's start (or, for `end`, the next day's)."""
    if "T" in value or " " in value:
        return parse_instant(value, tz)
    day = date.fromisoformat(value) + timedelta(days=1 if end else 0)
    return parse_instant(datetime.combine(day, time()), tz)


def local_iso(moment: datetime, tz: str) -> str:
    """`2026-11-24T10:00:00+01:00`: the resource's local time with its offset, as anny writes dates."""
    return moment.astimezone(ZoneInfo(tz)).isoformat(timespec="seconds")


def utc_stamp(moment: datetime) -> str:
    """`2026-11-24T09:00:00.123456Z`: record timestamps (created_at, updated_at, canceled_at)."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class Clock:
    """Strictly increasing UTC time, so `updated_at` changes on every write."""

    def __init__(self) -> None:
        self._last = datetime.min.replace(tzinfo=UTC)

    def now(self) -> datetime:
        self._last = max(datetime.now(UTC), self._last + timedelta(microseconds=1))
        return self._last
