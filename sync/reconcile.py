"""A full comparison of one rule's window, both ways: activation, resync, a new rule, the nightly run.

`scan_*` read both sides and decide without writing (the preview of `--dry-run`, and the
brake's count); `reconcile_rule` carries it out through the flows, which record links.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar, cast

from sync import progress
from sync.anny import AnnyResource
from sync.brake import brake_trips, hold_rule
from sync.decide import Action, decide_booking, decide_event
from sync.inbound import InboundFlow, RoomRunResult, inbound_context
from sync.model import AnnyBooking, OutlookEvent
from sync.outbound import OutboundFlow, outbound_context
from sync.runs import INBOUND, OUTBOUND, SUBSCRIPTION_RECREATED, RunLog, action_kind, tally
from sync.services import Services
from sync.state import Link, Rule
from sync.subscriptions import SubscriptionManager

log = logging.getLogger(__name__)
T = TypeVar("T")
FIRST_ITEMS = 5
MAX_ROOM_RUNS = 5
# A room's bookings in flight: enough to keep its mailbox's 4 Graph slots busy while the others
# wait for their anny read (a read and a write each); the budget (sync.budget) and the Graph
# gateway set the pace. More only took CPU and mailbox slots from the blocker backfill, whose
# anny writes bound an initial sync (16: 0.847 of the bound for 10 rooms, 8: 0.866).
BOOKINGS_IN_PARALLEL = 8
ROOMS_IN_PARALLEL = 16  # rooms compared side by side (each room's Graph calls are capped per mailbox)
PROGRESS_EVERY = 25
BACKFILL_QUEUED = "create (queued)"
BUSY_WAIT_S, MAX_BUSY_WAITS = 0.5, 60  # a room run takes seconds; a dead one's lease is not waited out


class Flows(Protocol):
    """What a comparison works through: the services and the two flows (the `Worker` has them)."""

    @property
    def services(self) -> Services: ...

    @property
    def outbound(self) -> OutboundFlow: ...

    @property
    def inbound(self) -> InboundFlow: ...

    @property
    def subscriptions(self) -> SubscriptionManager: ...


@dataclass
class RuleReport:
    rule: Rule
    directions: dict[str, dict[str, int]] = field(default_factory=lambda: {OUTBOUND: {}, INBOUND: {}})
    first: dict[str, list[dict[str, str]]] = field(default_factory=lambda: {OUTBOUND: [], INBOUND: []})
    held: str = ""
    would_hold: str = ""  # a preview's warning: this run would trip the brake

    def add(self, direction: str, actions: list[Action], **item: str) -> None:
        for kind, n in tally(actions).items():
            self.directions[direction][kind] = self.directions[direction].get(kind, 0) + n
        for action in actions:
            action_name = action_kind(action)
            if action_name not in (None, "unchanged") and len(self.first[direction]) < FIRST_ITEMS:
                self.first[direction].append({"action": str(action_name), **item})

    def view(self, with_items: bool = False) -> dict[str, Any]:
        view: dict[str, Any] = {"anny_resource": self.rule.anny_resource_id, "room": self.rule.room,
                                **self.directions, "held": self.held or None}
        if with_items:
            view["first_items"] = self.first
            view["would_hold"] = self.would_hold or None
        return view


def _item(booking: AnnyBooking | None = None, event: OutlookEvent | None = None) -> dict[str, str]:
    if booking is not None:
        return {"booking_id": booking.id, "start": booking.start.isoformat(), "number": booking.number}
    assert event is not None
    return {"event_id": event.id, "start": event.start.isoformat() if event.start else "",
            "subject": event.subject}


# --- anny → Outlook -----------------------------------------------------------------------------------


@dataclass
class OutboundScan:
    decisions: list[tuple[AnnyBooking, list[Action]]]
    unlisted: list[Link]  # mirror events whose booking the listing did not show: gone, moved, or cancelled
    mirrors: int
    unlisted_blockers: list[Link] = field(default_factory=list)  # our blockers anny no longer lists

    @property
    def deletions(self) -> int:
        deciding = sum(1 for _, actions in self.decisions for a in actions if action_kind(a) == "delete")
        return deciding + len(self.unlisted)


async def scan_outbound(worker: Flows, rule: Rule, resources: list[AnnyResource]) -> OutboundScan:
    """GET /api/v1/bookings of the resource and its children in the window, decided against the links."""
    services = worker.services
    ctx = outbound_context(services.settings, rule=rule)
    children = [r.id for r in resources if r.parent_id == rule.anny_resource_id]
    bookings = await services.anny.list_bookings([rule.anny_resource_id, *children], ctx.window.start,
                                                 ctx.window.end)
    all_links = await services.links.links_of_room(rule.room)
    links = [link for link in all_links if link.origin == "anny"]
    by_booking = {link.anny_id: link for link in all_links if link.anny_id}
    listed = {b.id for b in bookings}

    def unlisted(link: Link) -> bool:  # links that ended before the window are retired, not re-read nightly
        return link.anny_id not in listed and not link.ended_before(ctx.window.start)

    blockers = [link for link in all_links if link.origin == "outlook" and link.anny_id and not link.suppressed
                and unlisted(link)]
    decisions = [(b, decide_booking(b, rule.room, by_booking.get(b.id), ctx)) for b in bookings]
    return OutboundScan(decisions, [link for link in links if unlisted(link)], len(links), blockers)


async def _outbound(worker: Flows, rule: Rule, scan: OutboundScan, run: RunLog, report: RuleReport) -> None:
    flow, status = worker.outbound, worker.services.status
    await progress.start(status, rule.room, "to_outlook", len(scan.decisions))
    limit, done = asyncio.Semaphore(BOOKINGS_IN_PARALLEL), [0]

    async def one(booking: AnnyBooking) -> None:
        async with limit:  # re-read before writing: the list may be minutes old
            result = await flow.sync_booking(booking.id, listed=booking)
        report.add(OUTBOUND, result.actions, **_item(booking))
        run.actions(rule.room, result.actions, booking_id=booking.id)
        done[0] += 1
        if done[0] % PROGRESS_EVERY == 0:
            await progress.advance(status, rule.room, "to_outlook", PROGRESS_EVERY)

    outcomes = await asyncio.gather(*(one(b) for b, _ in scan.decisions), return_exceptions=True)
    for outcome in outcomes:  # every booking had its turn before a failure ends the run
        if isinstance(outcome, BaseException):
            raise outcome
    await progress.advance(status, rule.room, "to_outlook", done[0] % PROGRESS_EVERY)
    for link in [*scan.unlisted, *scan.unlisted_blockers]:  # re-read: gone, moved or cancelled
        result = await flow.sync_booking(link.anny_id)
        report.add(OUTBOUND, result.actions, booking_id=link.anny_id)
        run.actions(rule.room, result.actions, booking_id=link.anny_id)
    run.count("bookings checked", len(scan.decisions) + len(scan.unlisted))
    await worker.services.rooms.update_room_state(
        rule.room, lambda s: setattr(s, "last_outbound_at", datetime.now(UTC)))


# --- Outlook → anny -----------------------------------------------------------------------------------


@dataclass
class InboundScan:
    decisions: list[tuple[OutlookEvent, list[Action]]]
    mirrors: set[str]  # event ids that have a mirror blocker

    @property
    def deletions(self) -> int:
        return sum(1 for event, actions in self.decisions if event.id in self.mirrors
                   and any(action_kind(a) in ("delete", "delete if gone") for a in actions))


async def scan_inbound(worker: Flows, rule: Rule) -> InboundScan:
    """A calendarView delta baseline of the window (the stored delta link is not touched), decided
    against the links; events that look like ours but are unknown count as ours (no lookup)."""
    services = worker.services
    ctx = inbound_context(services.settings, rule.time_zone or await worker.inbound.resource_zone(rule), rule=rule)
    events: dict[str, OutlookEvent] = {}
    async for page in services.graph.delta_pages(rule.room, ctx.window, "", services.settings.delta_page_size):
        events.update((e.id, e) for e in page.events)
    links = {link.event_id: link for link in await services.links.links_of_room(rule.room) if link.event_id}
    unseen = [OutlookEvent(id=event_id, removed=True) for event_id, link in links.items() if event_id not in events
              and not link.ended_before(ctx.window.start)]
    decisions = [(e, decide_event(e, links.get(e.id), ctx, is_ours=e.looks_like_ours and e.id not in links))
                 for e in [*events.values(), *unseen]]
    mirrors = {event_id for event_id, link in links.items()
               if link.origin == "outlook" and link.anny_id and not link.suppressed}
    return InboundScan(decisions, mirrors)


async def run_room(worker: Flows, rule: Rule, run: RunLog, allow_deletions: bool = False, census: bool = False
                   ) -> list[RoomRunResult]:
    """The room's delta run, here and now. If a queued run holds the room, wait for it and run after
    it (bounded), so that what this run reports has really been compared. `census`: the whole
    window compared once as well (a reconciliation; `InboundFlow._census`)."""
    results: list[RoomRunResult] = []
    waits = 0
    while len(results) < MAX_ROOM_RUNS:
        result = await worker.inbound.sync_room(rule.room, allow_deletions=allow_deletions,
                                                census=census and not any(r.census_done for r in results))
        if result.skipped_busy and waits < MAX_BUSY_WAITS:
            waits += 1
            await asyncio.sleep(BUSY_WAIT_S)
            continue
        results.append(result)
        run.actions(rule.room, result.actions)
        if result.held:
            run.record.held.append(rule.anny_resource_id)
        if not result.rerun_later:
            break
    run.count("rooms read")
    return results


async def _inbound(worker: Flows, rule: Rule, run: RunLog, report: RuleReport, allow_deletions: bool,
                   baseline: bool) -> None:
    services = worker.services
    if baseline:  # compare the whole window, not only the changes since the last delta link
        await services.rooms.update_room_state(rule.room, lambda s: setattr(s, "delta_link", ""))
    for result in await run_room(worker, rule, run, allow_deletions, census=True):
        report.add(INBOUND, result.actions)
        if result.queued:  # blockers written in the background, at backfill priority (see `status`)
            queued = report.directions[INBOUND].get(BACKFILL_QUEUED, 0) + result.queued
            report.directions[INBOUND][BACKFILL_QUEUED] = queued
        if result.held:
            report.held = (await services.rules.get_rule(rule.anny_resource_id) or rule).held


# --- both ---------------------------------------------------------------------------------------------


async def _subscription(worker: Flows, room: str, run: RunLog) -> None:
    before = {s.subscription_id for s in await worker.services.subscriptions.subscriptions_of_room(room)}
    sub = await worker.subscriptions.ensure(room)
    if sub.subscription_id not in before:
        run.repaired(SUBSCRIPTION_RECREATED, room, subscription_id=sub.subscription_id)


async def reconcile_rule(worker: Flows, rule: Rule, run: RunLog, resources: list[AnnyResource], *,
                         allow_deletions: bool = False, baseline: bool = False,
                         report: RuleReport | None = None) -> RuleReport:
    """Subscribe the room, then compare the window both ways and repair; the brake applies unless
    `allow_deletions` (the admin confirmed). A held rule is skipped and reported as held.
    `report`: filled as the run goes, so a caller still has what was done when the run fails."""
    report = report or RuleReport(rule)
    worker.inbound.remember_zones(resources)
    if rule.held and not allow_deletions:
        report.held = rule.held
        return report
    await _subscription(worker, rule.room, run)
    scan = await scan_outbound(worker, rule, resources)
    if not allow_deletions and brake_trips(scan.deletions, scan.mirrors, worker.services.settings):
        report.held = await hold_rule(worker.services.rules, rule, worker.services.settings, OUTBOUND,
                                      scan.deletions, scan.mirrors)
    else:
        # Outlook → anny first: its baseline takes seconds and hands the new blockers to backfill
        # items, so anny's write budget, the scarcest of all, is spent from the start while the
        # bookings go to Outlook.
        await _inbound(worker, rule, run, report, allow_deletions, baseline)
        await _outbound(worker, rule, scan, run, report)
    if report.held and rule.anny_resource_id not in run.record.held:
        run.record.held.append(rule.anny_resource_id)
    return report


async def side_by_side(rules: list[Rule], sync: Callable[[Rule], Awaitable[T]]) -> list[T]:
    """`sync` for each rule, ROOMS_IN_PARALLEL rooms side by side: Graph allows 4 requests at once
    per mailbox, so rooms one after another would leave it idle, and anny's budget paces the rest.
    Every rule has its turn before the first failure is raised (each one is logged with its room);
    the results keep the rules' order."""
    limit = asyncio.Semaphore(ROOMS_IN_PARALLEL)

    async def one(rule: Rule) -> T:
        async with limit:
            return await sync(rule)

    outcomes = await asyncio.gather(*(one(rule) for rule in rules), return_exceptions=True)
    failed = [(rule, outcome) for rule, outcome in zip(rules, outcomes, strict=True)
              if isinstance(outcome, BaseException)]
    for rule, outcome in failed:
        log.warning("the run of room %s failed: %s", rule.room, outcome,
                    extra={"room": rule.room, "error": str(outcome)})
    if failed:
        raise failed[0][1]
    return cast(list[T], outcomes)


