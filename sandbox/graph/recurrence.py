"""Expand Graph `patternedRecurrence` objects into occurrence dates.

Patterns: daily, weekly (daysOfWeek, firstDayOfWeek, interval), absoluteMonthly,
relativeMonthly, absoluteYearly, relativeYearly. Ranges: endDate, numbered, noEnd.
Dates are generated in the series' own zone; callers add the time of day.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterator
from datetime import date, timedelta

from .errors import bad_request

DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
INDEXES = ("first", "second", "third", "fourth", "last")
PATTERNS = ("daily", "weekly", "absoluteMonthly", "relativeMonthly", "absoluteYearly", "relativeYearly")
RANGES = ("endDate", "noEnd", "numbered")
_NEEDS = {
    "weekly": ("daysOfWeek",),
    "absoluteMonthly": ("dayOfMonth",),
    "relativeMonthly": ("daysOfWeek",),
    "absoluteYearly": ("dayOfMonth", "month"),
    "relativeYearly": ("daysOfWeek", "month"),
}
MAX_OCCURRENCES = 999


def validate(recurrence: object) -> None:
    """400 for what Graph refuses: unknown types, missing members, bad values."""
    try:
        _validate(recurrence)  # type: ignore[arg-type]
    except (AttributeError, TypeError, ValueError):
        raise bad_request("The recurrence is malformed.", "RequestBodyRead") from None


def _validate(recurrence: dict) -> None:
    pattern, rng = recurrence.get("pattern") or {}, recurrence.get("range") or {}
    kind = pattern.get("type")
    if kind not in PATTERNS:
        raise bad_request(f"Invalid recurrence pattern type '{kind}'.", "ErrorInvalidRequest")
    if int(pattern.get("interval") or 0) < 1:
        raise bad_request("The recurrence pattern interval must be at least 1.", "ErrorInvalidRequest")
    for member in _NEEDS.get(kind, ()):
        if not pattern.get(member):
            raise bad_request(f"Recurrence pattern '{kind}' requires '{member}'.", "ErrorInvalidRequest")
    if any(day not in DAYS for day in pattern.get("daysOfWeek") or ()):
        raise bad_request("Invalid value in recurrence daysOfWeek.", "ErrorInvalidRequest")
    if rng.get("type") not in RANGES or not rng.get("startDate"):
        raise bad_request("The recurrence range needs a valid type and a startDate.", "ErrorInvalidRequest")
    if rng["type"] == "endDate" and (not rng.get("endDate") or _day(rng["endDate"]) < _day(rng["startDate"])):
        raise bad_request("The recurrence range endDate must not be before its startDate.", "ErrorInvalidRequest")
    if rng["type"] == "numbered" and not 0 < int(rng.get("numberOfOccurrences") or 0) <= MAX_OCCURRENCES:
        raise bad_request("numberOfOccurrences must be between 1 and 999.", "ErrorInvalidRequest")


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text[:10])
    except ValueError:
        raise bad_request(f"Invalid date '{text}' in recurrence range.", "ErrorInvalidRequest") from None


def dates(recurrence: dict, until: date) -> Iterator[date]:
    """Occurrence dates in order, from the range start, stopping after `until` or the range end."""
    pattern, rng = recurrence["pattern"], recurrence["range"]
    last = _day(rng["endDate"]) if rng["type"] == "endDate" else until
    limit = int(rng.get("numberOfOccurrences") or 0) if rng["type"] == "numbered" else None
    produced = 0
    for day in _candidates(pattern, _day(rng["startDate"])):
        if day > min(last, until) or (limit is not None and produced >= limit):
            return
        produced += 1
        yield day


def _candidates(pattern: dict, start: date) -> Iterator[date]:
    generate = {
        "daily": _daily,
        "weekly": _weekly,
        "absoluteMonthly": _monthly,
        "relativeMonthly": _monthly,
        "absoluteYearly": _yearly,
        "relativeYearly": _yearly,
    }[pattern["type"]]
    return (day for day in generate(pattern, start) if day >= start)


def _daily(pattern: dict, start: date) -> Iterator[date]:
    step = timedelta(days=int(pattern["interval"]))
    day = start
    while True:
        yield day
        day += step


def _weekly(pattern: dict, start: date) -> Iterator[date]:
    first = DAYS.index(pattern.get("firstDayOfWeek") or "sunday")
    week = start - timedelta(days=(start.weekday() - first) % 7)
    offsets = sorted((DAYS.index(day) - first) % 7 for day in pattern["daysOfWeek"])
    while True:
        yield from (week + timedelta(days=offset) for offset in offsets)
        week += timedelta(weeks=int(pattern["interval"]))


def _monthly(pattern: dict, start: date) -> Iterator[date]:
    year, month = start.year, start.month
    while True:
        day = _in_month(pattern, year, month)
        if day is not None:
            yield day
        month += int(pattern["interval"])
        year, month = year + (month - 1) // 12, (month - 1) % 12 + 1


def _yearly(pattern: dict, start: date) -> Iterator[date]:
    year = start.year
    while True:
        day = _in_month(pattern, year, int(pattern["month"]))
        if day is not None:
            yield day
        year += int(pattern["interval"])


def _in_month(pattern: dict, year: int, month: int) -> date | None:
    """The pattern's day in one month: a day number (clamped to the month) or an index."""
    length = calendar.monthrange(year, month)[1]
    if pattern["type"].startswith("absolute"):
        return date(year, month, min(int(pattern["dayOfMonth"]), length))
    wanted = {DAYS.index(day) for day in pattern["daysOfWeek"]}
    matching = [date(year, month, d) for d in range(1, length + 1) if date(year, month, d).weekday() in wanted]
    index = INDEXES.index(pattern.get("index") or "first")
    if index == len(INDEXES) - 1:
        return matching[-1]
    return matching[index] if index < len(matching) else None
