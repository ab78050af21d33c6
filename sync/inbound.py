"""Outlook → anny (behaviour: Outlook → anny): read a room's changes by delta, decide per event, write blockers.

One delta round of a room and the sync of each event it reports. The round runs under the
room's lease (`sync.room_runs`): runs for one room never overlap and no signal is lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar
from zoneinfo import ZoneInfo

from sync import changes_log
from sync.anny import AnnyClient, AnnyResource
from sync.brake import brake_trips, hold_rule
from sync.budget import BACKFILL, LIVE, priority
from sync.decide import (
    Action,
    CheckRemoved,
    CreateBlocker,
    DeleteBlocker,
    DeleteUnrecordedBlocker,
    ForgetLink,
    InboundContext,
    RestoreMirror,
    Skip,
    UpdateBlocker,
    decide_event,
    decide_removed_event,
)
from sync.errors import (
    ConcurrencyError,
    RemoteBadRequest,
    RemoteConflict,
    RemoteGone,
    RoomNotMapped,
    SyncStateExpired,
)
from sync.graph import GraphGateway
from sync.keys import fingerprint
from sync.model import BLOCKER_MARKER, DesiredBlocker, OutlookEvent, SyncWindow, delta_query_window
from sync.outbound import OutboundFlow
from sync.room_runs import RoomLease
from sync.settings import Settings
from sync.state import Link, LinksTable, RoomsTable, RoomState, Rule, RulesTable

log = logging.getLogger(__name__)
T = TypeVar("T")


class LinkLookups:
    """Links of one room's events, each read when its event's turn comes; the reads asked for in
    the same moment (a burst's events starting together) go out as one query per 14 events
    (`LinksTable.links_by_events`). Reading them all when a round starts would hand a long
    round's last events links that other workers (a backfill item) have changed meanwhile."""

    def __init__(self, links: LinksTable, room: str) -> None:
        self._links, self._room = links, room
        self._waiting: dict[str, list[asyncio.Future[Link | None]]] = {}
        self._reads: set[asyncio.Task[None]] = set()

    async def get(self, event_id: str) -> Link | None:
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Link | None] = loop.create_future()
        if not self._waiting:
            loop.call_soon(self._start_read)  # after the other lookups of this moment
        self._waiting.setdefault(event_id, []).append(answer)
        return await answer

    def _start_read(self) -> None:
        task = asyncio.ensure_future(self._read())
        self._reads.add(task)
        task.add_done_callback(self._reads.discard)

    async def _read(self) -> None:
        waiting, self._waiting = self._waiting, {}
        answers = [(event_id, answer) for event_id, futures in waiting.items() for answer in futures]
        try:
            found = await self._links.links_by_events(self._room, list(waiting))
        except BaseException as exc:  # every event waiting for this read fails with it (or is cancelled)
            for _, answer in answers:
                if answer.done():
                    continue
                if isinstance(exc, Exception):
                    answer.set_exception(exc)
                else:
                    answer.cancel()
            if not isinstance(exc, Exception):
                raise
            return
        for event_id, answer in answers:
            if not answer.done():
                answer.set_result(found.get(event_id))


class Unread:
    """A link not read yet (None means: read, and there is none)."""


UNREAD = Unread()
_resource_zones: dict[str, str] = {}


def blocker_note(room: str, event_id: str) -> str:
    """The marker that makes a blocker recognisable as ours in anny, which has no external-id field."""
    return f"Synced from the Outlook calendar of {room}. {BLOCKER_MARKER}{fingerprint(room, event_id)}]"


def inbound_context(settings: Settings, resource_zone: str, now: datetime | None = None,
                    rule: Rule | None = None) -> InboundContext:
    window = SyncWindow.now(now or datetime.now(UTC), settings.window_months, settings.time_zone)
    return InboundContext(window, settings.blocking_show_as, settings.blocker_title_mode == "neutral",
                          settings.blocker_neutral_title, ZoneInfo(resource_zone or settings.time_zone),
                          rule.off_spans() if rule else ())


