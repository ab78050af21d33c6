"""The records the emulator keeps: resources, services, customers, bookings, and booking changes."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

OCCUPYING_STATUSES = ("accepted", "requested", "reserved", "pending")
STATUSES = (*OCCUPYING_STATUSES, "canceled")


@dataclass
class Resource:
    id: str
    name: str
    slug: str
    timezone: str
    created_at: datetime
    parent_id: str | None = None
    description: str | None = None
    hidden: bool = False
    archived: bool = False


@dataclass
class Service:
    id: str
    name: str
    slug: str
    price: float
    currency: str
    created_at: datetime
    padding_before: int = 0  # minutes of set-up time, widens blocker_start_date
    padding_after: int = 0  # minutes of clean-up time, widens blocker_end_date


@dataclass
class Customer:
    id: str
    uuid: str
    number: str
    full_name: str
    email: str
    created_at: datetime
    phone: str | None = None


@dataclass
class BookingDraft:
    """What a new booking is made from (person in anny, seed, or the API's blocker create)."""

    resource_id: str
    start: datetime
    end: datetime
    is_blocker: bool = False
    service_id: str | None = None  # blockers have no service and no customer
    customer_id: str | None = None
    status: str = "accepted"
    title: str | None = None
    description: str | None = None
    note: str | None = None
    customer_note: str | None = None


@dataclass(kw_only=True)
class Booking(BookingDraft):
    id: str
    number: str
    created_at: datetime
    updated_at: datetime
    currency: str
    total: float
    canceled_at: datetime | None = None
    is_series: bool = False
    is_series_master: bool = False
    series_id: str | None = None
    manually_created: bool = True
    occurrence_ids: list[str] = field(default_factory=list)  # a series master's occurrences


ChangeKind = Literal["created", "updated", "canceled", "deleted"]


@dataclass(frozen=True)
class Change:
    """One booking change, with the booking as it was right after it (webhook material)."""

    kind: ChangeKind
    booking: Booking
