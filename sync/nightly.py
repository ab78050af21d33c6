"""The nightly run (DESIGN §3.3, §4): renew subscriptions, roll the window, reconcile both ways."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sync.outbound import outbound_context
from sync.state import Rule
from sync.work import BookingWork, RoomWork, Work
from sync.worker import Worker

log = logging.getLogger(__name__)


@dataclass
class NightlyReport:
    renewed: int = 0
    purged_event_ids: int = 0
    rooms: int = 0
    bookings_checked: int = 0
    follow_up: list[Work] = field(default_factory=list)


async def run_nightly(worker: Worker) -> NightlyReport:
    """Outbound drift is repaired inline; each room gets a delta run on the queue (new window → baseline)."""
    services = worker.services
    report = NightlyReport()
    if not await services.is_active():
        log.info("integration not active; nightly run skipped")
        return report
    report.renewed = await worker.subscriptions.renew_due()
    report.purged_event_ids = await services.store.purge_processed()
    for rule in await services.store.list_rules():
        await sync_rule(worker, rule, report)
    log.info("nightly run done", extra={"renewed": report.renewed, "rooms": report.rooms,
                                       "bookings_checked": report.bookings_checked})
    return report


async def sync_rule(worker: Worker, rule: Rule, report: NightlyReport) -> None:
    """Subscribe the rule's room, repair anny → Outlook now, and queue a delta run of the room."""
    report.rooms += 1
    await worker.subscriptions.ensure(rule.room)
    report.bookings_checked += await _reconcile_outbound(worker, rule.anny_resource_id, rule.room, report)
    report.follow_up.append(RoomWork(rule.room, reason="sync"))


async def _reconcile_outbound(worker: Worker, resource_id: str, room: str, report: NightlyReport) -> int:
    services = worker.services
    window = outbound_context(services.settings, datetime.now(UTC)).window
    children = [r.id for r in await services.anny.list_resources() if r.parent_id == resource_id]
    bookings = await services.anny.list_bookings([resource_id, *children], window.start, window.end)
    flow = worker.outbound
    for booking in bookings:
        await flow.sync_booking(booking.id, listed=booking)
    listed = {b.id for b in bookings}
    for link in await services.store.links_of_room(room):
        # Not listed: gone, moved or beyond the window's end; re-read it. Links that ended before
        # the window are retired (a webhook still finds them): re-reading them every night would
        # cost anny reads without end.
        if link.origin == "anny" and link.anny_id not in listed and not link.ended_before(window.start):
            report.follow_up.append(BookingWork(link.anny_id))
    return len(bookings)