@dataclass
class RoomRunResult:
    room: str
    runs: int = 0
    actions: list[Action] = field(default_factory=list)
    skipped_busy: bool = False
    rerun_later: bool = False
    held: bool = False  # the brake on mass deletion held the rule; nothing was written
    failures: list[str] = field(default_factory=list)
    deferred: list[OutlookEvent] = field(default_factory=list)  # baseline events left to backfill (EventsBackfill)
    queued: int = 0  # how many of them were queued as backfill items
    census_done: bool = False  # the window was compared whole (`_census`) in one of the runs


@dataclass
class InboundFlow:
    settings: Settings
    links: LinksTable
    rules: RulesTable
    rooms: RoomsTable
    anny: AnnyClient
    graph: GraphGateway
    outbound: OutboundFlow
    backfill: Callable[[str, list[OutlookEvent]], Awaitable[None]] | None = None  # queues what a baseline left

    # -- the room's runs (sync.room_runs) ---------------------------------------------------------------

    async def sync_room(self, room: str, run_id: str = "", allow_deletions: bool = False,
                        signalled_at: datetime | None = None, census: bool = False) -> RoomRunResult:
        """Run the room's delta until no signal arrived meanwhile; return at once if another run holds
        it, or if a round that began to read after `signalled_at` covered the signal already.

        `run_id` should be the queue message's id: a message redelivered after its worker died
        takes its own lease back instead of waiting for it to expire. `allow_deletions`: the
        admin confirmed them (`resync --confirm-deletions`); otherwise the brake applies.
        `census`: compare the whole window once besides the changes (`_census`; the nightly run).
        """
        result = RoomRunResult(room)
        outcome = await RoomLease(self.rooms).run(
            room, lambda state: self._run_once(state, result, allow_deletions, census), run_id, signalled_at)
        result.skipped_busy, result.rerun_later = outcome.skipped_busy, outcome.rerun_later
        return result

    # -- one delta round ------------------------------------------------------------------------------

    async def _run_once(self, state: RoomState, result: RoomRunResult, allow_deletions: bool,
                        census: bool = False) -> RoomState:
        result.runs += 1
        rule = await self.rules.get_rule_for_room(state.room, cached=True)
        if rule is None or rule.removing or rule.held:
            log.info("room has no rule, or its rule is held; nothing to do",
                     extra={"room": state.room, "held": bool(rule and rule.held)})
            result.held = bool(rule and rule.held)
            return state
        ctx = inbound_context(self.settings, rule.time_zone or await self.resource_zone(rule), rule=rule)
        query = delta_query_window(ctx.window, self.settings.window_months)
        window_changed = (state.window_start, state.window_end) != (query.start.isoformat(), query.end.isoformat())
        link = "" if window_changed else state.delta_link
        # Changes since the last round are live work, whichever queue asked for the run; only a
        # baseline (and the backfill it leaves) is backfill work.
        with priority(LIVE if link else BACKFILL):
            try:
                delta_link, events = await self._read_changes(state.room, query, link)
            except SyncStateExpired:
                log.warning("delta token expired; new baseline", extra={"room": state.room})
                link = ""
                with priority(BACKFILL):
                    delta_link, events = await self._read_changes(state.room, query, link)
            seen = {e.id for e in events}
            if not state.time_keys:  # rows written before the keys existed get theirs, once
                await self.links.add_time_keys(state.room)
                state.time_keys = True
            unseen = [] if link else await self._unseen(state.room, ctx, seen)
            entered: list[OutlookEvent] = []
            if link and census and not result.census_done:
                entered, unseen = await self._census(state.room, ctx, seen)
                result.census_done = True
            elif link:
                entered = await self._entered_window(state, ctx, seen)
            if not allow_deletions and await self._brake(rule, ctx, [*events, *unseen]):
                result.held = True
                return state  # nothing written and the delta link kept: the changes are read again on release
            await self._sync_events(state.room, rule, ctx, [*events, *entered], result, baseline=not link)
            await self._sync_events(state.room, rule, ctx, unseen, result)
            if link:
                await self._follow_beyond_window(state.room, rule, query, seen, result, ctx)
        if result.deferred and self.backfill is not None:
            # Queued before the new delta link is saved: a crash in between repeats the baseline.
            await self.backfill(state.room, result.deferred)
            result.queued += len(result.deferred)
            result.deferred = []
        state.delta_link = delta_link
        state.window_start, state.window_end = query.start.isoformat(), query.end.isoformat()
        state.covered_end = ctx.window.end.isoformat()
        state.last_run_at = datetime.now(UTC)
        return state

    async def _entered_window(self, state: RoomState, ctx: InboundContext, seen: set[str]) -> list[OutlookEvent]:
        """The events that came into the sync window since the room's last run (its end moved on by
        a day or more): the delta reported them when they were made, but then they lay beyond the
        window and were skipped, and it will not report them again. One calendarView read of the
        new days, instead of a new baseline of the whole room every day."""
        covered = datetime.fromisoformat(state.covered_end) if state.covered_end else ctx.window.start
        if covered >= ctx.window.end:
            return []
        fresh = SyncWindow(max(covered, ctx.window.start), ctx.window.end)
        return [e for e in await self.graph.calendar_view(state.room, fresh, self.settings.delta_page_size)
                if e.id not in seen]

    async def _census(self, room: str, ctx: InboundContext, seen: set[str]
                      ) -> tuple[list[OutlookEvent], list[OutlookEvent]]:
        """The nightly run's comparison of the whole sync window, which delta cannot replace: it
        drops some changes (deletions and deleted occurrences, microsoft-graph-docs #11728, #3121),
        and only a full comparison finds what the feed never said. One calendarView read of the
        window: its events not among this round's changes are decided again (an unchanged one costs
        nothing, its link knows it), and linked events in the window that it does not show are
        checked (a GET each) and their blockers removed when they are gone. The delta link is kept:
        no new baseline and no backfill. Returns (events to decide, linked events not shown)."""
        listed = await self.graph.calendar_view(room, ctx.window, self.settings.delta_page_size)
        shown = seen | {e.id for e in listed}
        gone = [OutlookEvent(id=link.event_id, removed=True) for link in await self.links.links_of_room(room)
                if link.event_id and link.event_id not in shown and not link.ended_before(ctx.window.start)
                and not link.starts_after(ctx.window.end)]
        return [e for e in listed if e.id not in seen], gone

    @staticmethod
    def remember_zones(resources: Sequence[AnnyResource]) -> None:
        """The time zones a list of the resources has just shown: a comparison of many rules then
        reads no resource alone before its room's delta read."""
        _resource_zones.update((resource.id, resource.time_zone) for resource in resources)

    async def resource_zone(self, rule: Rule) -> str:
        """The anny resource's time zone (all-day blockers are whole days there), read once per process."""
        if rule.anny_resource_id not in _resource_zones:
            resource = await self.anny.get_resource(rule.anny_resource_id)
            _resource_zones[rule.anny_resource_id] = resource.time_zone if resource else ""
        return _resource_zones[rule.anny_resource_id]

    async def _read_changes(self, room: str, query: SyncWindow, link: str) -> tuple[str, list[OutlookEvent]]:
        latest: dict[str, OutlookEvent] = {}
        delta_link = ""
        async for page in self.graph.delta_pages(room, query, link, self.settings.delta_page_size):
            for event in page.events:
                latest[event.id] = event  # the same event may come several times in one round
            delta_link = page.delta_link or delta_link
        return delta_link, list(latest.values())

    async def _brake(self, rule: Rule, ctx: InboundContext, events: list[OutlookEvent]) -> bool:
        """Hold the rule if this run would delete too many of its mirror blockers (cheap when few could go)."""
        leaving = [e for e in events if e.removed or e.is_cancelled or e.show_as not in ctx.blocking_show_as]
        if len(leaving) <= self.settings.brake_min_items:
            return False
        mirrors = {link.event_id for link in await self.links.links_of_room(rule.room)
                   if link.origin == "outlook" and link.anny_id and not link.suppressed}
        deletions = sum(1 for e in leaving if e.id in mirrors)
        if not brake_trips(deletions, len(mirrors), self.settings):
            return False
        await hold_rule(self.rules, rule, self.settings, "Outlook → anny", deletions, len(mirrors))
        return True

    async def _sync_events(self, room: str, rule: Rule, ctx: InboundContext, events: list[OutlookEvent],
                           result: RoomRunResult, baseline: bool = False) -> None:
        """Events are independent of each other (one link each), so a few are written at once.

        In a baseline, events that would need a new blocker are left to backfill work items
        (`result.deferred`): the run, and its lease on the room, end in seconds, so live changes
        to the room are not held up by an initial sync spending anny's budget for minutes.
        """
        lookups = LinkLookups(self.links, room)

        async def one(event: OutlookEvent) -> list[Action]:
            link = await lookups.get(event.id)  # read when the event's turn comes: the link is current
            if baseline and self._needs_backfill(ctx, event, link):
                result.deferred.append(event)
                return []
            try:
                return await self.sync_event(room, rule, ctx, event, link)
            except ConcurrencyError:
                # Another worker (a backfill item, a run elsewhere) wrote this event's link since
                # it was read: decide once more on the link as it is now (what we wrote is kept
                # or undone by `_record`), rather than failing the whole room run.
                log.info("event's link changed meanwhile; syncing it again",
                         extra={"room": room, "event_id": event.id})
                return await self.sync_event(room, rule, ctx, event, await self.links.link_by_event(room, event.id))

        await self._each(room, events, lambda e: e.id, one, result)

    @staticmethod
    def _needs_backfill(ctx: InboundContext, event: OutlookEvent, link: Link | None) -> bool:
        if event.removed or link is not None:
            return False
        if event.looks_like_ours:
            return True  # is it? a lookup of our property, done by the backfill
        return not all(isinstance(action, Skip) for action in decide_event(event, None, ctx))

    async def backfill_events(self, room: str, event_ids: Sequence[str], span: SyncWindow | None = None
                              ) -> RoomRunResult:
        """Write the blockers a baseline left to backfill. Each event is read again (it may have
        changed or gone since), and one that a live run linked meanwhile is left alone.

        With the `span` the baseline saw the events in, one calendarView read of it finds them as
        they are now: one Graph request per item instead of one per event, which matters because
        an initial sync's items come a room at a time and Graph serves a mailbox 4 requests at
        once. An event not found there (moved or deleted since), or one that looks like our own
        mirror event (our extended property decides), is read alone as before."""
        result = RoomRunResult(room)
        rule = await self.rules.get_rule_for_room(room, cached=True)
        if rule is None or rule.removing:
            return result
        ctx = inbound_context(self.settings, rule.time_zone or await self.resource_zone(rule), rule=rule)

        linked = await self.links.links_by_events(room, event_ids) if event_ids else {}
        unlinked = len(event_ids) - len(linked)  # one alone costs a single GET, as the span would
        current = await self._events_in(room, span) if span is not None and unlinked > 1 else {}

        async def one(event_id: str) -> list[Action]:
            if event_id in linked:
                return []
            event = current.get(event_id)
            if event is not None and not event.looks_like_ours:
                found: tuple[OutlookEvent, str] | None = (event, "")
            else:
                found = await self.graph.anny_id_of_event(room, event_id)
            if found is None or found[1]:
                return []  # deleted since the baseline, or one of our mirror events
            try:
                return await self.sync_event(room, rule, ctx, found[0], None)
            except ConcurrencyError:
                if await self.links.link_by_event(room, event_id) is not None:
                    return []  # a live run wrote it at the same moment
                raise

        await self._each(room, list(event_ids), lambda i: i, one, result)
        return result

    async def _events_in(self, room: str, span: SyncWindow) -> dict[str, OutlookEvent]:
        return {e.id: e for e in await self.graph.calendar_view(room, span, self.settings.delta_page_size)}

    async def _each(self, room: str, items: list[T], key: Callable[[T], str],
                    sync_one: Callable[[T], Awaitable[list[Action]]], result: RoomRunResult) -> None:
        """A burst is written as fast as the budgets allow: anny's organisation budget paces the
        writes (sync.budget) and the Graph gateway the mailbox's reads. In flight at most one
        window's worth of anny writes: more could only wait for the next window."""
        limit = asyncio.Semaphore(self.settings.anny_write_limit)

        async def one(item: T) -> list[Action]:
            async with limit:
                try:
                    return await sync_one(item)
                except (RemoteBadRequest, RemoteConflict) as exc:
                    # anny refused this one item: record it and go on, or one bad event would
                    # stop the whole room (the delta link would never move past it).
                    log.error("event could not be synced", extra={"room": room, "event_id": key(item),
                                                                  "error": str(exc)})
                    result.failures.append(str(exc))
                    return []

        outcomes = await asyncio.gather(*(one(item) for item in items), return_exceptions=True)
        for outcome in outcomes:  # every event finished before a failure ends the run (and its lease)
            if isinstance(outcome, BaseException):
                raise outcome
            result.actions.extend(outcome)

    async def _unseen(self, room: str, ctx: InboundContext, seen: set[str]) -> list[OutlookEvent]:
        """After a baseline: linked events it did not show were deleted or moved away meanwhile."""
        return [OutlookEvent(id=link.event_id, removed=True) for link in await self.links.links_of_room(room)
                if link.event_id and link.event_id not in seen and not link.ended_before(ctx.window.start)]

    async def _follow_beyond_window(self, room: str, rule: Rule, query: SyncWindow, seen: set[str],
                                    result: RoomRunResult, ctx: InboundContext) -> None:
        """Linked events beyond the window's end keep syncing (behaviour: the sync window), but the room's delta
        covers only its query window: each beyond that is looked up by id (a GET per such link and
        run; people seldom move meetings that far, and the window catches up with them month by
        month). Links that ended before the window are retired: nobody books the past. A filtered
        query finds them (their rows' sortable start keys), not a scan of all the room's links."""
        beyond = [OutlookEvent(id=link.event_id, removed=True)
                  for link in await self.links.links_of_room(room, starting_from=query.end)
                  if link.event_id and link.event_id not in seen and link.starts_after(query.end)]
        await self._sync_events(room, rule, ctx, beyond, result)

    # -- one event -------------------------------------------------------------------------------------

    async def sync_event(self, room: str, rule: Rule, ctx: InboundContext, event: OutlookEvent,
                         link: Link | Unread | None = UNREAD) -> list[Action]:
        """Decide and carry out one event. `link`: its link, when the caller has just read it."""
        if isinstance(link, Unread):
            link = await self.links.link_by_event(room, event.id)
        is_ours = False
        if link is None and event.looks_like_ours and not event.removed:
            found = await self.graph.anny_id_of_event(room, event.id)
            is_ours = found is not None and bool(found[1])
        actions = decide_event(event, link, ctx, is_ours)
        done: list[Action] = []
        for action in actions:
            if isinstance(action, CheckRemoved):
                assert link is not None
                found = await self.graph.anny_id_of_event(room, action.event_id)
                current = found[0] if found else None
                follow_up = decide_removed_event(current, link, ctx)
                for step in follow_up:
                    link = await self._carry_out(step, room, rule, current or event, link)
                done.extend(follow_up)
            else:
                link = await self._carry_out(action, room, rule, event, link)
                done.append(action)
        changes_log.event_synced(room, event, link.anny_id if link else "", done, ctx.resource_zone)
        return done

    async def _carry_out(self, action: Action, room: str, rule: Rule, event: OutlookEvent,
                         link: Link | None) -> Link | None:
        match action:
            case CreateBlocker(desired=desired):
                return await self._create_blocker(room, rule, event, desired, link)
            case UpdateBlocker(anny_id=anny_id, desired=desired):
                assert link is not None
                return await self._update_blocker(room, rule, event, anny_id, desired, link)
            case DeleteBlocker(anny_id=anny_id):
                await self.anny.delete_booking(anny_id)
                return link
            case DeleteUnrecordedBlocker():
                found = await self.find_our_blocker(rule, blocker_note(room, event.id))
                if found is not None:
                    await self.anny.delete_booking(found)
                return link
            case ForgetLink():
                if link is not None:
                    await self.links.delete_link(link)
                return None
            case RestoreMirror(anny_id=anny_id, observed=observed):
                await self.outbound.sync_booking(anny_id, observed=observed)
                return link
            case Skip():
                return link
        return link

    async def _create_blocker(self, room: str, rule: Rule, event: OutlookEvent, desired: DesiredBlocker,
                              link: Link | None) -> Link | None:
        note = blocker_note(room, event.id)
        adopted = None
        if link is not None and link.state == "pending":
            adopted = await self.find_our_blocker(rule, note, desired)
        previous_index = self.links.index_key_of(link) if link is not None else None
        if link is None or link.state != "pending":
            link = link or Link(room=room, origin="outlook", event_id=event.id)
            link.state, link.anny_id, link.suppressed = "pending", "", False
            try:
                link = await self.links.save_link(link, previous_index=previous_index, guarded=True)
            except RoomNotMapped:
                log.info("rule removed during the run; no blocker written", extra={"room": room, "event_id": event.id})
                return None
            previous_index = None
        if adopted is not None:
            await self.anny.update_blocker(adopted, desired, note)
            anny_id, version = adopted, ""  # a PATCH may answer 204: the new updated_at is unknown
        else:
            created = await self.anny.create_blocker(rule.anny_resource_id, desired, note)
            anny_id, version = created.id, created.version
        return await self._record(link, event, desired, anny_id, previous_index, version)

    async def _update_blocker(self, room: str, rule: Rule, event: OutlookEvent, anny_id: str,
                              desired: DesiredBlocker, link: Link) -> Link | None:
        try:
            updated = await self.anny.update_blocker(anny_id, desired, blocker_note(room, event.id))
            if updated is None:  # 204: no document to tell whether the blocker still blocks
                updated = await self.anny.get_booking(anny_id)
        except RemoteGone:
            updated = None
        if updated is None or updated.is_cancelled:
            # Cancelled (or deleted) in anny and its webhook lost: the meeting changed since, so
            # Outlook's version is written again as a new blocker (behaviour: Outlook → anny).
            log.info("mirror blocker was cancelled in anny; blocking again",
                     extra={"room": room, "event_id": event.id, "booking_id": anny_id})
            return await self._create_blocker(room, rule, event, desired, link)
        return await self._record(link, event, desired, anny_id, None, updated.version)

    async def _record(self, link: Link, event: OutlookEvent, desired: DesiredBlocker, anny_id: str,
                      previous_index: tuple[str, str] | None, version: str) -> Link:
        previous_index = previous_index or self.links.index_key_of(link)
        link.state, link.anny_id, link.suppressed = "synced", anny_id, False
        link.anny_version = version
        link.event_change_key, link.fingerprint = event.change_key, desired.fingerprint
        link.start, link.end = desired.start.isoformat(), desired.end.isoformat()
        try:
            # The link row exists (its pending write was guarded), so this replace by ETag needs no
            # marker: a rule's removal that began since deletes the row, and the replace fails.
            return await self.links.save_link(link, previous_index=previous_index, guarded=True)
        except ConcurrencyError:
            winner = await self.links.link_by_event(link.room, event.id)
            if winner is None or winner.anny_id != anny_id:
                # Nobody will ever find this blocker: another worker's link won, or the rule's
                # removal deleted the link (behaviour: rules, activation and removal).
                log.info("lost a link race; removing the blocker it wrote",
                         extra={"room": link.room, "event_id": event.id, "booking_id": anny_id})
                await self.anny.delete_booking(anny_id)
            raise

    async def find_our_blocker(self, rule: Rule, note: str, desired: DesiredBlocker | None = None) -> str | None:
        """Our blocker with this note, after a crash between its POST and the link write."""
        window = SyncWindow.now(datetime.now(UTC), self.settings.window_months, self.settings.time_zone)
        start, end = window.start, window.end
        if desired is not None:
            start, end = min(start, desired.start), max(end, desired.end)
        for booking in await self.anny.list_bookings([rule.anny_resource_id], start, end):
            if booking.is_blocker and booking.note == note and not booking.is_cancelled:
                return booking.id
        return None
