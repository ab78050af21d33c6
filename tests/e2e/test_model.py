"""Model-based test of the whole sync (docs/behaviour.md, docs/architecture.md): the real flows
against the emulators and Azurite.

People on both sides create, move, cancel and delete bookings, blockers and meetings; anny
admins edit and delete mirror blockers, Outlook users edit and delete mirror events;
deliveries are duplicated, reordered or lost; Graph and anny answer 429/503; a worker dies
after any write; two workers race on one booking or room; rules are removed and added again;
the window rolls a day. After "settle" (queues drained, one nightly run, queues drained) both
calendars must equal what the oracle below computes from docs/behaviour.md alone — not from the
app's links — with no twins, no orphans, and nothing a person made touched.

The only thing replaced is the clock of the sync window (`SyncWindow.now`), so that the window
can roll a day within a test; everything else is the real code over real HTTP and Azurite.

Size: `MODEL_EXAMPLES` / `MODEL_STEPS` (environment); `make test-deep` runs many more.
"""

from __future__ import annotations

import asyncio
import calendar
import itertools
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from devhost.azurite import Azurite
from devhost.stack import Emulators, LocalStack, start_stack
from sandbox.graph.person import recurrence

BERLIN = ZoneInfo("Europe/Berlin")
MARKER = "[m365-sync:"  # architecture: echoes and races: our blockers carry a marker in their note
PROPERTY = "String {8e1d1c7a-3b9f-4a52-9d6e-5a1f2b7c4e90} Name AnnyBookingId"
EXAMPLES = int(os.environ.get("MODEL_EXAMPLES", "8"))
STEPS = int(os.environ.get("MODEL_STEPS", "18"))
ROOMS = ("room.one@contoso.example", "room.two@contoso.example")
# Days from today: well inside, around the far edge (6 months ≈ 181–184 days) and far beyond it.
DAYS = (0, 1, 2, 5, 20, 181, 182, 183, 186, 400)
DELIVERY_FAULTS: dict[str, dict[str, int]] = {
    "anny-duplicate": {"duplicate": 2}, "anny-reorder": {"reorder_batch": 3}, "anny-drop": {"drop_next": 1},
    "graph-duplicate": {"duplicate": 2}, "graph-reorder": {"reorder_next": 3}, "graph-drop": {"drop_next": 1},
}
STATS: dict[str, float] = {"examples": 0, "steps": 0, "settles": 0}
REPORT: list[str] = []  # printed in the run's summary (tests/conftest.py), so CI logs show it


# --- the window (behaviour: words, the sync window) ------------------------------------------------


def add_months(day: date, months: int) -> date:
    index = day.month - 1 + months
    year, month = day.year + index // 12, index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


@dataclass
class Clock:
    """Days the test has rolled the window forward."""

    offset: int = 0

    def today(self) -> date:
        return (datetime.now(BERLIN) + timedelta(days=self.offset)).date()

    def window(self) -> tuple[datetime, datetime]:
        today = self.today()
        return (datetime.combine(today, datetime.min.time(), BERLIN),
                datetime.combine(add_months(today, 6), datetime.min.time(), BERLIN))


# --- what people made, as the oracle knows it -------------------------------------------------------


@dataclass
class Booking:
    """A booking or blocker a person made in anny (series: one per occurrence)."""

    id: str
    number: str
    resource: str
    start: datetime
    end: datetime
    blocker: bool = False
    service: str = "Meeting"
    live: bool = True
    linked: bool = False


@dataclass
class Meeting:
    """A meeting a person made in a room's Outlook calendar (series: `count` weekly occurrences)."""

    id: str
    room: str
    start: datetime
    end: datetime
    subject: str
    all_day: bool = False
    private: bool = False
    cancelled: bool = False
    live: bool = True
    count: int = 0  # 0: a single meeting
    moved: dict[int, tuple[datetime, datetime]] = field(default_factory=dict)
    removed: set[int] = field(default_factory=set)
    linked: bool = False
    suppressed: bool = False  # an anny admin deleted its blocker; until the meeting changes
    admin_title: str | None = None  # an anny admin renamed its blocker; until the meeting changes

    def changed(self) -> None:
        self.suppressed, self.admin_title = False, None

    def instances(self) -> list[tuple[datetime, datetime]]:
        if not self.count:
            return [(self.start, self.end)]
        found = []
        for k in range(self.count):
            if k in self.removed:
                continue
            found.append(self.moved.get(k, (self.start + timedelta(weeks=k), self.end + timedelta(weeks=k))))
        return found

    def blocker_span(self, start: datetime, end: datetime) -> tuple[datetime, datetime]:
        if self.all_day:  # behaviour: Outlook → anny: whole days in the resource's zone
            first = start.astimezone(UTC).date()
            return (datetime.combine(first, datetime.min.time(), BERLIN),
                    datetime.combine(first + timedelta(days=1), datetime.min.time(), BERLIN))
        return start, end


