"""The emulated organisation: its resources, services, customers and bookings, and how bookings change.

Every booking operation returns the `Change`s it made; the emulator turns them into webhooks.
All methods run on the server's event loop thread (see `AnnyEmulator`), so no locking is needed.
"""

from __future__ import annotations

import itertools
import re
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, replace
from datetime import datetime, timedelta
from typing import Any, TypeVar

from .config import AnnyConfig
from .errors import AnnyError, invalid, not_found
from .model import STATUSES, Booking, BookingDraft, Change, Customer, Resource, Service
from .timefmt import Clock

ID_BASES = {"resources": 1000, "services": 2000, "customers": 3000, "series": 7000, "bookings": 50000}
EDITABLE = ("start", "end", "resource_id", "status", "title", "description", "note", "customer_note")
T = TypeVar("T")
CustomerSpec = str | dict[str, Any] | None


def slugify(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "item"


class AnnyState:
    def __init__(self, config: AnnyConfig) -> None:
        self.config = config
        self.clock = Clock()
        self.clear()

    def clear(self) -> None:
        self.resources: dict[str, Resource] = {}
        self.services: dict[str, Service] = {}
        self.customers: dict[str, Customer] = {}
        self.bookings: dict[str, Booking] = {}
        self._ids = {kind: itertools.count(base) for kind, base in ID_BASES.items()}

    # ---- ids and lookups -------------------------------------------------------------------

    def _new_id(self, kind: str, taken: Iterable[str], wanted: str | None = None) -> str:
        if wanted is not None:
            if wanted in taken:
                raise AnnyError(409, "Conflict", f"{kind} id {wanted!r} already exists")
            return str(wanted)
        return next(str(n) for n in self._ids[kind] if str(n) not in taken)

    def _unique_slug(self, name: str, slug: str | None, taken: Iterable[str]) -> str:
        base, used = slug or slugify(name), set(taken)
        candidates = itertools.chain([base], (f"{base}-{n}" for n in itertools.count(2)))
        return next(s for s in candidates if s not in used)

    @staticmethod
    def _find(kind: str, table: dict[str, T], ref: str, *aliases: Callable[[T], str]) -> T:
        """The item with id `ref`, or else the first whose alias (slug, name, e-mail) is `ref`."""
        found = table.get(ref) or next((i for i in table.values() if any(a(i) == ref for a in aliases)), None)
        if found is None:
            raise not_found(kind, ref)
        return found

    def resource(self, ref: str) -> Resource:
        return self._find("resource", self.resources, ref, lambda r: r.slug)

    def service(self, ref: str) -> Service:
        return self._find("service", self.services, ref, lambda s: s.slug, lambda s: s.name)

    def customer(self, ref: str) -> Customer:
        return self._find("customer", self.customers, ref, lambda c: c.email)

    def booking(self, booking_id: str) -> Booking:
        return self._find("booking", self.bookings, booking_id)

    def children_of(self, resource_id: str) -> list[Resource]:
        return [r for r in self.resources.values() if r.parent_id == resource_id]

    def timezone_of(self, booking: Booking) -> str:
        return self.resources[booking.resource_id].timezone

    # ---- organisation set-up --------------------------------------------------------------

    def add_resource(
        self,
        name: str,
        *,
        timezone: str | None = None,
        parent: str | None = None,
        slug: str | None = None,
        id: str | None = None,
        description: str | None = None,
        hidden: bool = False,
        archived: bool = False,
    ) -> Resource:
        parent_resource = self.resource(parent) if parent is not None else None
        zone = timezone or (parent_resource.timezone if parent_resource else self.config.default_timezone)
        resource = Resource(
            id=self._new_id("resources", self.resources, id),
            name=name,
            slug=self._unique_slug(name, slug, (r.slug for r in self.resources.values())),
            timezone=zone,
            created_at=self.clock.now(),
            parent_id=parent_resource.id if parent_resource else None,
            description=description,
            hidden=hidden,
            archived=archived,
        )
        self.resources[resource.id] = resource
        return resource

    def add_service(
        self,
        name: str,
        *,
        price: float = 0.0,
        currency: str | None = None,
        padding_before: int = 0,
        padding_after: int = 0,
        slug: str | None = None,
        id: str | None = None,
    ) -> Service:
        service = Service(
            id=self._new_id("services", self.services, id),
            name=name,
            slug=self._unique_slug(name, slug, (s.slug for s in self.services.values())),
            price=float(price),
            currency=currency or self.config.currency,
            created_at=self.clock.now(),
            padding_before=padding_before,
            padding_after=padding_after,
        )
        self.services[service.id] = service
        return service

    def add_customer(self, full_name: str, email: str, *, phone: str | None = None, id: str | None = None) -> Customer:
        customer_id = self._new_id("customers", self.customers, id)
        customer = Customer(
            id=customer_id,
            uuid=str(uuid.uuid4()),
            number=f"C{customer_id.zfill(6)}",
            full_name=full_name,
            email=email,
            created_at=self.clock.now(),
            phone=phone,
        )
        self.customers[customer.id] = customer
        return customer

    def service_named(self, ref: str) -> Service:
        """The service with this id, slug or name; a person naming a new service creates it."""
        try:
            return self.service(ref)
        except AnnyError:
            return self.add_service(ref)

    def customer_for(self, spec: CustomerSpec) -> Customer | None:
        """A customer by id or e-mail, or from `{"email", "phone"?, "name"?}` (found by e-mail or created)."""
        if spec is None or isinstance(spec, str):
            return None if spec is None else self.customer(spec)
        email = spec["email"]
        existing = next((c for c in self.customers.values() if c.email == email), None)
        if existing is not None:
            return existing
        name = spec.get("full_name") or spec.get("name") or email.split("@")[0]
        return self.add_customer(name, email, phone=spec.get("phone"), id=spec.get("id"))

    # ---- bookings --------------------------------------------------------------------------

    def _check_span(self, start: datetime, end: datetime) -> None:
        if not start < end:
            raise invalid("end_date must be after start_date", "/data/attributes/end_date")

    def _check_status(self, status: str) -> None:
        if status not in STATUSES:
            raise invalid(f"status must be one of {', '.join(STATUSES)}", "/data/attributes/status")

    def _price(self, draft: BookingDraft) -> float:
        return self.services[draft.service_id].price if draft.service_id else 0.0

    def _new_booking(self, draft: BookingDraft, booking_id: str | None = None, **extra: Any) -> Booking:
        self.resource(draft.resource_id)
        self._check_span(draft.start, draft.end)
        self._check_status(draft.status)
        now = self.clock.now()
        new_id = self._new_id("bookings", self.bookings, booking_id)
        booking = Booking(
            **asdict(draft),
            id=new_id,
            number=f"B{new_id.zfill(6)}",
            created_at=now,
            updated_at=now,
            currency=self.config.currency,
            total=self._price(draft),
            canceled_at=now if draft.status == "canceled" else None,
            **extra,
        )
        self.bookings[booking.id] = booking
        return booking

    def create_booking(self, draft: BookingDraft, booking_id: str | None = None) -> list[Change]:
        return [_change("created", self._new_booking(draft, booking_id))]

    def create_series(self, draft: BookingDraft, count: int, interval: timedelta) -> list[Change]:
        """A series master spanning all occurrences, then one booking per occurrence."""
        if count < 1:
            raise invalid("a series needs at least one occurrence", "/count")
        series_id = self._new_id("series", ())
        last = interval * (count - 1)
        master = self._new_booking(
            replace(draft, end=draft.end + last), is_series=True, is_series_master=True, series_id=series_id
        )
        occurrences = [
            self._new_booking(
                replace(draft, start=draft.start + interval * n, end=draft.end + interval * n),
                is_series=True,
                series_id=series_id,
            )
            for n in range(count)
        ]
        master.occurrence_ids = [o.id for o in occurrences]
        master.total = sum(o.total for o in occurrences)
        return [_change("created", b) for b in (master, *occurrences)]

    def update_booking(self, booking_id: str, changes: dict[str, Any]) -> list[Change]:
        unknown = set(changes) - set(EDITABLE)
        if unknown:
            raise ValueError(f"not editable: {sorted(unknown)}")
        booking = self.booking(booking_id)
        if "resource_id" in changes:
            self.resource(changes["resource_id"])
        self._check_span(changes.get("start", booking.start), changes.get("end", booking.end))
        self._check_status(changes.get("status", booking.status))
        for name, value in changes.items():
            setattr(booking, name, value)
        booking.updated_at = self.clock.now()
        canceling = changes.get("status") == "canceled" and booking.canceled_at is None
        if canceling:
            booking.canceled_at = booking.updated_at
        return [_change("canceled" if canceling else "updated", booking), *self._refresh_master(booking)]

    def cancel_booking(self, booking_id: str) -> list[Change]:
        """Cancel a booking (a master cancels its whole series); cancelling twice changes nothing."""
        booking = self.booking(booking_id)
        return [_change("canceled", b) for b in self._with_occurrences(booking) if self._cancel(b)]

    def _cancel(self, booking: Booking) -> bool:
        if booking.status == "canceled":
            return False
        booking.status = "canceled"
        booking.canceled_at = booking.updated_at = self.clock.now()
        return True

    def delete_booking(self, booking_id: str) -> list[Change]:
        """Delete a booking (a master deletes its whole series)."""
        booking = self.booking(booking_id)
        removed = list(self._with_occurrences(booking))
        for item in removed:
            del self.bookings[item.id]
        return [*(_change("deleted", b) for b in removed), *self._refresh_master(booking)]

    def _with_occurrences(self, booking: Booking) -> Iterator[Booking]:
        yield booking
        yield from (self.bookings[i] for i in booking.occurrence_ids if i in self.bookings)

    def _master_of(self, booking: Booking) -> Booking | None:
        if booking.series_id is None or booking.is_series_master:
            return None
        return next(
            (b for b in self.bookings.values() if b.is_series_master and b.series_id == booking.series_id),
            None,
        )

    def _refresh_master(self, occurrence: Booking) -> list[Change]:
        """Keep a series master spanning its first to its last remaining occurrence."""
        master = self._master_of(occurrence)
        remaining = [self.bookings[i] for i in master.occurrence_ids if i in self.bookings] if master else []
        if master is None or not remaining:
            return []
        span = (min(o.start for o in remaining), max(o.end for o in remaining))
        if span == (master.start, master.end):
            return []
        master.start, master.end = span
        master.updated_at = self.clock.now()
        return [_change("updated", master)]


def _change(kind: Any, booking: Booking) -> Change:
    return Change(kind, replace(booking, occurrence_ids=list(booking.occurrence_ids)))
