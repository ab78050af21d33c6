"""The emulator's stored state: mailboxes (rooms and users), their events and categories."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from . import recurrence
from .ids import ical_uid, new_guid, occurrence_id
from .timefmt import day_start, zone


@dataclass(frozen=True)
class Timing:
    """When an event happens: UTC instants plus the zone names it was written in."""

    start: datetime
    end: datetime
    start_tz: str
    end_tz: str
    all_day: bool = False

    def shifted(self, delta: timedelta) -> Timing:
        return replace(self, start=self.start + delta, end=self.end + delta)

    def overlaps(self, start: datetime, end: datetime) -> bool:
        if self.start == self.end:
            return start <= self.start < end
        return self.start < end and self.end > start


@dataclass
class ExceptionOccurrence:
    """One occurrence of a series that was edited: its own timing and overriding properties."""

    original_start: datetime
    timing: Timing
    props: dict
    change_key: str
    created: datetime
    last_modified: datetime


@dataclass(frozen=True)
class Instance:
    """A self-contained view of one event as a client sees it (single, occurrence, exception, master)."""

    id: str
    type: str
    timing: Timing
    props: dict
    extended: dict[str, tuple[str, str]]
    change_key: str
    created: datetime
    last_modified: datetime
    ical_uid: str
    original_tz: tuple[str, str]
    series_master_id: str | None = None
    original_start: datetime | None = None


@dataclass
class StoredEvent:
    """A single event or a series master, as Exchange stores it."""

    id: str
    timing: Timing
    props: dict
    change_key: str
    created: datetime
    last_modified: datetime
    extended: dict[str, tuple[str, str]] = field(default_factory=dict)  # lower id -> (id, value)
    exceptions: dict[datetime, ExceptionOccurrence] = field(default_factory=dict)
    deleted_occurrences: set[datetime] = field(default_factory=set)

    @property
    def recurrence(self) -> dict | None:
        return self.props.get("recurrence")

    @property
    def is_series(self) -> bool:
        return self.recurrence is not None

    def as_instance(self) -> Instance:
        return Instance(
            id=self.id,
            type="seriesMaster" if self.is_series else "singleInstance",
            timing=self.timing,
            props=copy.deepcopy(self.props),
            extended=dict(self.extended),
            change_key=self.change_key,
            created=self.created,
            last_modified=self.last_modified,
            ical_uid=ical_uid(self.id),
            original_tz=(self.timing.start_tz, self.timing.end_tz),
        )

    def occurrence_timing(self, original_start: datetime) -> Timing:
        if not self.timing.all_day:
            return self.timing.shifted(original_start - self.timing.start)
        # All-day occurrences run midnight to midnight in their zone, also across a DST change.
        tz = zone(self.timing.start_tz)
        days = self.timing.end.astimezone(tz).date() - self.timing.start.astimezone(tz).date()
        first = original_start.astimezone(tz).date()
        return replace(self.timing, start=day_start(first, self.timing.start_tz),
                       end=day_start(first + days, self.timing.end_tz))

    def original_starts(self, until: datetime) -> list[datetime]:
        """Original starts of all occurrences that begin before `until` (deleted ones included)."""
        series_zone = zone(self.recurrence_zone)
        local_start = self.timing.start.astimezone(series_zone)
        last_day = until.astimezone(series_zone).date() + timedelta(days=1)
        starts = []
        for day in recurrence.dates(self.recurrence or {}, last_day):
            if self.timing.all_day:
                starts.append(day_start(day, self.timing.start_tz))
            else:
                local = datetime.combine(day, local_start.time(), tzinfo=series_zone)
                starts.append(local.astimezone(UTC))
        return starts

    @property
    def recurrence_zone(self) -> str:
        return ((self.recurrence or {}).get("range") or {}).get("recurrenceTimeZone") or self.timing.start_tz

    def instance_at(self, original_start: datetime) -> Instance | None:
        """The occurrence or exception that originally started then; None if it was deleted."""
        if original_start in self.deleted_occurrences:
            return None
        exception = self.exceptions.get(original_start)
        base = self.as_instance()
        props = {**base.props, **copy.deepcopy(exception.props)} if exception else base.props
        props.pop("recurrence", None)
        return replace(
            base,
            id=occurrence_id(self.id, original_start),
            type="exception" if exception else "occurrence",
            timing=exception.timing if exception else self.occurrence_timing(original_start),
            props=props,
            change_key=exception.change_key if exception else self.change_key,
            created=exception.created if exception else self.created,
            last_modified=exception.last_modified if exception else self.last_modified,
            ical_uid=ical_uid(self.id, original_start.astimezone(zone(self.recurrence_zone)).date()),
            series_master_id=self.id,
            original_start=original_start,
        )

    def instances(self, start: datetime, end: datetime) -> list[Instance]:
        """Occurrences and exceptions overlapping [start, end); a moved exception counts where it is now."""
        candidates = {m for m in self.original_starts(end) if self.occurrence_timing(m).overlaps(start, end)}
        candidates |= {moment for moment, exc in self.exceptions.items() if exc.timing.overlaps(start, end)}
        found = (self.instance_at(moment) for moment in sorted(candidates))
        return [inst for inst in found if inst is not None and inst.timing.overlaps(start, end)]

    def has_occurrence(self, original_start: datetime) -> bool:
        return original_start in self.original_starts(original_start + timedelta(seconds=1))


@dataclass
class Category:
    id: str
    display_name: str
    color: str

    def to_graph(self) -> dict:
        return {"id": self.id, "displayName": self.display_name, "color": self.color}


@dataclass
class Room:
    """A room as `/places/microsoft.graph.room` lists it."""

    email: str
    display_name: str
    capacity: int = 10
    id: str = field(default_factory=new_guid)
    building: str | None = None
    floor_number: int | None = None
    floor_label: str | None = None
    label: str | None = None
    nickname: str | None = None
    phone: str | None = None
    is_wheel_chair_accessible: bool = False
    booking_type: str = "standard"
    tags: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return self.to_graph()

    def to_graph(self) -> dict:
        return {
            "id": self.id,
            "emailAddress": self.email,
            "displayName": self.display_name,
            "geoCoordinates": None,
            "phone": self.phone,
            "nickname": self.nickname or self.display_name,
            "label": self.label,
            "capacity": self.capacity,
            "building": self.building,
            "floorLabel": self.floor_label,
            "floorNumber": self.floor_number,
            "isWheelChairAccessible": self.is_wheel_chair_accessible,
            "bookingType": self.booking_type,
            "tags": list(self.tags),
            "audioDeviceName": None,
            "videoDeviceName": None,
            "displayDeviceName": None,
            "address": {"street": "", "city": "", "state": "", "countryOrRegion": "", "postalCode": ""},
        }


@dataclass
class Mailbox:
    """A mailbox addressed as `/users/{address or user id}`; rooms carry their place record."""

    address: str
    display_name: str
    user_id: str = field(default_factory=new_guid)
    room: Room | None = None
    events: dict[str, StoredEvent] = field(default_factory=dict)
    categories: list[Category] = field(default_factory=list)
    transactions: dict[str, str] = field(default_factory=dict)  # transactionId -> event id

    @property
    def key(self) -> str:
        return self.address.lower()

    def to_json(self) -> dict:
        return {"address": self.address, "displayName": self.display_name, "userId": self.user_id}

    def organizer(self) -> dict:
        return {"emailAddress": {"name": self.display_name, "address": self.address}}
