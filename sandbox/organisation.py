"""The organisation `make run` seeds into the emulators: rooms in Outlook, resources and bookings in anny.

Everything is placed relative to today in the organisation's time zone, so the two weeks of
bookings and meetings always fall inside the sync window, whatever day the sandbox starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

TIME_ZONE = "Europe/Berlin"
DAYS = 14
MEETING_SERVICE = "Meeting room"
DESK_SERVICE = "Desk"
PEOPLE = (("Ada Lovelace", "ada@example.org"), ("Grace Hopper", "grace@example.org"),
          ("Alan Turing", "alan@example.org"), ("Katherine Johnson", "katherine@example.org"))
ORGANISERS = (("Alice Wagner", "alice@contoso.com"), ("Bob Schulz", "bob@contoso.com"))


@dataclass(frozen=True)
class SandboxRoom:
    """A meeting room: a room mailbox in Outlook and a parent resource in anny (children are desks etc.)."""

    slug: str
    name: str
    email: str
    building: str
    floor: int
    capacity: int
    children: tuple[str, ...] = ()
    mapped: bool = True


ROOMS = (
    SandboxRoom("room-berlin", "Room Berlin", "room-berlin@contoso.com", "Berlin HQ", 2, 10,
                ("Desk Berlin 1", "Desk Berlin 2")),
    SandboxRoom("room-munich", "Room Munich", "room-munich@contoso.com", "Munich Office", 1, 6,
                ("Phone booth Munich",)),
    SandboxRoom("room-hamburg", "Room Hamburg", "room-hamburg@contoso.com", "Hamburg Harbour", 4, 14),
    SandboxRoom("room-cologne", "Room Cologne", "room-cologne@contoso.com", "Cologne Studio", 0, 4, mapped=False),
)


def slug_of(name: str) -> str:
    return name.lower().replace(" ", "-")


def _weekdays(today: date) -> list[date]:
    return [d for d in (today + timedelta(days=n) for n in range(DAYS)) if d.weekday() < 5]


def _at(day: date, hour: int, minute: int = 0) -> str:
    return datetime(day.year, day.month, day.day, hour, minute).isoformat(timespec="minutes")


def offsite_day(today: date) -> date:
    """The day of the all-day meeting in Room Munich (anny has no bookings in that room then)."""
    return _weekdays(today + timedelta(days=3))[0]


def anny_seed(today: date) -> dict[str, Any]:
    """Parents with children, two services, customers, two weeks of bookings, a series, desk bookings."""
    resources = [{"name": room.name, "slug": room.slug, "timezone": TIME_ZONE,
                  "children": [{"name": child, "slug": slug_of(child)} for child in room.children]}
                 for room in ROOMS if room.mapped]
    bookings: list[dict[str, Any]] = []
    for n, day in enumerate(_weekdays(today)):
        person = PEOPLE[n % len(PEOPLE)][1]
        other = PEOPLE[(n + 1) % len(PEOPLE)][1]
        bookings.append(_booking("room-berlin", day, (9, 0), (10, 0), person, "Customer workshop"))
        if n % 2 == 0:
            bookings.append(_booking("room-hamburg", day, (11, 0), (12, 0), other, "Interview"))
        if day != offsite_day(today):
            bookings.append(_booking("room-munich", day, (14, 0), (15, 30), other, "Project review"))
        if n % 3 == 0:
            bookings.append({**_booking("desk-berlin-1", day, (8, 0), (17, 0), person, ""), "service": DESK_SERVICE})
    first = _weekdays(today)[0]
    return {
        "resources": resources,
        "services": [{"name": MEETING_SERVICE, "price": 0}, {"name": DESK_SERVICE, "price": 0}],
        "customers": [{"full_name": name, "email": email} for name, email in PEOPLE],
        "bookings": bookings,
        "series": [{"resource": "room-hamburg", "start": _at(first, 16), "end": _at(first, 17), "count": 3,
                    "interval_days": 7, "service": MEETING_SERVICE, "customer": PEOPLE[2][1],
                    "description": "Weekly customer call"}],
    }


def _booking(resource: str, day: date, start: tuple[int, int], end: tuple[int, int], customer: str,
             description: str) -> dict[str, Any]:
    booking = {"resource": resource, "service": MEETING_SERVICE, "customer": customer,
               "start": _at(day, *start), "end": _at(day, *end), "status": "accepted"}
    return booking | ({"description": description} if description else {})


def graph_seed(today: date) -> dict[str, Any]:
    """Room mailboxes with buildings and capacities, two people, and meetings a person made in Outlook:
    a single one, a private one, a recurring one and an all-day one."""
    days = _weekdays(today + timedelta(days=1))
    monday = today + timedelta(days=7 - today.weekday())
    alice, bob = (email for _, email in ORGANISERS)
    events = [
        _meeting("room-berlin@contoso.com", "Board", days[0], (13, 0), (14, 30), alice),
        _meeting("room-berlin@contoso.com", "Salary review", days[1], (15, 0), (15, 30), bob, sensitivity="private"),
        _meeting("room-hamburg@contoso.com", "Weekly planning", monday, (10, 0), (11, 0), alice,
                 recurrence={"pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["monday"]},
                             "range": {"type": "numbered", "numberOfOccurrences": 3,
                                       "startDate": monday.isoformat(), "recurrenceTimeZone": TIME_ZONE}}),
        {"mailbox": "room-munich@contoso.com", "subject": "Offsite preparation", "organizer": bob,
         "start": offsite_day(today).isoformat(), "end": (offsite_day(today) + timedelta(days=1)).isoformat(),
         "time_zone": TIME_ZONE, "is_all_day": True, "show_as": "busy"},
        _meeting("room-cologne@contoso.com", "Design sprint", days[2], (9, 0), (12, 0), bob),
    ]
    return {
        "rooms": [{"email": r.email, "displayName": r.name, "capacity": r.capacity, "building": r.building,
                   "floorNumber": r.floor} for r in ROOMS],
        "mailboxes": [{"email": email, "displayName": name} for name, email in ORGANISERS],
        "events": events,
    }


def _meeting(room: str, subject: str, day: date, start: tuple[int, int], end: tuple[int, int], organizer: str,
             **extra: Any) -> dict[str, Any]:
    return {"mailbox": room, "subject": subject, "organizer": organizer, "start": _at(day, *start),
            "end": _at(day, *end), "time_zone": TIME_ZONE, "show_as": "busy", **extra}


def today_here(now: datetime | None = None) -> date:
    return (now or datetime.now(ZoneInfo(TIME_ZONE))).astimezone(ZoneInfo(TIME_ZONE)).date()