def utc_of(value: str) -> datetime:
    return datetime.fromisoformat(value.rstrip("Z")[:19]).replace(tzinfo=UTC)


def instant(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(microsecond=0)


# --- the app under test: one stack for the whole test, reset per example ---------------------------------


@dataclass
class Rig:
    stack: LocalStack
    clock: Clock
    crash: dict[str, int]


async def _reset_app() -> None:
    from sync import inbound
    from sync.services import get_services
    from sync.work import POISON_QUEUE, WORK_QUEUE

    services = await get_services()
    await services.tables.clear_all()
    services.rules.forget()
    services.categories_ensured.clear()
    services.forget_status()
    inbound._resource_zones.clear()
    for name in (WORK_QUEUE, POISON_QUEUE):
        from azure.storage.queue.aio import QueueClient

        async with QueueClient.from_connection_string(services.settings.storage.connection_string, name) as q:
            await q.clear_messages()


async def _command(command: str, **params: str) -> Any:
    from sync.admin import run_command
    from sync.services import get_services
    from sync.worker import Worker

    return await run_command(command, params, Worker(await get_services()))


WRITES = {
    "sync.graph.GraphGateway": ("create_event", "update_event", "delete_event"),
    "sync.anny.AnnyClient": ("create_blocker", "update_blocker", "delete_booking"),
    "sync.state.links.LinksTable": ("save_link", "delete_link"),
}


def _crashing(original: Callable[..., Any], crash: dict[str, int]) -> Callable[..., Any]:
    async def write_then_maybe_die(*args: Any, **kwargs: Any) -> Any:
        result = await original(*args, **kwargs)
        if crash["after"] > 0:
            crash["after"] -= 1
            if crash["after"] == 0:
                raise RuntimeError(f"injected crash after {original.__qualname__}")
        return result

    return write_then_maybe_die


@pytest.fixture(scope="module")
def rig(azurite: Azurite, emulators: Emulators) -> Iterator[Rig]:
    import importlib

    from sync.model import SyncWindow

    clock = Clock()
    crash = {"after": 0}
    patch = pytest.MonkeyPatch()
    original_now = SyncWindow.now.__func__  # type: ignore[attr-defined]

    def shifted(cls: type, now: datetime, months: int, zone_name: str) -> Any:
        return original_now(cls, now + timedelta(days=clock.offset), months, zone_name)

    patch.setattr(SyncWindow, "now", classmethod(shifted))
    for owner, names in WRITES.items():
        module, _, cls_name = owner.rpartition(".")
        cls = getattr(importlib.import_module(module), cls_name)
        for name in names:
            patch.setattr(cls, name, _crashing(getattr(cls, name), crash))
    emulators.reset()
    stack = start_stack(azurite, emulators, "model")
    try:
        yield Rig(stack, clock, crash)
    finally:
        stack.stop()
        patch.undo()


class SyncModel(RuleBasedStateMachine):
    rig: Rig

    def __init__(self) -> None:
        super().__init__()
        self.stack = self.rig.stack
        self.clock = self.rig.clock
        self.clock.offset = 0
        self.rig.crash["after"] = 0
        self.anny, self.graph = self.stack.anny, self.stack.graph
        self.bookings: dict[str, Booking] = {}
        self.masters: set[str] = set()
        self.meetings: dict[str, Meeting] = {}
        self.rules: dict[str, str] = {}  # anny resource → room
        self.names = itertools.count(1)
        STATS["examples"] += 1

    # -- setting up: two mapped rooms (one resource with a child), one unmapped resource ------------

    @initialize()
    def set_up(self) -> None:
        self.stack.emulators.reset()
        self.stack.host.call(_reset_app())
        one = self.anny.add_resource("Room One", timezone="Europe/Berlin")
        desk = self.anny.add_resource("Desk 1", timezone="Europe/Berlin", parent=one["id"])
        two = self.anny.add_resource("Room Two", timezone="Europe/Berlin")
        elsewhere = self.anny.add_resource("Elsewhere", timezone="Europe/Berlin")
        self.anny.add_service("Meeting")
        for room in ROOMS:
            self.graph.add_room(room, room.split("@")[0])
        self.stack.subscribe_anny_webhooks()
        self.parents = {one["id"]: ROOMS[0], two["id"]: ROOMS[1]}
        self.parent_of = {desk["id"]: one["id"]}
        self.resources = [one["id"], desk["id"], two["id"], elsewhere["id"]]
        for resource, room in self.parents.items():
            self._admin("rules.add", anny_resource=resource, room=room)
            self.rules[resource] = room
        self._admin("activate")
        self.observe_links()

    # -- a person in anny --------------------------------------------------------------------------------

    def _span(self, day: int, hour: int, hours: int) -> tuple[datetime, datetime]:
        start = datetime.combine(self.clock.today() + timedelta(days=day), datetime.min.time(), BERLIN)
        start = start.replace(hour=hour).astimezone(UTC)
        return start, start + timedelta(hours=hours)

    @rule(resource=st.integers(0, 3), day=st.sampled_from(DAYS), hour=st.integers(7, 18), hours=st.integers(1, 3),
          blocker=st.booleans())
    def anny_create(self, resource: int, day: int, hour: int, hours: int, blocker: bool) -> None:
        start, end = self._span(day, hour, hours)
        res = self.resources[resource]
        if blocker:
            made = self.anny.person_create_blocker(res, start.isoformat(), end.isoformat(), title="Painting")
        else:
            made = self.anny.person_create_booking(res, start.isoformat(), end.isoformat(), service="Meeting")
        self.bookings[made["id"]] = Booking(made["id"], str(made.get("number") or ""), res, start, end, blocker)

    @rule(resource=st.integers(0, 3), day=st.integers(0, 10), hour=st.integers(7, 18), count=st.integers(2, 3))
    def anny_create_series(self, resource: int, day: int, hour: int, count: int) -> None:
        start, end = self._span(day, hour, 1)
        res = self.resources[resource]
        made = self.anny.person_create_series(res, start.isoformat(), end.isoformat(), count, service="Meeting")
        self.masters.add(made["master"]["id"])
        for k, occ in enumerate(made["occurrences"]):
            self.bookings[occ["id"]] = Booking(occ["id"], str(occ.get("number") or ""), res,
                                               start + timedelta(weeks=k), end + timedelta(weeks=k))

    def _live_bookings(self) -> list[Booking]:
        return [b for b in self.bookings.values() if b.live]

    @precondition(lambda self: self._live_bookings())
    @rule(pick=st.integers(0, 99), day=st.sampled_from(DAYS), hour=st.integers(7, 18))
    def anny_move(self, pick: int, day: int, hour: int) -> None:
        booking = self._pick(self._live_bookings(), pick)
        start, end = self._span(day, hour, 1)
        self.anny.person_move_booking(booking.id, start.isoformat(), end.isoformat())
        booking.start, booking.end = start, end

    @precondition(lambda self: self._live_bookings())
    @rule(pick=st.integers(0, 99), resource=st.integers(0, 3))
    def anny_change_resource(self, pick: int, resource: int) -> None:
        booking = self._pick(self._live_bookings(), pick)
        booking.resource = self.resources[resource]
        self.anny.person_update_booking(booking.id, resource=booking.resource)

    @precondition(lambda self: self._live_bookings())
    @rule(pick=st.integers(0, 99), delete=st.booleans())
    def anny_cancel(self, pick: int, delete: bool) -> None:
        booking = self._pick(self._live_bookings(), pick)
        if delete:
            self.anny.person_delete_booking(booking.id)
        else:
            self.anny.person_cancel_booking(booking.id)
        booking.live = False

    # -- an anny admin and our mirror blockers ------------------------------------------------------------

    def _our_blockers(self) -> list[dict]:
        return [b for b in self.anny.bookings()
                if b["is_blocker"] and MARKER in (b.get("note") or "") and not b.get("canceled_at")]

    def _meeting_of_blocker(self, blocker: dict) -> Meeting | None:
        span = (instant(datetime.fromisoformat(blocker["start_date"])),
                instant(datetime.fromisoformat(blocker["end_date"])))
        for meeting in self.meetings.values():
            if meeting.live and not meeting.count and (
                    tuple(map(instant, meeting.blocker_span(meeting.start, meeting.end))) == span):
                return meeting
        return None

    @precondition(lambda self: any(not m.count for m in self.meetings.values()))
    @rule(pick=st.integers(0, 99), delete=st.booleans(), webhook_lost=st.booleans())
    def anny_admin_changes_mirror_blocker(self, pick: int, delete: bool, webhook_lost: bool) -> None:
        candidates = [(b, m) for b in self._our_blockers() if (m := self._meeting_of_blocker(b)) is not None]
        if not candidates:
            return
        blocker, meeting = candidates[pick % len(candidates)]
        if webhook_lost:
            self.anny.set_webhook_faults(drop_next=1)
        if delete:
            self.anny.person_cancel_booking(blocker["id"])
            meeting.suppressed = True
        else:
            meeting.admin_title = f"Renamed {next(self.names)}"
            self.anny.person_update_booking(blocker["id"], title=meeting.admin_title)

    # -- a person in Outlook ------------------------------------------------------------------------------------

    @rule(room=st.integers(0, 1), day=st.sampled_from(DAYS), hour=st.integers(7, 18), hours=st.integers(1, 3),
          all_day=st.booleans(), private=st.booleans(), count=st.sampled_from([0, 0, 3]))
    def outlook_create(self, room: int, day: int, hour: int, hours: int, all_day: bool, private: bool,
                       count: int) -> None:
        mailbox = ROOMS[room]
        subject = f"Planning {next(self.names)}"
        fields: dict[str, Any] = {"subject": subject, "organizer": "grace@contoso.example"}
        if private:
            fields["sensitivity"] = "private"
        if all_day:
            first = self.clock.today() + timedelta(days=day)
            start = datetime.combine(first, datetime.min.time(), UTC)
            end = start + timedelta(days=1)
            fields.update(is_all_day=True, start=first.isoformat(), end=(first + timedelta(days=1)).isoformat(),
                          time_zone="UTC")
        else:
            start, end = self._span(day, hour, hours)
            fields.update(start=start.isoformat()[:19], end=end.isoformat()[:19], time_zone="UTC")
        if count:
            if day > 20:
                return  # series stay inside the window: their occurrences are checked one by one
            fields["recurrence"] = recurrence("weekly", start.date(), days_of_week=[start.strftime("%A").lower()],
                                              count=count, time_zone="UTC")
        made = self.graph.person_create_event(mailbox, **fields)
        self.meetings[made["id"]] = Meeting(made["id"], mailbox, start, end, subject, all_day, private,
                                            count=count)

    def _live_meetings(self, series: bool | None = None) -> list[Meeting]:
        return [m for m in self.meetings.values()
                if m.live and (series is None or bool(m.count) == series)]

    @precondition(lambda self: self._live_meetings(series=False))
    @rule(pick=st.integers(0, 99), day=st.sampled_from(DAYS), hour=st.integers(7, 18))
    def outlook_move(self, pick: int, day: int, hour: int) -> None:
        meeting = self._pick(self._live_meetings(series=False), pick)
        if meeting.all_day:
            return
        start, end = self._span(day, hour, 1)
        self.graph.person_update_event(meeting.room, meeting.id, start=start.isoformat()[:19],
                                       end=end.isoformat()[:19], time_zone="UTC")
        meeting.start, meeting.end = start, end
        meeting.changed()

    @precondition(lambda self: self._live_meetings())
    @rule(pick=st.integers(0, 99), delete=st.booleans())
    def outlook_cancel(self, pick: int, delete: bool) -> None:
        meeting = self._pick(self._live_meetings(), pick)
        if delete:
            self.graph.person_delete_event(meeting.room, meeting.id)
            meeting.live = False
        else:
            self.graph.person_cancel_event(meeting.room, meeting.id)
            meeting.cancelled = True
        meeting.changed()

    @precondition(lambda self: self._live_meetings(series=True))
    @rule(pick=st.integers(0, 99), k=st.integers(0, 2), cancel=st.booleans(), hours=st.integers(2, 5))
    def outlook_edit_occurrence(self, pick: int, k: int, cancel: bool, hours: int) -> None:
        meeting = self._pick(self._live_meetings(series=True), pick)
        if k >= meeting.count or k in meeting.removed or meeting.all_day:
            return
        original = meeting.start + timedelta(weeks=k)
        occurrence = self.graph.occurrence_id(meeting.room, meeting.id, original.isoformat())
        if cancel:
            self.graph.person_delete_event(meeting.room, occurrence)
            meeting.removed.add(k)
        else:
            start, end = original + timedelta(hours=hours), original + timedelta(hours=hours + 1)
            self.graph.person_update_event(meeting.room, occurrence, start=start.isoformat()[:19],
                                           end=end.isoformat()[:19], time_zone="UTC")
            meeting.moved[k] = (start, end)

    @precondition(lambda self: self._live_meetings())
    @rule(pick=st.integers(0, 99))
    def outlook_change_recurrence(self, pick: int) -> None:
        """A single meeting made weekly (three times), or a series turned back into one meeting."""
        meeting = self._pick(self._live_meetings(), pick)
        if meeting.all_day or meeting.cancelled or meeting.start - datetime.now(UTC) > timedelta(days=20):
            return
        if meeting.count:
            self.graph.person_update_event(meeting.room, meeting.id, extra={"recurrence": None})
            meeting.count, meeting.moved, meeting.removed = 0, {}, set()
        else:
            rec = recurrence("weekly", meeting.start.date(), days_of_week=[meeting.start.strftime("%A").lower()],
                             count=3, time_zone="UTC")
            self.graph.person_update_event(meeting.room, meeting.id, recurrence=rec)
            meeting.count = 3
        meeting.changed()

    # -- an Outlook user and our mirror events -------------------------------------------------------------------

    def _mirror_events(self, room: str) -> list[dict]:
        return [e for e in self.graph.events(room) if self._anny_id(e)]

    @staticmethod
    def _anny_id(event: dict) -> str:
        for prop in event.get("singleValueExtendedProperties") or []:
            if prop["id"].lower() == PROPERTY.lower():
                return str(prop["value"])
        return ""

    @rule(room=st.integers(0, 1), pick=st.integers(0, 99),
          edit=st.sampled_from(["subject", "move", "free", "tentative", "category", "attendee", "reminder",
                                "delete"]))
    def outlook_user_edits_mirror(self, room: int, pick: int, edit: str) -> None:
        mirrors = self._mirror_events(ROOMS[room])
        if not mirrors:
            return
        event = mirrors[pick % len(mirrors)]
        mailbox, event_id = ROOMS[room], event["id"]
        start = utc_of(event["start"]["dateTime"])
        changes: dict[str, Any] = {
            "subject": {"subject": "Mine now"},
            "move": {"start": (start + timedelta(hours=2)).isoformat()[:19],
                     "end": (start + timedelta(hours=3)).isoformat()[:19], "time_zone": "UTC"},
            "free": {"show_as": "free"},
            "tentative": {"show_as": "tentative"},
            "category": {"categories": []},
            "attendee": {"attendees": ["bob@contoso.example"]},
            "reminder": {"extra": {"isReminderOn": True, "reminderMinutesBeforeStart": 15}},
        }.get(edit, {})
        if edit == "delete":
            self.graph.person_delete_event(mailbox, event_id)
        else:
            self.graph.person_update_event(mailbox, event_id, **changes)

    # -- faults, crashes, races ------------------------------------------------------------------------------

    @rule(kind=st.sampled_from([*sorted(DELIVERY_FAULTS), "anny-503", "anny-429", "graph-503", "graph-429"]))
    def fault(self, kind: str) -> None:
        side, _, what = kind.partition("-")
        if what.isdigit():
            if side == "anny":
                self.anny.fail_next(int(what), count=2, retry_after=1)
            else:
                self.graph.add_fault(int(what), count=2, retry_after=1)
        elif side == "anny":
            self.anny.set_webhook_faults(**DELIVERY_FAULTS[kind])
        else:
            self.graph.set_notification_faults(**DELIVERY_FAULTS[kind])

    @rule(after=st.integers(1, 6))
    def a_worker_dies_after_a_write(self, after: int) -> None:
        """The `after`-th write from now (Graph, anny or a link) succeeds, then its worker dies."""
        self.rig.crash["after"] = after

    @precondition(lambda self: self._live_bookings())
    @rule(pick=st.integers(0, 99))
    def two_workers_race_on_a_booking(self, pick: int) -> None:
        booking = self._pick(self._live_bookings(), pick)
        self.stack.host.call(_race(self.stack, [_booking_work(booking.id), _booking_work(booking.id)]))
        self.settle()

    @rule(room=st.integers(0, 1))
    def two_workers_race_on_a_room(self, room: int) -> None:
        self.stack.host.call(_race(self.stack, [_room_work(ROOMS[room]), _room_work(ROOMS[room])]))
        self.settle()

    @precondition(lambda self: self._live_bookings())
    @rule(pick=st.integers(0, 99), resource=st.integers(0, 3))
    def a_booking_changes_room_while_a_worker_writes_it(self, pick: int, resource: int) -> None:
        """Worker X syncs the booking; meanwhile a person moves it to another resource and worker Y syncs it."""
        booking = self._pick(self._live_bookings(), pick)
        booking.resource = self.resources[resource]

        async def person_then_worker() -> list[Any]:
            await asyncio.sleep(0.01)
            await asyncio.to_thread(self.anny.person_update_booking, booking.id, resource=booking.resource)
            return await _handle(_booking_work(booking.id))

        self.stack.host.call(_alongside(self.stack, _booking_work(booking.id), person_then_worker()))
        self.settle()

    @precondition(lambda self: self._live_bookings())
    @rule(pick=st.integers(0, 99), delay=st.sampled_from([0.0, 0.02, 0.05]))
    def a_booking_is_cancelled_while_the_nightly_run_works(self, pick: int, delay: float) -> None:
        booking = self._pick(self._live_bookings(), pick)
        booking.live = False

        async def person_then_worker() -> list[Any]:
            await asyncio.sleep(delay)
            await asyncio.to_thread(self.anny.person_cancel_booking, booking.id)
            return await _handle(_booking_work(booking.id))

        self.stack.host.call(_with_nightly(self.stack, person_then_worker()))
        self.settle()

    @precondition(lambda self: self.rules)
    @rule(pick=st.integers(0, 1), delay=st.sampled_from([0.0, 0.02, 0.05, 0.1]))
    def admin_removes_a_rule_during_a_room_run(self, pick: int, delay: float) -> None:
        resource = sorted(self.rules)[pick % len(self.rules)]
        room = self.rules[resource]

        async def admin() -> list[Any]:
            await asyncio.sleep(delay)
            await _command("rules.remove", anny_resource=resource)
            return []

        armed, self.rig.crash["after"] = self.rig.crash["after"], 0
        self.stack.host.call(_alongside(self.stack, _room_work(room), admin()))
        self.rig.crash["after"] = armed
        remaining = {r["anny_resource_id"] for r in self.stack.host.call(_command("rules.list"))}
        if resource in remaining:  # the command failed (anny or Graph said no): the admin runs it again
            self._admin("rules.remove", anny_resource=resource)
        self._rule_removed(resource)
        self.settle()

    # -- the admin and the clock ----------------------------------------------------------------------------

    @precondition(lambda self: self.rules)
    @rule(pick=st.integers(0, 1))
    def admin_removes_a_rule(self, pick: int) -> None:
        resource = sorted(self.rules)[pick % len(self.rules)]
        self._admin("rules.remove", anny_resource=resource)
        self._rule_removed(resource)

    def _rule_removed(self, resource: str) -> None:
        del self.rules[resource]
        for item in [*self.bookings.values(), *self.meetings.values()]:
            item.linked = False if self._room_of_item(item) is None else item.linked
        for meeting in self.meetings.values():
            if meeting.room not in self.rules.values():
                meeting.changed()

    @precondition(lambda self: len(self.rules) < 2)
    @rule()
    def admin_adds_a_rule_again(self) -> None:
        for resource, room in self.parents.items():
            if resource not in self.rules:
                self._admin("rules.add", anny_resource=resource, room=room)
                self.rules[resource] = room
                break
        self.observe_links()

    def _admin(self, command: str, **params: str) -> None:
        """An admin command; the admin runs it again when anny or Graph failed it (a 503 meant for a
        worker may hit it). The crash injection is for queue workers only."""
        from sync.errors import RemoteError

        armed, self.rig.crash["after"] = self.rig.crash["after"], 0
        try:
            for attempt in range(4):
                try:
                    self.stack.host.call(_command(command, **params), timeout=120)
                    return
                except RemoteError:
                    if attempt == 3:
                        raise
        finally:
            self.rig.crash["after"] = armed

    @rule()
    def the_window_rolls_a_day(self) -> None:
        self.clock.offset += 1
        self.settle()

    # -- settle, then compare with the oracle ----------------------------------------------------------------

    @rule()
    def settle(self) -> None:
        STATS["settles"] += 1
        self.rig.crash["after"] = 0
        self.anny.clear_faults()
        self.anny.release_held_webhooks()
        self.graph.set_notification_faults(duplicate=1, reorder_next=0, drop_next=0)
        self.graph.release_held_notifications()
        self.graph.clear_faults()
        self.stack.host.call(_settle(self.stack), timeout=240)
        self.observe_links()
        self.check()

    @invariant()
    def count_steps(self) -> None:
        STATS["steps"] += 1

    def teardown(self) -> None:
        if hasattr(self, "parents"):
            self.settle()

    def _room_of_item(self, item: Booking | Meeting) -> str | None:
        if isinstance(item, Meeting):
            return item.room if item.room in self.rules.values() else None
        parent = self.parent_of.get(item.resource, item.resource)
        return self.rules.get(parent)

    def _overlaps_window(self, start: datetime, end: datetime) -> bool:
        low, high = self.clock.window()
        return start < high and end > low

    def _ended_before_window(self, end: datetime) -> bool:
        return end <= self.clock.window()[0]

    def _booking_wanted(self, b: Booking) -> bool:
        return b.live and self._room_of_item(b) is not None and (b.linked or self._overlaps_window(b.start, b.end))

    def _meeting_wanted(self, m: Meeting) -> bool:
        if not m.live or m.cancelled or self._room_of_item(m) is None:
            return False
        return m.linked or any(self._overlaps_window(s, e) for s, e in m.instances())

    def observe_links(self) -> None:
        """behaviour: the sync window: what is synced now keeps syncing wherever it moves, until it goes away."""
        for booking in self.bookings.values():
            booking.linked = self._booking_wanted(booking)
        for meeting in self.meetings.values():
            meeting.linked = self._meeting_wanted(meeting)

    def expected_events(self) -> Counter[tuple[str, str, datetime, datetime, str]]:
        wanted: Counter[tuple[str, str, datetime, datetime, str]] = Counter()
        for b in self.bookings.values():
            if self._booking_wanted(b) and not self._ended_before_window(b.end):
                subject = "Blocked in anny" if b.blocker else f"{b.service} · anny #{b.number}"
                wanted[(str(self._room_of_item(b)), b.id, instant(b.start), instant(b.end), subject)] += 1
        return wanted

    def expected_blockers(self) -> Counter[tuple[str, datetime, datetime, str]]:
        room_to_resource = {room: resource for resource, room in self.rules.items()}
        wanted: Counter[tuple[str, datetime, datetime, str]] = Counter()
        for m in self.meetings.values():
            if not self._meeting_wanted(m) or m.suppressed:
                continue
            title = m.admin_title or ("Busy in Outlook" if m.private else m.subject)
            for start, end in m.instances():
                if m.count and not self._overlaps_window(start, end):
                    continue
                span = tuple(map(instant, m.blocker_span(start, end)))
                if not self._ended_before_window(span[1]):
                    wanted[(room_to_resource[m.room], span[0], span[1], title)] += 1
        return wanted

    def check(self) -> None:
        self._check_events()
        self._check_blockers()
        self._check_people_untouched()

    def _check_events(self) -> None:
        actual: Counter[tuple[str, str, datetime, datetime, str]] = Counter()
        for room in ROOMS:
            for event in self._mirror_events(room):
                start, end = utc_of(event["start"]["dateTime"]), utc_of(event["end"]["dateTime"])
                if self._ended_before_window(end) and event.get("type") != "seriesMaster":
                    continue
                actual[(room, self._anny_id(event), start, end, event["subject"])] += 1
                # behaviour: anny → Outlook: everything a mirror event is, restored after any Outlook edit
                assert event["showAs"] == "busy", event
                assert event["categories"] == ["anny"], event
                assert not event.get("attendees"), event
                assert event["isReminderOn"] is False, event
                assert event.get("type") == "singleInstance", event
        assert actual == self.expected_events(), _diff(actual, self.expected_events())

    def _check_blockers(self) -> None:
        actual: Counter[tuple[str, datetime, datetime, str]] = Counter()
        for blocker in self._our_blockers():
            start = instant(datetime.fromisoformat(blocker["start_date"]))
            end = instant(datetime.fromisoformat(blocker["end_date"]))
            if not self._ended_before_window(end):
                actual[(blocker["resource"]["id"], start, end, blocker["title"])] += 1
        assert actual == self.expected_blockers(), _diff(actual, self.expected_blockers())

    def _check_people_untouched(self) -> None:
        in_anny = {b["id"]: b for b in self.anny.bookings()}
        for booking in self.bookings.values():
            if booking.live:
                found = in_anny.get(booking.id)
                assert found is not None and not found.get("canceled_at"), booking
                assert instant(datetime.fromisoformat(found["start_date"])) == instant(booking.start)
        for meeting in self.meetings.values():
            if meeting.live:
                found = {e["id"]: e for e in self.graph.events(meeting.room)}.get(meeting.id)
                assert found is not None, meeting
                assert found["subject"] == meeting.subject and not self._anny_id(found)
                assert bool(found.get("isCancelled")) == meeting.cancelled

    @staticmethod
    def _pick(items: list[Any], pick: int) -> Any:
        return items[pick % len(items)]


def _diff(actual: Counter[Any], expected: Counter[Any]) -> str:
    return f"unexpected: {dict(actual - expected)}; missing: {dict(expected - actual)}"


def _booking_work(booking_id: str) -> Any:
    from sync.work import BookingWork

    return BookingWork(booking_id)


def _room_work(room: str) -> Any:
    from sync.work import RoomWork

    return RoomWork(room, reason="race")


async def _race(stack: LocalStack, work: list[Any]) -> None:
    """Two workers take the same kind of item at once; a worker that fails leaves it on the queue."""
    from sync.services import get_services
    from sync.work import WORK_QUEUE, encode
    from sync.worker import Worker

    services = await get_services()
    outcomes = await asyncio.gather(*(Worker(services).handle(w, message_id=f"race-{i}")
                                      for i, w in enumerate(work)), return_exceptions=True)
    queue = await stack.host.ensure_queue(WORK_QUEUE)
    for item, outcome in zip(work, outcomes, strict=True):
        for follow_up in [item] if isinstance(outcome, BaseException) else outcome:
            await queue.send_message(encode(follow_up).encode())


async def _handle(work: Any) -> list[Any]:
    from sync.services import get_services
    from sync.worker import Worker

    return await Worker(await get_services()).handle(work, message_id="alongside")


async def _alongside(stack: LocalStack, work: Any, other: Any) -> None:
    """A worker handles `work` while `other` runs; work that failed goes back on the queue."""
    from sync.work import WORK_QUEUE, encode

    outcomes = await asyncio.gather(_handle(work), other, return_exceptions=True)
    queue = await stack.host.ensure_queue(WORK_QUEUE)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            if not isinstance(outcome, Exception):
                raise outcome
            outcome = [work]
        for follow_up in outcome:
            await queue.send_message(encode(follow_up).encode())


_nights = itertools.count(1)


async def _nightly() -> None:
    """The nightly run, as on a new local day (it runs once per day; every settle is a new night)."""
    from sync.nightly import run_nightly
    from sync.services import get_services
    from sync.worker import Worker

    await run_nightly(Worker(await get_services()), now=datetime.now(UTC) + timedelta(days=next(_nights)))


async def _with_nightly(stack: LocalStack, other: Any) -> None:
    """The nightly run while `other` runs."""
    outcomes = await asyncio.gather(_nightly(), other, return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException) and not isinstance(outcome, Exception):
            raise outcome


async def _settle(stack: LocalStack) -> None:
    """Queues drained, one nightly run, queues drained (every delivery included)."""
    await _quiet(stack)
    await _nightly()
    await _quiet(stack)


async def _quiet(stack: LocalStack, rounds: int = 40) -> None:
    quiet = 0
    for _ in range(rounds):
        before = (len(stack.anny.deliveries()), len(stack.graph.deliveries()))
        await stack.anny.settle(30)
        await stack.graph.wait_deliveries(30)
        await stack.host.drain(120)
        after = (len(stack.anny.deliveries()), len(stack.graph.deliveries()))
        quiet = quiet + 1 if before == after else 0
        if quiet == 2:
            return
        await asyncio.sleep(0.06)
    raise AssertionError("the system did not settle")


@pytest.mark.timeout(int(os.environ.get("MODEL_TIMEOUT", "600")))
def test_both_calendars_converge_on_what_people_made(rig: Rig) -> None:
    SyncModel.rig = rig
    STATS.update(examples=0, steps=0, settles=0)
    began = time.monotonic()
    try:
        run_state_machine_as_test(SyncModel, settings=settings(
            max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None, derandomize=not os.environ.get(
                "MODEL_RANDOM"), suppress_health_check=list(HealthCheck), print_blob=True))
    finally:
        STATS["seconds"] = round(time.monotonic() - began, 1)
        REPORT.append(f"model-based test: {STATS['examples']:.0f} examples, {STATS['steps']:.0f} steps, "
                      f"{STATS['settles']:.0f} settles in {STATS['seconds']} s "
                      f"(MODEL_EXAMPLES={EXAMPLES}, MODEL_STEPS={STEPS})")
