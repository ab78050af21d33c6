"""Work items on the `sync-work` queue: the one wire format between triggers and the worker."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from sync.errors import SyncError

WORK_QUEUE = "sync-work"
POISON_QUEUE = f"{WORK_QUEUE}-poison"
# NCRONTAB in UTC (Flex Consumption ignores WEBSITE_TIME_ZONE). Fixed schedules: one read from an
# app setting (%NAME%) stops the host when the setting is missing. The runs decide themselves
# whether they are due: the nightly run once per local day, the sweep every SWEEP_INTERVAL_MINUTES.
NIGHTLY_SCHEDULE = "0 5 * * * *"  # hourly
SWEEP_SCHEDULE = "0 */5 * * * *"


class BadWorkItem(SyncError):
    """A queue message that is not a work item this app wrote; retrying cannot help."""


@dataclass(frozen=True)
class BookingWork:
    """Re-read one anny booking and mirror it. `observed`: the mirror event's fingerprint in Outlook."""

    booking_id: str
    anny_event_id: str = ""
    observed: str | None = None


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


Work = BookingWork | RoomWork | LifecycleWork
_KINDS: dict[str, type] = {"booking": BookingWork, "room": RoomWork, "lifecycle": LifecycleWork}
_NAMES = {cls: name for name, cls in _KINDS.items()}


def encode(work: Work) -> str:
    return json.dumps({"kind": _NAMES[type(work)], **asdict(work)}, separators=(",", ":"))


def decode(text: str | bytes) -> Work:
    try:
        data = json.loads(text)
        cls = _KINDS[data.pop("kind")]
        return cls(**data)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BadWorkItem(f"not a work item: {str(text)[:200]!r}") from exc
