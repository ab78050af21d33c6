"""Fixtures the pure-decision tests share: one window, one room, one booking and one event to vary."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from sync.decide import OutboundContext
from sync.model import AnnyBooking, OutlookEvent, SyncWindow

BERLIN = ZoneInfo("Europe/Berlin")
WINDOW = SyncWindow.starting(date(2026, 11, 24), 6, BERLIN)
OUT = OutboundContext(WINDOW, "{service} · anny #{number}", "Blocked in anny")
ROOM = "room@contoso.example"
T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def booking(**changes: object) -> AnnyBooking:
    """An hour-long booking "b1" of resource "res-1" at T0; `changes` replace its fields."""
    base = AnnyBooking(id="b1", start=T0, end=T0 + timedelta(hours=1), resource_id="res-1", number="1001",
                       service_name="Meeting room")
    return replace(base, **changes)


def event(**changes: object) -> OutlookEvent:
    """An hour-long Outlook meeting at T0 whose id has Graph's `/ + =`; `changes` replace its fields."""
    base = OutlookEvent(id="AAMk/+=", change_key="ck1", subject="Team sync", start=T0,
                        end=T0 + timedelta(hours=1))
    return replace(base, **changes)


def graph_utc(value: str) -> datetime:
    """A Graph `dateTime` (in UTC, up to seven fractional digits) as an aware datetime, to the second."""
    return datetime.fromisoformat(value.rstrip("Z")[:19]).replace(tzinfo=UTC)
