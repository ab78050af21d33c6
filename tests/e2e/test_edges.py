"""The sync's edge cases (issue "Exact at the edges"): one end-to-end test per defect found in review.

Each test drives the real flows through the runner, Azurite and both emulators. Where a race
needs a precise interleaving, the test wraps one gateway method to do the other party's part
at that moment; nothing else is replaced.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from sandbox.graph.person import recurrence
from sync import admin
from sync.admin import remove_rule, run_command
from sync.anny import AnnyClient
from sync.graph import ANNY_PROPERTY_ID, GraphGateway
from sync.model import SyncWindow
from sync.nightly import run_nightly
from sync.outbound import OutboundFlow
from sync.services import Services, get_services
from sync.settings import Settings
from sync.worker import Worker
from tests.e2e.conftest import World
from tests.e2e.test_inbound import blockers, meeting, span
from tests.fixtures import graph_utc as utc

UTC = ZoneInfo("UTC")
BETA = "room.beta@contoso.example"


def mirrors(world: World, room: str | None = None) -> list[dict]:
    """Events carrying our extended property (whatever an Outlook user did to their category)."""
    return [e for e in world.stack.graph.events(room or world.room)
            if any(p["id"].lower() == ANNY_PROPERTY_ID.lower() for p in e.get("singleValueExtendedProperties") or [])]


def move(world: World, event_id: str, start: datetime, hours: int = 1) -> None:
    world.stack.graph.person_update_event(world.room, event_id, start=start.isoformat()[:19],
                                          end=(start + timedelta(hours=hours)).isoformat()[:19], time_zone="UTC")


async def run_admin(world: World, command: str, **params: str) -> object:
    """An admin command as `python -m sync …` runs it (own clients, same tables)."""
    services = await Services.open(Settings.from_env(world.stack.env))
    try:
        return await run_command(command, params, Worker(services))
    finally:
        await services.close()


# --- 1. linked items beyond the window keep syncing (§3.3) ---------------------------------------------------


async def test_meeting_beyond_the_window_keeps_moving_and_its_deletion_is_seen(world: World) -> None:
    event = meeting(world, 2, 9)
    await world.settle()
    move(world, event["id"], world.utc(400, 9))
    await world.settle()
    assert [span(b) for b in blockers(world)] == [(world.utc(400, 9), world.utc(400, 10))]
    move(world, event["id"], world.utc(401, 14), hours=2)
    await world.settle()
    assert [span(b) for b in blockers(world)] == [(world.utc(401, 14), world.utc(401, 16))]
    world.stack.graph.person_delete_event(world.room, event["id"])
    await world.settle()
    assert blockers(world) == []


async def test_mirror_event_beyond_the_window_is_restored_after_outlook_edits(world: World) -> None:
    booking = world.stack.anny.person_create_booking(world.resource, world.at(2, 9), world.at(2, 10))
    await world.settle()
    world.stack.anny.person_move_booking(booking["id"], world.at(400, 9), world.at(400, 10))
    await world.settle()
    [event] = mirrors(world)
    assert utc(event["start"]["dateTime"]) == world.utc(400, 9)
    move(world, event["id"], world.utc(400, 15))
    world.stack.graph.person_update_event(world.room, event["id"], subject="Mine now")
    await world.settle()
    [restored] = mirrors(world)
    assert utc(restored["start"]["dateTime"]) == world.utc(400, 9) and restored["subject"].endswith(booking["number"])
    world.stack.graph.person_delete_event(world.room, restored["id"])
    await world.settle()
    [again] = mirrors(world)
    assert again["id"] != restored["id"] and utc(again["start"]["dateTime"]) == world.utc(400, 9)
    world.stack.anny.person_cancel_booking(booking["id"])
    await world.settle()
    assert mirrors(world) == []


# --- 2. anny is authoritative for everything a mirror event is (§3.1) ---------------------------------------------


@pytest.mark.parametrize("edit", [
    {"categories": []},
    {"show_as": "free"},
    {"show_as": "tentative"},
    {"attendees": ["bob@contoso.example"], "organizer": "bob@contoso.example"},
    {"extra": {"isReminderOn": True, "reminderMinutesBeforeStart": 15}},
], ids=["category-removed", "free", "tentative", "attendees", "reminder"])
async def test_outlook_edit_of_any_mirror_property_is_undone(world: World, edit: dict) -> None:
    world.stack.anny.person_create_booking(world.resource, world.at(2, 9), world.at(2, 10))
    await world.settle()
    [event] = mirrors(world)
    world.stack.graph.person_update_event(world.room, event["id"], **edit)
    await world.settle()
    [restored] = mirrors(world)
    assert restored["id"] == event["id"]
    assert restored["showAs"] == "busy" and restored["categories"] == ["anny"]
    assert not restored.get("attendees") and restored["isReminderOn"] is False


# --- 3. recurrence changes in Outlook (§3.2) -------------------------------------------------------------------------


def starts(world: World) -> list[datetime]:
    return [span(b)[0] for b in blockers(world)]


def weekly(world: World, first_day: int, count: int, hour: int = 10) -> dict:
    first = world.utc(first_day, hour)
    return recurrence("weekly", first.date(), days_of_week=[first.strftime("%A").lower()], count=count,
                      time_zone="UTC")


async def test_single_meeting_made_recurring_has_one_blocker_per_occurrence(world: World) -> None:
    event = meeting(world, 1, 10)
    await world.settle()
    world.stack.graph.person_update_event(world.room, event["id"], recurrence=weekly(world, 1, 3))
    await world.settle()
    assert starts(world) == [world.utc(1, 10) + timedelta(weeks=k) for k in range(3)]


async def test_series_turned_into_one_meeting_has_one_blocker(world: World) -> None:
    series = meeting(world, 1, 10, recurrence=weekly(world, 1, 3))
    await world.settle()
    assert len(blockers(world)) == 3
    world.stack.graph.person_update_event(world.room, series["id"], extra={"recurrence": None})
    await world.settle()
    assert starts(world) == [world.utc(1, 10)]


async def test_series_split_this_and_following_has_one_blocker_per_occurrence(world: World) -> None:
    series = meeting(world, 1, 10, recurrence=weekly(world, 1, 4))
    await world.settle()
    world.stack.graph.person_update_event(world.room, series["id"], recurrence=weekly(world, 1, 2))
    meeting(world, 15, 12, recurrence=weekly(world, 15, 2, hour=12))
    await world.settle()
    expected = [world.utc(1, 10), world.utc(8, 10), world.utc(15, 12), world.utc(22, 12)]
    assert starts(world) == expected


# --- 4. a mirror blocker cancelled in anny, webhook lost, then its meeting moves (§3.2) ------------------------------


async def test_blocker_cancelled_with_its_webhook_lost_blocks_again_after_the_meeting_moves(world: World) -> None:
    event = meeting(world, 2, 9)
    await world.settle()
    [blocker] = blockers(world)
    world.stack.anny.set_webhook_faults(drop_next=1)
    world.stack.anny.person_cancel_booking(blocker["id"])
    await world.settle()
    assert blockers(world) == []
    move(world, event["id"], world.utc(2, 14))
    await world.settle()
    assert [span(b) for b in blockers(world)] == [(world.utc(2, 14), world.utc(2, 15))]


# --- 5. the nightly run reads before it writes (§3.1) ----------------------------------------------------------------


async def nightly_run(world: World) -> None:
    """The nightly run, as its timer starts it on a day it has not run yet."""
    await world.state.update_status(lambda status: setattr(status, "nightly_day", ""))
    services = await Services.open(Settings.from_env(world.stack.env))
    try:
        assert await run_nightly(Worker(services)) is not None
    finally:
        await services.close()


async def test_booking_cancelled_while_the_nightly_run_works_stays_cancelled(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    booking = world.stack.anny.person_create_booking(world.resource, world.at(2, 9), world.at(2, 10))
    await world.settle()
    original = AnnyClient.list_bookings

    async def cancelled_meanwhile(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        listed = await original(self, *args, **kwargs)
        world.stack.anny.person_cancel_booking(booking["id"])  # … and its webhook is handled at once
        await world.settle()
        return listed

    monkeypatch.setattr(AnnyClient, "list_bookings", cancelled_meanwhile)
    await nightly_run(world)
    monkeypatch.setattr(AnnyClient, "list_bookings", original)
    await world.settle()
    assert mirrors(world) == []


def raced_before_the_first_create(monkeypatch: pytest.MonkeyPatch,
                                  race: Callable[[OutboundFlow], Awaitable[object]]) -> dict:
    """`race` runs once, right before the first create of a mirror event: after that worker has
    read the booking's link, before it writes its own. Returns a counter of races left."""
    original = OutboundFlow._create
    races = {"left": 1}

    async def racing(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        if races["left"]:
            races["left"] -= 1
            await race(self)
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(OutboundFlow, "_create", racing)
    return races


def unmirrored_booking(world: World) -> str:
    """A booking whose webhook was lost (seeded: no webhook), on day 2 at 9."""
    [booking_id] = world.stack.anny.seed({"bookings": [
        {"resource": world.resource, "start": world.at(2, 9), "end": world.at(2, 10)}]})["bookings"]
    return str(booking_id)


async def test_booking_mirrored_by_a_live_webhook_while_the_nightly_run_creates_it_is_mirrored_once(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """A booking whose webhook was lost is the nightly run's to create. The person moves it
    meanwhile, and that webhook's worker mirrors it between the run's read of its link and the
    run's own create: the run decides once more on the link as it is now (nothing left to do),
    as the inbound direction does, instead of failing the room's run (and the whole night's)."""
    booking_id = unmirrored_booking(world)

    async def moved_and_mirrored_by_its_webhook(_: OutboundFlow) -> None:
        world.stack.anny.person_move_booking(booking_id, world.at(2, 11), world.at(2, 12))
        await world.settle()

    races = raced_before_the_first_create(monkeypatch, moved_and_mirrored_by_its_webhook)
    await nightly_run(world)
    await world.settle()
    assert races["left"] == 0
    [event] = mirrors(world)
    assert utc(event["start"]["dateTime"]) == world.utc(2, 11)


async def test_webhook_whose_booking_another_worker_mirrors_first_settles_without_a_failed_attempt(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two workers for one new booking (its `created` and `updated` webhooks in one batch): the one
    whose create finds the link written meanwhile decides once more on it (nothing left to do)
    instead of failing and leaving the change to the queue's retry, seconds later."""
    booking_id = unmirrored_booking(world)
    races = raced_before_the_first_create(monkeypatch, lambda flow: flow.sync_booking(booking_id))
    failures = sum(world.stack.host.failures.values())
    world.stack.anny.person_move_booking(booking_id, world.at(2, 11), world.at(2, 12))
    await world.settle()
    assert races["left"] == 0
    assert sum(world.stack.host.failures.values()) == failures
    [event] = mirrors(world)
    assert utc(event["start"]["dateTime"]) == world.utc(2, 11)


# --- 6. removing a rule while a room run is in flight (§3.4) -------------------------------------------------------


def remove_rule_during(world: World, monkeypatch: pytest.MonkeyPatch, owner: type, method: str, *,
                       after: bool = False) -> dict:
    """The world's rule is removed by another worker the first time `owner.method` runs: before
    that call (its write is under way), or `after` it (before its link is recorded)."""
    original = getattr(owner, method)
    removed: dict = {"report": None}

    async def rule_removed_meanwhile(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        written = None if not after else await original(self, *args, **kwargs)
        if removed["report"] is None:
            removed["report"] = await remove_rule(Worker(await get_services()), world.resource)
        return written if after else await original(self, *args, **kwargs)

    monkeypatch.setattr(owner, method, rule_removed_meanwhile)
    return removed


async def assert_the_removal_left_nothing(world: World, removed: dict, written: list) -> None:
    assert removed["report"] is not None
    assert written == []  # no blocker or mirror event
    assert await world.state.all_links() == []


async def test_rule_removed_while_a_room_run_writes_leaves_no_blocker_or_link(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    removed = remove_rule_during(world, monkeypatch, AnnyClient, "create_blocker")
    meeting(world, 2, 9)
    await world.settle()
    await assert_the_removal_left_nothing(world, removed, blockers(world))


async def test_rule_removed_after_a_blocker_is_written_and_before_its_link_leaves_no_blocker_or_link(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """The link's last write is a replace by ETag, without the room's marker: the removal has
    already deleted the pending link (and the blocker it found by its note), so the replace fails
    and the room run removes what it wrote."""
    removed = remove_rule_during(world, monkeypatch, AnnyClient, "create_blocker", after=True)
    meeting(world, 2, 9)
    await world.settle()
    await assert_the_removal_left_nothing(world, removed, blockers(world))


async def test_a_link_written_after_the_removal_read_it_is_removed_as_it_is_now(world: World) -> None:
    """The other half of the replace without a marker: a worker's replace lands between the
    removal's scan and its delete, so the delete (by the scanned ETag) fails, and the removal
    reads the link again and removes the blocker it names now."""
    meeting(world, 2, 9)
    await world.settle()
    [scanned] = await world.state.all_links_of_room(world.room)
    [blocker] = blockers(world)
    assert scanned.anny_id == blocker["id"]
    current = await world.state.owner_link(scanned)
    current.anny_version = "written by a worker after the scan"
    await world.state.save_link(current, guarded=True)
    services = await get_services()
    rule = await services.rules.get_rule(world.resource)
    await services.rules.save_rule(dataclasses.replace(rule, removing=True))
    await services.links.mark_room_unmapped(world.room)
    await admin._remove_link(Worker(services), scanned, rule, admin.Removal())
    assert blocker["id"] not in {b["id"] for b in blockers(world)}
    assert blockers(world) == []
    assert await world.state.all_links() == []


async def test_rule_removed_while_an_outbound_create_is_in_flight_leaves_no_event_or_link(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    removed = remove_rule_during(world, monkeypatch, GraphGateway, "create_event")
    world.stack.anny.person_create_booking(world.resource, world.at(2, 9), world.at(2, 10))
    await world.settle()
    await assert_the_removal_left_nothing(world, removed, mirrors(world))


async def test_rule_removed_while_a_mirror_is_moved_leaves_no_event_or_link(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    booking = world.stack.anny.person_create_booking(world.resource, world.at(2, 9), world.at(2, 10))
    await world.settle()
    removed = remove_rule_during(world, monkeypatch, GraphGateway, "update_event", after=True)
    world.stack.anny.person_move_booking(booking["id"], world.at(2, 11), world.at(2, 12))
    await world.settle()
    await assert_the_removal_left_nothing(world, removed, mirrors(world))


# --- 7. two workers, one booking whose room changes (§4.1) ------------------------------------------------------------


async def test_booking_moved_to_another_room_during_a_create_leaves_no_twin(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    beta = world.stack.anny.add_resource("Room Beta", timezone="Europe/Berlin")
    world.stack.graph.add_room(BETA, "Room Beta")
    await run_admin(world, "rules.add", anny_resource=beta["id"], room=BETA)
    original = GraphGateway.create_event
    raced = {"left": 1}

    async def moved_meanwhile(self, room, desired, transaction_id):  # type: ignore[no-untyped-def]
        if raced["left"] and room == world.room:
            raced["left"] = 0  # worker Y sees the booking in its new room and syncs it first
            world.stack.anny.person_update_booking(desired.anny_id, resource=beta["id"])
            await Worker(await get_services()).outbound.sync_booking(desired.anny_id)
        return await original(self, room, desired, transaction_id)

    monkeypatch.setattr(GraphGateway, "create_event", moved_meanwhile)
    world.stack.anny.person_create_booking(world.resource, world.at(2, 9), world.at(2, 10))
    await world.settle()
    assert raced["left"] == 0
    assert mirrors(world) == []
    assert len(mirrors(world, BETA)) == 1


# --- 8. outbound links that ended before the window are retired (§3.3, budgets) -------------------------------


async def test_nightly_run_does_not_reread_bookings_that_ended_before_the_window(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    past = world.stack.anny.person_create_booking(world.resource, world.at(1, 9), world.at(1, 10))
    far = world.stack.anny.person_create_booking(world.resource, world.at(2, 9), world.at(2, 10))
    await world.settle()
    world.stack.anny.person_move_booking(far["id"], world.at(400, 9), world.at(400, 10))
    await world.settle()
    original = SyncWindow.now.__func__  # type: ignore[attr-defined]
    monkeypatch.setattr(SyncWindow, "now", classmethod(
        lambda cls, now, months, zone: original(cls, now + timedelta(days=3), months, zone)))
    rereads: set[str] = set()
    get_booking = AnnyClient.get_booking

    async def reading(self, booking_id: str):  # type: ignore[no-untyped-def]
        rereads.add(booking_id)
        return await get_booking(self, booking_id)

    monkeypatch.setattr(AnnyClient, "get_booking", reading)
    await nightly_run(world)
    assert past["id"] not in rereads
    assert far["id"] in rereads  # a linked booking beyond the window keeps syncing


# --- 9. a re-created mirror never reuses a transactionId -------------------------------------------------


async def test_mirror_created_again_after_its_rule_came_back_has_a_new_transaction_id(world: World) -> None:
    world.stack.anny.person_create_booking(world.resource, world.at(2, 9), world.at(2, 10))
    await world.settle()
    [first] = mirrors(world)
    await run_admin(world, "rules.remove", anny_resource=world.resource)
    assert mirrors(world) == []
    await run_admin(world, "rules.add", anny_resource=world.resource, room=world.room)
    await world.settle()
    [second] = mirrors(world)
    assert second["id"] != first["id"]
    assert second["transactionId"] and second["transactionId"] != first["transactionId"]
