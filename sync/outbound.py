"""anny → Outlook (behaviour: anny → Outlook): read the booking, decide, write through the Graph gateway, record.

The link is recorded as *pending* (with the deterministic transactionId) before the Graph
create and completed after it, so a crash between the two never yields a second event.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from sync import changes_log
from sync.anny import AnnyClient
from sync.decide import (
    Action,
    CreateEvent,
    DeleteEvent,
    DeleteUnrecordedEvent,
    ForgetLink,
    OutboundContext,
    Skip,
    SuppressBlocker,
    UpdateEvent,
    decide_booking,
    payload_suffices,
)
from sync.errors import ConcurrencyError, RemoteGone, RoomNotMapped
from sync.graph import GraphGateway, WrittenEvent
from sync.keys import new_create_token, transaction_id
from sync.model import AnnyBooking, DesiredEvent, SeenBooking, SyncWindow, is_newer
from sync.settings import Settings
from sync.state import Link, LinksTable, RoomsTable, Rule, RulesTable

log = logging.getLogger(__name__)


@dataclass
class OutboundResult:
    booking_id: str
    actions: list[Action] = field(default_factory=list)

    @property
    def wrote(self) -> bool:
        return any(not isinstance(a, Skip) for a in self.actions)


HELD = "the rule is held by the brake on mass deletion"


def outbound_context(settings: Settings, now: datetime | None = None, rule: Rule | None = None) -> OutboundContext:
    window = SyncWindow.now(now or datetime.now(UTC), settings.window_months, settings.time_zone)
    return OutboundContext(window, settings.event_title_template, settings.anny_blocker_event_title,
                           rule.off_spans() if rule else ())


@dataclass
class OutboundFlow:
    settings: Settings
    links: LinksTable
    rules: RulesTable
    rooms: RoomsTable
    anny: AnnyClient
    graph: GraphGateway
    categories_ensured: set[str]

    async def sync_booking(self, booking_id: str, observed: str | None = None,
                           listed: AnnyBooking | None = None, seen: SeenBooking | None = None) -> OutboundResult:
        """Bring the booking's mirror event in line with anny.

        `listed`: the booking as a list read earlier showed it (the nightly run). It saves the read
        when nothing is to be written; anything else is decided again on a fresh read, since the
        booking may have changed since the list was read (behaviour: anny → Outlook: read before writing).
        `seen`: the booking as a webhook's payload showed it; it also stands for a write when it
        is newer than what the link saw (`payload_suffices`), so a change costs no anny read.

        When another worker wrote the booking's link between this one's read of it and its own
        write (a run beside a live webhook of a booking it is about to create, or a new booking's
        `created` and `updated` webhooks in one batch), the booking is decided once more on the
        link as it is now, as the inbound direction does, instead of failing a room's run or
        leaving a work item to the queue's retry. A create made first is undone by `_create`; an
        update that reached Outlook after the other worker's is put right by its echo (the mirror
        no longer shows what the link says: restored).
        """
        try:
            return await self._sync_once(booking_id, observed, listed, seen)
        except ConcurrencyError:
            log.info("booking's link changed meanwhile; syncing it again", extra={"booking_id": booking_id})
            return await self._sync_once(booking_id, observed, listed, seen)

    async def _sync_once(self, booking_id: str, observed: str | None, listed: AnnyBooking | None,
                         seen: SeenBooking | None) -> OutboundResult:
        if seen is not None and not await self._mapping_known(seen):
            seen = None  # read instead: the booking may be a child's of a mapped parent
        link: Link | None = None
        booking: AnnyBooking | None = None
        read_link, read_booking = True, True
        if seen is not None and seen.created and observed is None:
            created, read, booking = await self._create_unlinked(booking_id, seen)
            if created is not None:
                return created
            if read:  # decided below on the booking just read
                listed, seen, read_booking = None, None, False
        if booking is None and (listed is not None or seen is not None):
            # A listing may be older than a change whose webhook was lost (what a nightly run is
            # for): it never stands in for a read before a write.
            shown = seen or SeenBooking(listed, "")
            link = await self.links.link_by_anny_id(booking_id)
            rule = await self._rule_of(shown.booking) if shown.booking is not None else None
            ctx = outbound_context(self.settings, rule=rule)
            as_shown = decide_booking(shown.booking, rule.room if rule else None, link, ctx, observed)
            if all(isinstance(a, Skip) for a in as_shown):  # nothing to write: no read needed
                await self._remember(link, shown.version, observed)
                return OutboundResult(booking_id, as_shown)
            if seen is not None and payload_suffices(as_shown, link, seen.version) \
                    and not await self._held(rule, link):
                return await self._carry_out_all(booking_id, seen.booking, rule, as_shown, link, seen.version)
            read_link = False  # the link just read will do: every write of it is ETag-guarded
        if read_booking:
            if read_link:  # the link is read while anny answers
                booking, link = await asyncio.gather(self.anny.get_booking(booking_id),
                                                     self.links.link_by_anny_id(booking_id))
            else:
                booking = await self.anny.get_booking(booking_id)
        elif read_link:
            link = await self.links.link_by_anny_id(booking_id)
        rule = await self._rule_of(booking) if booking is not None else None
        if await self._held(rule, link):
            log.info("booking not synced: its rule is held", extra={"booking_id": booking_id})
            return OutboundResult(booking_id, [Skip(HELD)])
        room = rule.room if rule is not None else None
        actions = decide_booking(booking, room, link, outbound_context(self.settings, rule=rule), observed)
        return await self._carry_out_all(booking_id, booking, rule, actions, link,
                                         booking.version if booking is not None else "", observed)

    async def _create_unlinked(self, booking_id: str, seen: SeenBooking
                               ) -> tuple[OutboundResult | None, bool, AnnyBooking | None]:
        """A booking that webhooked `bookings.created` has no link yet (unless this is a redelivery).
        Its pending link is written create-only before anything is read: that write finds out
        whether a link exists (then nothing was read: decided with the link, a redelivery costs
        no anny read). Then the booking is read (without a link a payload never suffices) and,
        still to be created in that room, created without a further Table read.

        Returns the result, or None with whether the booking was read and as what.
        """
        rule = await self._rule_of(seen.booking) if seen.booking is not None else None
        if rule is None or rule.held:
            return None, False, None
        ctx = outbound_context(self.settings, rule=rule)
        if not _only_creates(decide_booking(seen.booking, rule.room, None, ctx)):
            return None, False, None
        try:
            pending = await self.links.save_link(self._pending(None, rule.room, booking_id, 0))
        except ConcurrencyError:
            return None, False, None
        booking = await self.anny.get_booking(booking_id)
        current = await self._rule_of(booking) if booking is not None else None
        actions = decide_booking(booking, current.room, None, outbound_context(self.settings, rule=current)) \
            if current is not None and current.room == rule.room and not current.held else []
        if booking is None or not _only_creates(actions):
            await self.links.delete_link(pending)  # withdrawn: nothing was written to Graph
            return None, True, booking
        [action] = actions
        assert isinstance(action, CreateEvent)
        await self._create(action, pending, booking.version, claimed=True)
        changes_log.booking_synced(booking_id, booking, rule.room, actions, ZoneInfo(self.settings.time_zone))
        return OutboundResult(booking_id, actions), True, booking

    async def _carry_out_all(self, booking_id: str, booking: AnnyBooking | None, rule: Rule | None,
                             actions: list[Action], link: Link | None, version: str,
                             observed: str | None = None) -> OutboundResult:
        room = rule.room if rule is not None else None
        for action in actions:
            link = await self._carry_out(action, link, version)
        await self._remember(link, version, observed)
        changes_log.booking_synced(booking_id, booking, room, actions, ZoneInfo(self.settings.time_zone))
        return OutboundResult(booking_id, actions)

    async def _remember(self, link: Link | None, version: str, observed: str | None) -> None:
        """A later state of the booking that changed nothing here is remembered, so that an older
        payload delivered after it can no longer pass for news. Not on a restore from Outlook
        (`observed`): its link may be in the middle of a write by the anny side."""
        if observed is None and link is not None and link.etag is not None and is_newer(version, link.anny_version):
            link.anny_version = version
            await self.links.save_link(link, index=False)  # no reader of index copies looks at the version

    async def _mapping_known(self, seen: SeenBooking) -> bool:
        """Whether the payload tells which rule (if any) maps its booking: its resource stated its
        parent, or a rule maps that resource itself (then it is a parent), or it says deleted."""
        if seen.parent_known or seen.booking is None:
            return True
        rule = await self.rules.get_rule(seen.booking.resource_id, cached=True)
        return rule is not None and not rule.removing

    async def _rule_of(self, booking: AnnyBooking) -> Rule | None:
        for resource_id in booking.resource_ids:
            rule = await self.rules.get_rule(resource_id, cached=True)
            if rule is not None and not rule.removing:
                return rule
        return None

    async def _held(self, rule: Rule | None, link: Link | None) -> bool:
        """A held rule pauses everything for its room; a mirror whose booking is gone is kept too."""
        if rule is not None:
            return bool(rule.held)
        if link is not None and link.origin == "anny":
            linked = await self.rules.get_rule_for_room(link.room, cached=True)
            return linked is not None and bool(linked.held)
        return False

    async def _carry_out(self, action: Action, link: Link | None, version: str) -> Link | None:
        match action:
            case CreateEvent():
                return await self._create(action, link, version)
            case UpdateEvent():
                assert link is not None
                return await self._update(action, link, version)
            case DeleteEvent(room=room, event_id=event_id):
                await self.graph.delete_event(room, event_id)
                return link
            case DeleteUnrecordedEvent(room=room, anny_id=anny_id):
                found = await self.graph.find_mirror_event(room, anny_id)
                if found is not None:
                    await self.graph.delete_event(room, found.event_id)
                return link
            case ForgetLink():
                if link is not None:
                    await self.links.delete_link(link)
                return None
            case SuppressBlocker():
                assert link is not None
                link.suppressed = True
                return await self.links.save_link(link)
        return link

    async def _create(self, action: CreateEvent, link: Link | None, version: str, claimed: bool = False) -> Link:
        """`claimed`: `link` is the pending link this worker has just written for this create."""
        desired, room = action.desired, action.room
        await self._ensure_category(room)
        previous_index = self.links.index_key_of(link) if link is not None else None
        recovering = not claimed and link is not None and link.state == "pending" and link.room == room \
            and link.generation == action.generation
        if not recovering and not claimed:
            link = await self.links.save_link(self._pending(link, room, desired.anny_id, action.generation),
                                              previous_index=previous_index)
            previous_index = None
        assert link is not None
        written = await self.graph.find_mirror_event(room, desired.anny_id) if recovering else None
        if written is not None:
            written = await self.graph.update_event(room, written.event_id, desired)
        else:
            written = await self.graph.create_event(room, desired, link.transaction_id)
        try:
            return await self._record(link, room, written, desired, previous_index, version)
        except ConcurrencyError:
            winner = await self.links.link_by_anny_id(desired.anny_id)
            if not _owns(winner, room, written.event_id, link.transaction_id):
                # Another worker changed the link while our create was in flight (gave the booking
                # up, or moved it to another room): nobody would ever find this event again, so
                # undo it before the retry (architecture: echoes and races: no twins).
                log.info("lost a link race; removing the event it created",
                         extra={"booking_id": desired.anny_id, "room": room, "event_id": written.event_id})
                await self.graph.delete_event(room, written.event_id)
            raise

    def _pending(self, link: Link | None, room: str, anny_id: str, generation: int) -> Link:
        pending = link or Link(room=room, origin="anny", anny_id=anny_id)
        pending.room, pending.state, pending.generation = room, "pending", generation
        pending.event_id, pending.event_change_key, pending.fingerprint = "", "", ""
        pending.transaction_id = transaction_id(anny_id, generation, new_create_token())
        return pending

    async def _update(self, action: UpdateEvent, link: Link, version: str) -> Link:
        try:
            written = await self.graph.update_event(action.room, action.event_id, action.desired)
        except RemoteGone:
            log.info("mirror event deleted in Outlook, re-creating",
                     extra={"booking_id": link.anny_id, "room": action.room, "event_id": action.event_id})
            return await self._create(CreateEvent(action.room, action.desired, link.generation + 1), link, version)
        return await self._record(link, action.room, written, action.desired, None, version)

    async def _record(self, link: Link, room: str, written: WrittenEvent, desired: DesiredEvent,
                      previous_index: tuple[str, str] | None, version: str) -> Link:
        previous_index = previous_index or self.links.index_key_of(link)
        link.room, link.state, link.event_id = room, "synced", written.event_id
        link.event_change_key, link.fingerprint = written.change_key, desired.fingerprint
        link.anny_version = version
        link.start, link.end = desired.start.isoformat(), desired.end.isoformat()
        try:
            return await self.links.save_link(link, previous_index=previous_index, guarded=True)
        except RoomNotMapped:
            # The rule was removed while we wrote: its removal may have scanned the links before
            # this one was recorded, so what we wrote is ours to remove (behaviour: rules, activation and removal).
            log.info("rule removed during the write; removing the event",
                     extra={"booking_id": link.anny_id, "room": room, "event_id": written.event_id})
            await self.graph.delete_event(room, written.event_id)
            await self.links.delete_link(link)
            return link

    async def _ensure_category(self, room: str) -> None:
        """The "anny" master category, created once per room and remembered."""
        if room in self.categories_ensured:
            return
        state = await self.rooms.get_room_state(room)
        if not state.category_ensured:
            await self.graph.ensure_category(room)
            try:
                await self.rooms.update_room_state(room, lambda s: setattr(s, "category_ensured", True))
            except ConcurrencyError:
                pass  # the room's lease keeps the entity busy; the flag only saves a Graph call next time
        self.categories_ensured.add(room)


def _only_creates(actions: list[Action]) -> bool:
    return len(actions) == 1 and isinstance(actions[0], CreateEvent)


def _owns(winner: Link | None, room: str, event_id: str, transaction_id: str) -> bool:
    """Whether the link that won a write race names our event, or will (a pending create with our
    transactionId gets our event back from Graph)."""
    if winner is None or winner.room != room:
        return False
    return winner.event_id == event_id or (winner.state == "pending" and winner.transaction_id == transaction_id)
