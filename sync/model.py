"""Domain objects: anny bookings, Outlook events, what the app wants to write, the sync window."""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo

from sync.keys import fingerprint

CANCELLED_STATUSES = frozenset({"canceled", "cancelled", "rejected", "declined", "expired"})
BLOCKER_MARKER = "[m365-sync:"  # written into the note of every blocker this app creates
ANNY_CATEGORY = "anny"
ANNY_CATEGORY_COLOR = "preset22"  # dark blue
NEUTRAL_SENSITIVITIES = frozenset({"private", "confidential"})


@dataclass(frozen=True)
class AnnyBooking:
    """A booking or blocker as read from the anny API."""

    id: str
    start: datetime
    end: datetime
    resource_id: str
    parent_resource_id: str = ""
    number: str = ""
    status: str = "accepted"
    is_blocker: bool = False
    canceled: bool = False
    is_series_master: bool = False
    service_name: str = ""
    resource_name: str = ""
    title: str = ""
    note: str = ""
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def version(self) -> str:
        """`updated_at` as a stamp that sorts by time ("" when unknown), see `is_newer`."""
        return booking_version(self.updated_at)

    @property
    def is_cancelled(self) -> bool:
        return self.canceled or self.status.lower() in CANCELLED_STATUSES

    @property
    def made_by_this_app(self) -> bool:
        return self.is_blocker and BLOCKER_MARKER in self.note

    @property
    def resource_ids(self) -> tuple[str, ...]:
        """The resources a rule may map it by: its parent's first (a child always syncs into its
        parent's room, even if a rule for the child itself was stored), then its own."""
        return tuple(r for r in (self.parent_resource_id, self.resource_id) if r)


def booking_version(updated_at: object) -> str:
    """anny's `updated_at` (text or datetime) as a stamp that sorts by time; "" when missing or unreadable.

    Only `updated_at` orders a booking's states: a webhook's `triggered_at` is when it fired,
    and a late delivery of an old change fires late.
    """
    if isinstance(updated_at, datetime):
        moment = updated_at
    elif isinstance(updated_at, str) and updated_at:
        try:
            moment = datetime.fromisoformat(updated_at)
        except ValueError:
            return ""
    else:
        return ""
    if moment.tzinfo is None:
        return ""
    return moment.astimezone(ZoneInfo("UTC")).isoformat(timespec="microseconds")


def is_newer(version: str, than: str) -> bool:
    """Whether `version` is a later state than `than`; False when either is unknown."""
    return bool(version) and bool(than) and version > than


@dataclass(frozen=True)
class SeenBooking:
    """A booking as an anny webhook's payload showed it; `booking` None when the event says deleted."""

    booking: AnnyBooking | None
    version: str
    created: bool = False  # delivered as `bookings.created`: almost surely without a link yet
    # False: the payload's resource does not say whether it has a parent (resource.json makes
    # `parent` optional). It stands for the booking only where a rule maps that resource itself
    # (rules map parents only); a child's booking would otherwise look unmapped.
    parent_known: bool = True


@dataclass(frozen=True)
class OutlookEvent:
    """An instance in a room calendar as read from Graph (times in UTC), or a removal."""

    id: str
    change_key: str = ""
    subject: str = ""
    start: datetime | None = None
    end: datetime | None = None
    is_all_day: bool = False
    show_as: str = "busy"
    sensitivity: str = "normal"
    is_cancelled: bool = False
    categories: tuple[str, ...] = ()
    type: str = "singleInstance"
    removed: bool = False
    has_attendees: bool = False
    is_reminder_on: bool = False
    created: datetime | None = None

    @property
    def looks_like_ours(self) -> bool:
        return ANNY_CATEGORY in self.categories

    @property
    def is_series_master(self) -> bool:
        return self.type == "seriesMaster"

    def mirror_fingerprint(self) -> str:
        """Comparable with `DesiredEvent.fingerprint` of what we wrote: everything a mirror event is
        (behaviour: anny → Outlook), so an Outlook edit of any of it is seen and undone."""
        return event_fingerprint(self.subject, self.start, self.end, self.is_cancelled, MirrorLook(
            self.show_as, ANNY_CATEGORY in self.categories, self.has_attendees, self.is_reminder_on))


