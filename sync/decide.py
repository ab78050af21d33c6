"""The sync decisions: pure functions of (source item, link, context) → actions. No I/O here.

`decide_booking` answers "what must happen in Outlook because of this anny booking";
`decide_event` answers "what must happen in anny because of this Outlook event". The flows
in `outbound.py` and `inbound.py` carry the actions out and record the links.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, tzinfo

from sync.model import (
    NEUTRAL_SENSITIVITIES,
    AnnyBooking,
    DesiredBlocker,
    DesiredEvent,
    OutlookEvent,
    SyncWindow,
    created_while_off,
    is_newer,
    whole_days,
)
from sync.state import Link
from sync.titles import render_title

# --- actions ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Skip:
    reason: str


CREATED_WHILE_OFF = "created while the integration was deactivated (`resync` brings it over)"
OffPeriods = tuple[tuple[datetime, datetime], ...]


@dataclass(frozen=True)
class CreateEvent:
    room: str
    desired: DesiredEvent
    generation: int


@dataclass(frozen=True)
class UpdateEvent:
    room: str
    event_id: str
    desired: DesiredEvent


@dataclass(frozen=True)
class DeleteEvent:
    room: str
    event_id: str


@dataclass(frozen=True)
class DeleteUnrecordedEvent:
    """A create was sent but its answer never recorded (pending link): find the event by our
    extended property and delete it if it exists."""

    room: str
    anny_id: str


@dataclass(frozen=True)
class SuppressBlocker:
    """An anny admin deleted our blocker: keep it deleted until the Outlook event changes."""


@dataclass(frozen=True)
class CreateBlocker:
    desired: DesiredBlocker


@dataclass(frozen=True)
class UpdateBlocker:
    anny_id: str
    desired: DesiredBlocker


@dataclass(frozen=True)
class DeleteBlocker:
    anny_id: str


@dataclass(frozen=True)
class DeleteUnrecordedBlocker:
    """A blocker POST was sent but its answer never recorded (pending link): find it by our
    marker and delete it if it exists."""


@dataclass(frozen=True)
class ForgetLink:
    """Nothing left to keep in step: drop the link."""


@dataclass(frozen=True)
class RestoreMirror:
    """Outlook changed or removed a mirror event: re-sync its booking from anny (anny wins).

    `observed` is the event's fingerprint as Outlook shows it ("" when removed).
    """

    anny_id: str
    observed: str


@dataclass(frozen=True)
class CheckRemoved:
    """A linked event left the delta view: deleted, or moved out of the window. Look it up."""

    event_id: str


Action = (Skip | CreateEvent | UpdateEvent | DeleteEvent | DeleteUnrecordedEvent | SuppressBlocker | CreateBlocker
          | UpdateBlocker | DeleteBlocker | DeleteUnrecordedBlocker | ForgetLink | RestoreMirror | CheckRemoved)


# --- anny → Outlook ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class OutboundContext:
    """What the outbound decision needs besides the booking and the link."""

    window: SyncWindow
    title_template: str
    blocker_title: str
    off_periods: OffPeriods = ()  # the rule's deactivated periods: new items from then stay unsynced


def desired_event(booking: AnnyBooking, ctx: OutboundContext) -> DesiredEvent:
    if booking.is_blocker:
        subject = ctx.blocker_title
    else:
        subject = render_title(ctx.title_template, service=booking.service_name, number=booking.number,
                               resource=booking.resource_name, status=booking.status)
    return DesiredEvent(booking.id, subject, booking.start, booking.end)


def decide_booking(booking: AnnyBooking | None, room: str | None, link: Link | None,
                   ctx: OutboundContext, observed: str | None = None) -> list[Action]:
    """Mirror one anny booking into its room. `booking` None: gone in anny; `room` None: unmapped.

    `observed`: the fingerprint of the mirror event as Outlook shows it now ("" when it was
    removed there); compared instead of what we last wrote, so an Outlook edit is undone
    while the echo of our own write costs nothing.
    """
    if link is not None and link.origin == "outlook":
        return _mirror_blocker_seen_in_anny(booking, link)
    if booking is not None and booking.made_by_this_app:
        return [Skip("a blocker this app created (its link is not recorded yet)")]
    wanted = booking is not None and room is not None and _should_mirror(booking)
    if not wanted:
        if link is not None:
            return [_remove_mirror_event(link), ForgetLink()]
        return [Skip("not a booking to mirror")]
    assert booking is not None and room is not None
    if link is None and not ctx.window.overlaps(booking.start, booking.end):
        return [Skip("outside the sync window and never synced")]
    if link is None and created_while_off(booking.created_at, ctx.off_periods):
        return [Skip(CREATED_WHILE_OFF)]
    desired = desired_event(booking, ctx)
    if link is None:
        return [CreateEvent(room, desired, 0)]
    if link.room != room:
        return [_remove_mirror_event(link), CreateEvent(room, desired, link.generation + 1)]
    if not link.event_id:
        return [CreateEvent(room, desired, link.generation)]
    current = link.fingerprint if observed is None else observed
    if current == desired.fingerprint:
        return [Skip("unchanged since last written" if observed is None else "Outlook shows what anny has")]
    return [UpdateEvent(room, link.event_id, desired)]


def payload_suffices(actions: list[Action], link: Link | None, version: str) -> bool:
    """Whether a decision made on a webhook's payload may be carried out without reading the booking.

    Nothing to do is safe whatever the payload's age: every later change sends its own webhook,
    and a link only remembers states at least as new as the payload's. A write is safe only
    when the payload is newer than what the link saw; without a link (or an unordered version)
    an older state could undo a newer one (created → deleted delivered in reverse), so the
    booking is read first.
    """
    if all(isinstance(action, Skip) for action in actions):
        return True
    return link is not None and is_newer(version, link.anny_version)


def is_own_blocker_echo(booking: AnnyBooking | None) -> bool:
    """A webhook about a blocker this app made that still stands: whatever the link says, nothing
    to do (Outlook owns its time, anny-side edits are kept), so the webhook needs no work item.
    A deleted or cancelled one does (the admin's deletion is remembered)."""
    return booking is not None and booking.made_by_this_app and not booking.is_cancelled


def _remove_mirror_event(link: Link) -> Action:
    if link.event_id:
        return DeleteEvent(link.room, link.event_id)
    return DeleteUnrecordedEvent(link.room, link.anny_id)


def _should_mirror(booking: AnnyBooking) -> bool:
    return not booking.is_cancelled and not booking.is_series_master and booking.end > booking.start


def _mirror_blocker_seen_in_anny(booking: AnnyBooking | None, link: Link) -> list[Action]:
    """Our own blocker, seen from anny: the echo of our write, or an anny admin's edit/deletion."""
    if booking is None or booking.is_cancelled:
        if link.suppressed:
            return [Skip("mirror blocker already known as deleted in anny")]
        return [SuppressBlocker()]
    return [Skip("mirror blocker: Outlook owns it; anny-side edits are kept")]


# --- Outlook → anny ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class InboundContext:
    """What the inbound decision needs besides the event and the link."""

    window: SyncWindow
    blocking_show_as: frozenset[str]
    neutral_titles: bool
    neutral_title: str
    resource_zone: tzinfo
    off_periods: OffPeriods = ()


def desired_blocker(event: OutlookEvent, ctx: InboundContext) -> DesiredBlocker:
    assert event.start is not None and event.end is not None
    start, end = event.start, event.end
    if event.is_all_day:
        start, end = whole_days(start, end, ctx.resource_zone)
    neutral = ctx.neutral_titles or event.sensitivity in NEUTRAL_SENSITIVITIES or not event.subject.strip()
    return DesiredBlocker(event.id, ctx.neutral_title if neutral else event.subject.strip(), start, end)


def decide_event(event: OutlookEvent, link: Link | None, ctx: InboundContext,
                 is_ours: bool = False) -> list[Action]:
    """Block the room's anny resource for one Outlook event (or stop blocking it).

    `is_ours`: the event carries our extended property although no link names it yet (the
    notification about our own create beat the create's answer).
    """
    if link is not None and link.origin == "anny":
        return _mirror_event_seen_in_outlook(event, link)
    if link is None and is_ours:
        return [Skip("a mirror event this app created (its link is not recorded yet)")]
    blocks = _blocks(event, ctx)
    if link is None:
        if not blocks:
            return [Skip("not a blocking event")]
        if event.start is None or event.end is None or not ctx.window.overlaps(event.start, event.end):
            return [Skip("outside the sync window and never synced")]
        if created_while_off(event.created, ctx.off_periods):
            return [Skip(CREATED_WHILE_OFF)]
        return [CreateBlocker(desired_blocker(event, ctx))]
    if event.removed:
        return [CheckRemoved(event.id)]
    if not blocks:
        return _stop_blocking(link)
    desired = desired_blocker(event, ctx)
    if link.suppressed:
        if event.change_key and event.change_key == link.event_change_key:
            return [Skip("deleted in anny; the event has not changed since")]
        return [CreateBlocker(desired)]
    if not link.anny_id:
        return [CreateBlocker(desired)]
    if link.fingerprint == desired.fingerprint:
        return [Skip("unchanged since last written")]
    return [UpdateBlocker(link.anny_id, desired)]


def decide_removed_event(found: OutlookEvent | None, link: Link, ctx: InboundContext) -> list[Action]:
    """After `CheckRemoved`: `found` is the event looked up by id (None: it is gone)."""
    if found is None or found.removed:
        if link.origin == "anny":
            return [RestoreMirror(link.anny_id, "")]
        return _stop_blocking(link)
    return decide_event(found, link, ctx)


def _stop_blocking(link: Link) -> list[Action]:
    if link.suppressed:
        return [ForgetLink()]
    if link.anny_id:
        return [DeleteBlocker(link.anny_id), ForgetLink()]
    if link.state == "pending":
        return [DeleteUnrecordedBlocker(), ForgetLink()]
    return [ForgetLink()]


def _blocks(event: OutlookEvent, ctx: InboundContext) -> bool:
    """A series master never blocks: its occurrences do, one blocker each (behaviour: Outlook → anny). A master
    is seen when a linked single meeting was made recurring (its id now names the series)."""
    return (not event.removed and not event.is_cancelled and not event.is_series_master
            and event.start is not None and event.end is not None and event.show_as in ctx.blocking_show_as)


def _mirror_event_seen_in_outlook(event: OutlookEvent, link: Link) -> list[Action]:
    if event.removed:
        return [CheckRemoved(event.id)]  # deleted, or moved out of the view: look before writing
    if event.mirror_fingerprint() != link.fingerprint:
        return [RestoreMirror(link.anny_id, event.mirror_fingerprint())]
    return [Skip("our own write coming back")]
