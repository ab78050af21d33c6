"""What "a person in Outlook" types, turned into Graph event JSON.

Keyword arguments (snake_case; the control API also accepts camelCase):
subject, start, end, time_zone (default "UTC"), organizer ("a@b" or {"name", "address"}),
sensitivity, show_as, is_all_day, recurrence (Graph `patternedRecurrence` or `recurrence(...)`),
categories, body (text), location (name), attendees (addresses), extra (raw Graph properties).
start/end: ISO text, naive datetimes (wall time in time_zone), aware datetimes, or dates (all-day).
"""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Any

from .errors import bad_request
from .model import Mailbox

FIELDS = (
    "subject start end time_zone organizer sensitivity show_as is_all_day recurrence categories body "
    "location attendees extra"
).split()
_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


def snake(key: str) -> str:
    return _CAMEL.sub("_", key).lower()


def snake_keys(data: dict) -> dict:
    return {snake(key): value for key, value in data.items()}


def _when(value: Any, tz: str) -> dict:
    if isinstance(value, datetime):
        text = value.isoformat()
    elif isinstance(value, date):
        text = value.isoformat() + "T00:00:00"
    else:
        text = str(value)
    return {"dateTime": text, "timeZone": tz}


def _address(value: Any) -> dict:
    if isinstance(value, dict):
        address = value.get("address") or value.get("emailAddress", {}).get("address")
        name = value.get("name") or value.get("emailAddress", {}).get("name") or address
        return {"emailAddress": {"name": name, "address": address}}
    return {"emailAddress": {"name": str(value).split("@")[0].replace(".", " ").title(), "address": str(value)}}


def event_body(fields: dict, mailbox: Mailbox, *, creating: bool) -> dict:
    """Graph JSON for a person's create (`creating`) or edit of an event."""
    fields = snake_keys(fields)
    unknown = set(fields) - set(FIELDS)
    if unknown:
        raise bad_request(f"Unknown person-event fields {sorted(unknown)}; use {FIELDS}.")
    tz = fields.get("time_zone") or "UTC"
    body: dict[str, Any] = {"subject": "Meeting"} if creating else {}
    simple = {"subject": "subject", "sensitivity": "sensitivity", "show_as": "showAs", "is_all_day": "isAllDay"}
    body |= {graph: fields[name] for name, graph in simple.items() if name in fields}
    body |= {name: _when(fields[name], tz) for name in ("start", "end") if name in fields}
    if "recurrence" in fields:
        body["recurrence"] = fields["recurrence"]
    if "categories" in fields:
        body["categories"] = list(fields["categories"])
    if "body" in fields:
        body["body"] = {"contentType": "text", "content": str(fields["body"])}
    if "location" in fields:
        body["location"] = {"displayName": str(fields["location"]), "locationType": "default"}
    organizer = _address(fields["organizer"]) if fields.get("organizer") else None
    if organizer:
        body["organizer"] = organizer
    if creating or "attendees" in fields:
        body["attendees"] = _attendees(fields.get("attendees") or [], mailbox, organizer)
    return body | dict(fields.get("extra") or {})


def _attendees(addresses: list, mailbox: Mailbox, organizer: dict | None) -> list[dict]:
    """A person's meeting lists the room (as a resource) and the invited people."""
    found = [
        {"type": "required", "status": {"response": "none", "time": "0001-01-01T00:00:00Z"}, **_address(a)}
        for a in addresses
    ]
    if mailbox.room is not None and organizer is not None:
        room = {"type": "resource", "status": {"response": "accepted", "time": "0001-01-01T00:00:00Z"}}
        found.append(room | {"emailAddress": {"name": mailbox.display_name, "address": mailbox.address}})
    return found


def recurrence(
    pattern: str,
    start_date: date | str,
    *,
    interval: int = 1,
    days_of_week: list[str] | None = None,
    day_of_month: int | None = None,
    index: str | None = None,
    month: int | None = None,
    first_day_of_week: str = "sunday",
    end_date: date | str | None = None,
    count: int | None = None,
    time_zone: str | None = None,
) -> dict:
    """A Graph `patternedRecurrence`; range: end_date, count (numbered) or neither (noEnd)."""
    found: dict[str, Any] = {"type": pattern, "interval": interval, "firstDayOfWeek": first_day_of_week}
    extras = {"daysOfWeek": days_of_week, "dayOfMonth": day_of_month, "index": index, "month": month}
    found |= {key: value for key, value in extras.items() if value is not None}
    kind = "endDate" if end_date is not None else "numbered" if count is not None else "noEnd"
    rng: dict[str, Any] = {"type": kind, "startDate": str(start_date)}
    if end_date is not None:
        rng["endDate"] = str(end_date)
    if count is not None:
        rng["numberOfOccurrences"] = count
    if time_zone:
        rng["recurrenceTimeZone"] = time_zone
    return {"pattern": found, "range": rng}
