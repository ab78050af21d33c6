"""What a run did, in words an admin reads: tallies of actions per direction, and the drift report.

A nightly run or a sweep that has to write something repaired drift: a webhook or
notification that never arrived, an Outlook edit of a mirror, an anny admin's deletion of a
blocker, a subscription that had vanished. `RunLog` collects those items and stores them as a
`RunRecord`; `status` shows the counts and `status --drift` the items.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sync.decide import (
    CREATED_WHILE_OFF,
    Action,
    CheckRemoved,
    CreateBlocker,
    CreateEvent,
    DeleteBlocker,
    DeleteEvent,
    DeleteUnrecordedBlocker,
    DeleteUnrecordedEvent,
    RestoreMirror,
    Skip,
    SuppressBlocker,
    UpdateBlocker,
    UpdateEvent,
)
from sync.state import IntegrationStatus, RunRecord, StatusTable

log = logging.getLogger(__name__)

MISSED_BOOKING = "missed booking"
MISSED_MEETING = "missed meeting"
OUTLOOK_EDIT_UNDONE = "Outlook edit undone"
BLOCKER_DELETED_IN_ANNY = "blocker deleted in anny"
SUBSCRIPTION_RECREATED = "subscription re-created"
OUTBOUND, INBOUND = "anny → Outlook", "Outlook → anny"


def action_kind(action: Action) -> str | None:
    """create / update / delete / unchanged / left unsynced; None for bookkeeping steps."""
    match action:
        case CreateEvent() | CreateBlocker():
            return "create"
        case UpdateEvent() | UpdateBlocker() | RestoreMirror():
            return "update"
        case DeleteEvent() | DeleteUnrecordedEvent() | DeleteBlocker() | DeleteUnrecordedBlocker():
            return "delete"
        case CheckRemoved():
            return "delete if gone"
        case Skip(reason=reason):
            return "left unsynced" if reason == CREATED_WHILE_OFF else "unchanged"
    return None


def tally(actions: list[Action]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for action in actions:
        kind = action_kind(action)
        if kind is not None:
            counts[kind] = counts.get(kind, 0) + 1
    return counts


def drift_kind(action: Action) -> str | None:
    """The kind of drift a write found by a reconciliation repairs (None: not a repair)."""
    match action:
        case CreateEvent() | UpdateEvent() | DeleteEvent() | DeleteUnrecordedEvent():
            return MISSED_BOOKING
        case CreateBlocker() | UpdateBlocker() | DeleteBlocker() | DeleteUnrecordedBlocker():
            return MISSED_MEETING
        case RestoreMirror():
            return OUTLOOK_EDIT_UNDONE
        case SuppressBlocker():
            return BLOCKER_DELETED_IN_ANNY
    return None


def _item_id(action: Action) -> dict[str, str]:
    match action:
        case CreateEvent(desired=desired) | UpdateEvent(desired=desired):
            return {"booking_id": desired.anny_id}
        case CreateBlocker(desired=desired) | UpdateBlocker(desired=desired):
            return {"event_id": desired.event_id}
        case DeleteEvent(event_id=event_id):
            return {"event_id": event_id}
        case DeleteUnrecordedEvent(anny_id=anny_id) | DeleteBlocker(anny_id=anny_id) | RestoreMirror(anny_id=anny_id):
            return {"booking_id": anny_id}
    return {}


@dataclass
class RunLog:
    """Collects one run's record; `drift` says whether writes count as repairs (nightly, sweep)."""

    kind: str
    drift: bool = True
    record: RunRecord = field(init=False)

    def __post_init__(self) -> None:
        self.record = RunRecord(self.kind)

    def count(self, name: str, n: int = 1) -> None:
        self.record.checked[name] = self.record.checked.get(name, 0) + n

    def repaired(self, kind: str, room: str, **ids: str) -> None:
        if not self.drift:
            return
        self.record.repaired[kind] = self.record.repaired.get(kind, 0) + 1
        self.record.items.append({"kind": kind, "room": room, **ids})
        log.info("drift repaired", extra={"run": self.kind, "drift": kind, "room": room, **ids})

    def actions(self, room: str, actions: list[Action], **ids: str) -> None:
        for action in actions:
            kind = drift_kind(action)
            if kind is not None:
                self.repaired(kind, room, **{**ids, **_item_id(action)})

    async def save(self, status: StatusTable, error: str = "") -> RunRecord:
        self.record.finished_at = datetime.now(UTC)
        self.record.error = error[:2000]
        await status.save_run(self.record)
        return self.record


@asynccontextmanager
async def recorded(status: StatusTable, run: RunLog) -> AsyncIterator[RunLog]:
    """Store the run's record when it ends, with the error if it failed (which is raised on)."""
    error = ""
    try:
        yield run
    except Exception as exc:
        error = str(exc) or type(exc).__name__
        raise
    finally:
        record = await run.save(status, error)
        log.info("run done", extra={"run": run.kind, "repaired": record.repaired, "checked": record.checked,
                                    "held": record.held, "error": error or None})


async def every_part(*parts: tuple[str, Callable[[], Awaitable[object]]]) -> None:
    """A run's parts one after another, each even when an earlier one failed; each failure is
    logged with its part, and the first is raised once all had their turn (so the run's record
    shows it and the timer's next run tries again)."""
    first: Exception | None = None
    for name, part in parts:
        try:
            await part()
        except Exception as exc:
            log.warning("%s failed: %s", name, exc, extra={"part": name, "error": str(exc)})
            first = first or exc
    if first is not None:
        raise first


async def claim(status: StatusTable, due: Callable[[IntegrationStatus], bool],
                stamp: Callable[[IntegrationStatus], None]) -> bool:
    """Whether this instance takes a timer's run: `due` read and `stamp` written under the status ETag."""
    claimed = False

    def change(status: IntegrationStatus) -> bool:
        nonlocal claimed
        claimed = due(status)
        if claimed:
            stamp(status)
        return claimed

    await status.update_status(change)
    return claimed