async def reconcile_rules(worker: Flows, rules: list[Rule], run: RunLog, resources: list[AnnyResource], *,
                          allow_deletions: bool = False, baseline: bool = False) -> list[RuleReport]:
    """`reconcile_rule` for many rules, side by side (the nightly run)."""
    return await side_by_side(rules, lambda rule: reconcile_rule(
        worker, rule, run, resources, allow_deletions=allow_deletions, baseline=baseline))


async def preview_rule(worker: Flows, rule: Rule, resources: list[AnnyResource]) -> RuleReport:
    """What `reconcile_rule` would do, per direction, without writing anything."""
    report = RuleReport(rule, held=rule.held)
    worker.inbound.remember_zones(resources)
    scan = await scan_outbound(worker, rule, resources)
    for booking, actions in scan.decisions:
        report.add(OUTBOUND, actions, **_item(booking))
    if scan.unlisted:
        report.directions[OUTBOUND]["delete if gone"] = len(scan.unlisted)
    inbound = await scan_inbound(worker, rule)
    for event, actions in inbound.decisions:
        report.add(INBOUND, actions, **_item(event=event))
    settings = worker.services.settings
    for direction, deletions, mirrors in ((OUTBOUND, scan.deletions, scan.mirrors),
                                          (INBOUND, inbound.deletions, len(inbound.mirrors))):
        if brake_trips(deletions, mirrors, settings) and not report.would_hold:
            report.would_hold = (f"{direction}: {deletions} of {mirrors} mirror(s) would be deleted; without "
                                 "--confirm-deletions the brake holds the rule")
    return report
