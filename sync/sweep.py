"""The catch-up sweep (architecture: from each trigger to each write): what a lost notification or webhook missed is
repaired within one sweep, not by the next nightly run.

Every SWEEP_INTERVAL_MINUTES (the timer looks every 5 minutes): anny's bookings changed since
the last sweep, newest first, read until the high-water mark (usually one request), and each
mapped room's calendarView delta from its stored link (one Graph request when nothing
changed). Bookings deleted outright in anny leave no trace in that listing; the nightly run
finds those.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from sync.reconcile import run_room, side_by_side
from sync.runs import SUBSCRIPTION_RECREATED, RunLog, claim, every_part, recorded
from sync.state import IntegrationStatus, Rule, RunRecord
from sync.worker import Worker

log = logging.getLogger(__name__)
TICK = timedelta(minutes=5)  # the timer's period: a sweep is due when less than a tick remains
MAX_ANNY_PAGES = 10  # 10 reads of 30 bookings per sweep at most; the nightly run catches up the rest


def sweep_due(status: IntegrationStatus, now: datetime, interval_minutes: int) -> bool:
    last = status.last_sweep_at
    return last is None or now - last > timedelta(minutes=interval_minutes) - TICK / 2


async def run_sweep(worker: Worker, now: datetime | None = None) -> RunRecord | None:
    """One sweep if it is due (None: inactive or not due)."""
    services = worker.services
    now = now or datetime.now(UTC)
    if not await services.is_active():
        return None
    if not await claim(services.status, lambda s: sweep_due(s, now, services.settings.sweep_minutes),
                       lambda s: setattr(s, "last_sweep_at", now)):
        return None
    async with recorded(services.status, RunLog("sweep")) as run:
        rules = [r for r in await services.rules.list_rules() if not r.removing and not r.held]
        status = await services.status.get_status()
        # anny out of reach or one room refused by Graph must not cost the other rooms their catch-up
        await every_part(("anny's changes", lambda: _anny_changes(worker, rules, status, run)),
                         ("the rooms' catch-up", lambda: side_by_side(rules, lambda rule: _room(worker, rule, run))))
    return run.record


async def _anny_changes(worker: Worker, rules: list[Rule], status: IntegrationStatus, run: RunLog) -> None:
    services = worker.services
    since = _high_water(status)
    changed, complete = await services.anny.bookings_changed_since(since, MAX_ANNY_PAGES)
    mapped = {r.anny_resource_id for r in rules}
    for booking in changed:
        if mapped.intersection(booking.resource_ids):
            result = await worker.outbound.sync_booking(booking.id, listed=booking)
            rule_room = next((r.room for r in rules if r.anny_resource_id in booking.resource_ids), "")
            run.actions(rule_room, result.actions, booking_id=booking.id)
    run.count("anny bookings read", len(changed))
    if not complete:
        log.warning("more anny changes since %s than one sweep reads; the older ones wait for the nightly run",
                    since.isoformat(), extra={"since": since.isoformat()})
    newest = max((b.updated_at for b in changed if b.updated_at), default=None)
    if newest is not None and newest > since:
        mark = newest.isoformat()
        await services.status.update_status(lambda s: setattr(s, "sweep_high_water", mark))


def _high_water(status: IntegrationStatus) -> datetime:
    """The newest anny change the last sweep saw; the first sweep starts at the activation."""
    if status.sweep_high_water:
        return datetime.fromisoformat(status.sweep_high_water)
    return status.activated_at or datetime.now(UTC) - timedelta(days=1)


async def _room(worker: Worker, rule: Rule, run: RunLog) -> None:
    services = worker.services
    subs = await services.subscriptions.subscriptions_of_room(rule.room)
    if not any(s.expires_at > datetime.now(UTC) for s in subs):
        sub = await worker.subscriptions.ensure(rule.room)
        run.repaired(SUBSCRIPTION_RECREATED, rule.room, subscription_id=sub.subscription_id)
    await run_room(worker, rule, run)
