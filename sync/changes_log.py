"""One log line per effective change, both ways, that a person can read:

    anny booking 50012 (Room Berlin, Tue 1 Dec 10:00–11:00) → Outlook: created
    Outlook meeting "Board" (room-berlin@contoso.com, Tue 1 Dec 13:00–14:30) → anny blocker 50013: created

No-ops (echoes of our own writes, bookings of unmapped resources) are logged at DEBUG.
The same facts go into `extra=` for handlers that keep fields (Azure's Python worker keeps the message only).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, tzinfo

from sync.decide import (
    Action,
    CreateBlocker,
    CreateEvent,
    DeleteBlocker,
    DeleteEvent,
    DeleteUnrecordedBlocker,
    DeleteUnrecordedEvent,
    Skip,
    SuppressBlocker,
    UpdateBlocker,
    UpdateEvent,
)
from sync.model import NEUTRAL_SENSITIVITIES, AnnyBooking, OutlookEvent

log = logging.getLogger("sync.changes")

_VERBS: dict[type, str] = {
    CreateEvent: "created", UpdateEvent: "updated", DeleteEvent: "deleted", DeleteUnrecordedEvent: "deleted",
    SuppressBlocker: "our blocker was deleted in anny; it stays deleted until the meeting changes",
    CreateBlocker: "created", UpdateBlocker: "updated", DeleteBlocker: "deleted", DeleteUnrecordedBlocker: "deleted",
}


def _verbs(actions: Sequence[Action]) -> str:
    return ", ".join(dict.fromkeys(_VERBS[type(a)] for a in actions if type(a) in _VERBS))


def _skips(actions: Sequence[Action]) -> str:
    return "; ".join(a.reason for a in actions if isinstance(a, Skip)) or "nothing to do"


def when(start: datetime | None, end: datetime | None, zone: tzinfo, all_day: bool = False) -> str:
    """`Tue 1 Dec 10:00–11:00` in the integration's time zone."""
    if start is None or end is None:
        return ""
    start, end = start.astimezone(zone), end.astimezone(zone)
    day = f"{start:%a} {start.day} {start:%b}"
    if all_day:
        return f"{day}, all day"
    if start.date() == end.date():
        return f"{day} {start:%H:%M}–{end:%H:%M}"
    return f"{day} {start:%H:%M} – {end:%a} {end.day} {end:%b} {end:%H:%M}"


def booking_synced(booking_id: str, booking: AnnyBooking | None, room: str | None, actions: Sequence[Action],
                   zone: tzinfo) -> None:
    if booking is None:
        label = "gone from anny"
    else:
        parts = [booking.resource_name or booking.resource_id,
                 "cancelled" if booking.is_cancelled else "", when(booking.start, booking.end, zone)]
        label = ", ".join(p for p in parts if p)
    verbs = _verbs(actions)
    fields = {"booking_id": booking_id, "room": room, "actions": [type(a).__name__ for a in actions]}
    if verbs:
        log.info("anny booking %s (%s) → Outlook: %s", booking_id, label, verbs, extra=fields)
    else:
        log.debug("anny booking %s (%s) → Outlook: no change (%s)", booking_id, label, _skips(actions),
                  extra=fields)


def event_synced(room: str, event: OutlookEvent, anny_id: str, actions: Sequence[Action], zone: tzinfo) -> None:
    desired = next((a.desired for a in actions if isinstance(a, CreateBlocker | UpdateBlocker)), None)
    if event.removed:
        label = f"meeting (removed) ({room})"
    else:
        private = event.sensitivity.lower() in NEUTRAL_SENSITIVITIES
        title = desired.title if desired is not None else "(private)" if private else event.subject
        label = f'meeting "{title}" ({room}, {when(event.start, event.end, zone, event.is_all_day)})'
    anny_id = anny_id or next((a.anny_id for a in actions if isinstance(a, DeleteBlocker)), "")
    verbs = _verbs(actions)
    fields = {"room": room, "event_id": event.id, "anny_id": anny_id, "actions": [type(a).__name__ for a in actions]}
    blocker = f"anny blocker {anny_id}" if anny_id else "anny blocker"
    if verbs:
        log.info("Outlook %s → %s: %s", label, blocker, verbs, extra=fields)
    else:
        log.debug("Outlook %s → anny: no change (%s)", label, _skips(actions), extra=fields)
