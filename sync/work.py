"""Work items on the `sync-work` queue: the one wire format between triggers and the worker."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from sync.anny_wire import BookingSnapshot
from sync.errors import SyncError

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
    """The room's calendar changed: read its changes by delta."""

    room: str
    reason: str = "notification"


@dataclass(frozen=True)
class LifecycleWork:
    """A Graph lifecycle event for one subscription."""

    subscription_id: str
    event: str


@dataclass(frozen=True)
class EventsBackfill:
    """Block anny for these events of a room's calendar, found by a baseline and not linked yet."""

    room: str
    event_ids: tuple[str, ...]


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


def encode(work: Work) -> str:
    return json.dumps({"kind": _NAMES[type(work)], **asdict(work)}, separators=(",", ":"))


def decode(text: str | bytes) -> Work:
    try:
        data = json.loads(text)
        cls = _KINDS[data.pop("kind")]
        if cls is EventsBackfill:
            data["event_ids"] = tuple(str(i) for i in data["event_ids"])
        return cls(**data)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BadWorkItem(f"not a work item: {str(text)[:200]!r}") from exc