@dataclass(frozen=True)
class DesiredEvent:
    """The mirror event an anny booking should have."""

    anny_id: str
    subject: str
    start: datetime
    end: datetime

    @property
    def fingerprint(self) -> str:
        return event_fingerprint(self.subject, self.start, self.end, False, MIRROR_LOOK)


@dataclass(frozen=True)
class DesiredBlocker:
    """The anny blocker an Outlook event should have."""

    event_id: str
    title: str
    start: datetime
    end: datetime

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.title, _utc_iso(self.start), _utc_iso(self.end))


@dataclass(frozen=True)
class MirrorLook:
    """How a mirror event shows in Outlook besides its title and time (behaviour: anny → Outlook)."""

    show_as: str = "busy"
    categorised: bool = True  # carries the "anny" category
    has_attendees: bool = False
    is_reminder_on: bool = False


MIRROR_LOOK = MirrorLook()


def event_fingerprint(subject: str, start: datetime | None, end: datetime | None, cancelled: bool,
                      look: MirrorLook) -> str:
    return fingerprint(subject, _utc_iso(start), _utc_iso(end), cancelled, look.show_as.lower(), look.categorised,
                       look.has_attendees, look.is_reminder_on)


def _utc_iso(value: datetime | None) -> str:
    if value is None:
        return ""
    return value.astimezone(ZoneInfo("UTC")).replace(microsecond=0).isoformat()


def created_while_off(created: datetime | None, off_periods: tuple[tuple[datetime, datetime], ...]) -> bool:
    """Whether an item was created while the integration was deactivated (unknown: no)."""
    return created is not None and any(start <= created < end for start, end in off_periods)


@dataclass(frozen=True)
class SyncWindow:
    """From the start of today (in the configured zone) to N calendar months later."""

    start: datetime
    end: datetime

    @classmethod
    def starting(cls, today: date, months: int, zone: tzinfo) -> SyncWindow:
        start = datetime.combine(today, time.min, zone)
        return cls(start, datetime.combine(add_months(today, months), time.min, zone))

    @classmethod
    def now(cls, now: datetime, months: int, zone_name: str) -> SyncWindow:
        zone = ZoneInfo(zone_name)
        return cls.starting(now.astimezone(zone).date(), months, zone)

    def overlaps(self, start: datetime, end: datetime) -> bool:
        return start < self.end and end > self.start

    @property
    def key(self) -> str:
        return f"{_utc_iso(self.start)}/{_utc_iso(self.end)}"


def delta_query_window(window: SyncWindow, months: int) -> SyncWindow:
    """The window a room's delta token is made for: from the first of the sync window's month to
    `months` + 2 months later, so it holds the sync window all month long. A delta token is
    bound to its window, so the room is read from scratch only when this changes — monthly,
    not daily; what it holds beyond the sync window the decisions filter out."""
    first = window.start.date().replace(day=1)
    zone = window.start.tzinfo
    return SyncWindow(datetime.combine(first, time.min, zone),
                      datetime.combine(add_months(first, months + 2), time.min, zone))


def add_months(day: date, months: int) -> date:
    month_index = day.month - 1 + months
    year, month = day.year + month_index // 12, month_index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def whole_days(start: datetime, end: datetime, zone: tzinfo) -> tuple[datetime, datetime]:
    """An all-day event's span as whole days in `zone` (Graph gives midnight-to-midnight dates)."""
    first = start.date()
    last = max(end.date(), first + timedelta(days=1))
    return datetime.combine(first, time.min, zone), datetime.combine(last, time.min, zone)
