"""Work items on the `sync-work` queue: the one wire format between triggers and the worker."""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from sync.anny_wire import BookingSnapshot
from sync.errors import SyncError
from sync.model import OutlookEvent, SyncWindow

WORK_QUEUE = "sync-work"  # live changes: webhooks, notifications, lifecycle events
POISON_QUEUE = f"{WORK_QUEUE}-poison"
# NCRONTAB in UTC (Flex Consumption ignores WEBSITE_TIME_ZONE). Fixed schedules: one read from an
# app setting (%NAME%) stops the host when the setting is missing. The runs decide themselves
# whether they are due: the nightly run once per local day, the sweep every SWEEP_INTERVAL_MINUTES.
NIGHTLY_SCHEDULE = "0 5 * * * *"  # hourly
SWEEP_SCHEDULE = "0 */5 * * * *"
# Initial syncs and reconciliations: worked on at backfill priority (sync.budget), so live
# changes keep their share of anny's budget and Graph's mailbox slots.
BACKFILL_QUEUE = "sync-backfill"
BACKFILL_POISON_QUEUE = f"{BACKFILL_QUEUE}-poison"
POISON_QUEUES = (POISON_QUEUE, BACKFILL_POISON_QUEUE)
EVENTS_PER_BACKFILL_ITEM = 10
MAX_QUEUE_MESSAGE_BYTES = 64 * 1024  # Azure Storage queue messages


HOST_JSON = Path(__file__).resolve().parents[1] / "host.json"


@functools.cache
def max_dequeue_count(host_json: Path = HOST_JSON) -> int:
    """host.json's `extensions.queues.maxDequeueCount` (the host's default, 5, without one): the
    attempt after which the host moves an item that failed to the poison queue."""
    try:
        queues = json.loads(host_json.read_text()).get("extensions", {}).get("queues", {})
        return int(queues.get("maxDequeueCount", 5))
    except (OSError, ValueError, AttributeError):
        return 5


class BadWorkItem(SyncError):
    """A queue message that is not a work item this app wrote; retrying cannot help."""


@dataclass(frozen=True)
class BookingWork:
    """Mirror one anny booking. `observed`: the mirror event's fingerprint in Outlook. `seen`: the
    booking as the webhook showed it (`sync.anny.webhook_snapshot`), used instead of a read when
    it is newer than what the link saw."""

    booking_id: str
    anny_event_id: str = ""
    observed: str | None = None
    seen: BookingSnapshot | None = None


@dataclass(frozen=True)
class RoomWork:
    """The room's calendar changed: read its changes by delta. `signalled_at` (UTC, ISO 8601): when
    the notification arrived; a round that began to read after it covers it (`sync.room_runs`)."""

    room: str
    reason: str = "notification"
    signalled_at: str = ""


@dataclass(frozen=True)
class LifecycleWork:
    """A Graph lifecycle event for one subscription."""

    subscription_id: str
    event: str


@dataclass(frozen=True)
class EventsBackfill:
    """Block anny for these events of a room's calendar, found by a baseline and not linked yet.
    `span_start`/`span_end` (UTC, ISO 8601): where the baseline saw them, so that one read of
    that span finds them as they are now (items written before the span existed: one read each)."""

    room: str
    event_ids: tuple[str, ...]
    span_start: str = ""
    span_end: str = ""


def _aware_time(text: str) -> datetime | None:
    """An ISO 8601 time with its zone, as the app writes into work items; None for anything else."""
    try:
        at = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return None
    return at if at.tzinfo is not None else None


def signal_time(work: RoomWork) -> datetime | None:
    """When the room's change was signalled; None when not known (then the room is read in any case)."""
    return _aware_time(work.signalled_at)


def backfill_items(room: str, events: Sequence[OutlookEvent]) -> list[EventsBackfill]:
    """A baseline's events to backfill, EVENTS_PER_BACKFILL_ITEM per item in the order of their
    start, so that each item's span is short (a few hours of the room's calendar)."""
    earliest = datetime.min.replace(tzinfo=UTC)
    in_order = sorted(events, key=lambda e: (e.start or earliest, e.id))
    return [_backfill_item(room, in_order[first:first + EVENTS_PER_BACKFILL_ITEM])
            for first in range(0, len(in_order), EVENTS_PER_BACKFILL_ITEM)]


def _backfill_item(room: str, events: Sequence[OutlookEvent]) -> EventsBackfill:
    ids = tuple(e.id for e in events)
    starts = [e.start for e in events if e.start is not None]
    ends = [e.end for e in events if e.end is not None]
    if len(starts) < len(events) or len(ends) < len(events):
        return EventsBackfill(room, ids)
    return EventsBackfill(room, ids, min(starts).astimezone(UTC).isoformat(), max(ends).astimezone(UTC).isoformat())


def span_of(work: EventsBackfill) -> SyncWindow | None:
    """The span an item's events lay in at the baseline; None without one (then each is read alone)."""
    start, end = _aware_time(work.span_start), _aware_time(work.span_end)
    if start is None or end is None or end <= start:
        return None
    return SyncWindow(start, end)


@dataclass(frozen=True)
class RuleSync:
    """The rest of an admin command's inline sync of one rule, which anny or Graph throttled:
    the whole comparison again (what was done is unchanged now and costs no write)."""

    anny_resource: str
    run: str  # the admin command's run: "activate", "resync" or "rule added"
    allow_deletions: bool = False
    baseline: bool = False


Work = BookingWork | RoomWork | LifecycleWork | EventsBackfill | RuleSync
_KINDS: dict[str, type[Work]] = {"booking": BookingWork, "room": RoomWork, "lifecycle": LifecycleWork,
                                 "events-backfill": EventsBackfill, "rule-sync": RuleSync}
_NAMES = {cls: name for name, cls in _KINDS.items()}


def fits_queue(work: Work) -> bool:
    """Whether the item fits a queue message: 64 KiB, after host.json's base64 encoding (a third
    more), of JSON in which every non-ASCII character takes 6 bytes (12 outside the BMP)."""
    return 4 * math.ceil(len(encode(work).encode()) / 3) <= MAX_QUEUE_MESSAGE_BYTES


def encode(work: Work, outages: int = 0) -> str:
    """The item as a queue message; `outages`: how often it was put back because anny or Graph was
    unavailable (`outages_of`), kept beside the item so that the put-backs stay bounded."""
    extra = {"outages": outages} if outages else {}
    return json.dumps({"kind": _NAMES[type(work)], **asdict(work), **extra}, separators=(",", ":"))


def outages_of(text: str | bytes) -> int:
    try:
        return int(json.loads(text).get("outages") or 0)
    except (ValueError, TypeError, AttributeError):
        return 0


def decode(text: str | bytes) -> Work:
    try:
        data = json.loads(text)
        data.pop("outages", None)
        cls = _KINDS[data.pop("kind")]
        if cls is EventsBackfill:
            data["event_ids"] = tuple(str(i) for i in data["event_ids"])
        return cls(**data)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BadWorkItem(f"not a work item: {str(text)[:200]!r}") from exc
