"""Outlook → anny end to end (behaviour: Outlook → anny): notifications, delta, blockers; echoes and races."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest

from sandbox.graph.person import recurrence
from sync.errors import StateError
from tests.e2e.conftest import BERLIN, World, crash_once

UTC = ZoneInfo("UTC")


def blockers(world: World) -> list[dict]:
    return sorted((b for b in world.stack.anny.bookings() if b["is_blocker"] and not b.get("canceled_at")),
                  key=lambda b: b["start_date"])


def span(booking: dict) -> tuple[datetime, datetime]:
    return (datetime.fromisoformat(booking["start_date"]).astimezone(UTC),
            datetime.fromisoformat(booking["end_date"]).astimezone(UTC))


def meeting(world: World, offset: int, hour: int, hours: int = 1, **fields: object) -> dict:
    start = world.utc(offset, hour)
    return world.stack.graph.person_create_event(
        world.room, start=start.isoformat()[:19], end=(start + timedelta(hours=hours)).isoformat()[:19],
        time_zone="UTC", organizer="grace@contoso.example", **{"subject": "Planning", **fields})


@pytest.fixture
async def active(world: World) -> World:
    """The `world` fixture has activated the integration: the room is subscribed."""
    assert len(world.stack.graph.subscriptions()) == 1
    return world


async def test_meeting_created_moved_cancelled_deleted_blocker_follows(active: World) -> None:
    world = active
    event = meeting(world, 2, 9)
    await world.settle()
    [blocker] = blockers(world)
    assert span(blocker) == (world.utc(2, 9), world.utc(2, 10))
    assert blocker["resource"]["id"] == world.resource and blocker["title"] == "Planning"
    world.stack.graph.person_update_event(world.room, event["id"], start=world.utc(2, 13).isoformat()[:19],
                                          end=world.utc(2, 15).isoformat()[:19], time_zone="UTC")
    await world.settle()
    [moved] = blockers(world)
    assert moved["id"] == blocker["id"] and span(moved) == (world.utc(2, 13), world.utc(2, 15))
    world.stack.graph.person_cancel_event(world.room, event["id"])
    await world.settle()
    assert blockers(world) == []
    second = meeting(world, 3, 9)
    await world.settle()
    assert len(blockers(world)) == 1
    world.stack.graph.person_delete_event(world.room, second["id"])
    await world.settle()
    assert blockers(world) == []
    assert world.mirror_events() == []  # no blocker was echoed back to Outlook


async def test_weekly_series_with_moved_and_cancelled_occurrence(active: World) -> None:
    world = active
    first = world.day(1)
    series = world.stack.graph.person_create_event(
        world.room, subject="Weekly", start=f"{first}T10:00:00", end=f"{first}T11:00:00",
        time_zone="Europe/Berlin",
        recurrence=recurrence("weekly", first, days_of_week=[first.strftime("%A").lower()], count=4))
    second, third = first + timedelta(days=7), first + timedelta(days=14)
    world.stack.graph.person_update_occurrence(world.room, series["id"], second, time_zone="Europe/Berlin",
                                               start=f"{second}T15:00:00", end=f"{second}T16:00:00")
    world.stack.graph.person_cancel_occurrence(world.room, series["id"], third)
    await world.settle()
    starts = [span(b)[0] for b in blockers(world)]
    expected = [datetime.combine(first, datetime.min.time(), BERLIN).replace(hour=10),
                datetime.combine(second, datetime.min.time(), BERLIN).replace(hour=15),
                datetime.combine(first + timedelta(days=21), datetime.min.time(), BERLIN).replace(hour=10)]
    assert starts == [s.astimezone(UTC) for s in expected]


async def test_all_day_event_blocks_whole_days_in_the_resource_zone(active: World) -> None:
    world = active
    day = world.day(4)
    world.stack.graph.person_create_event(world.room, subject="Offsite", is_all_day=True, start=day,
                                          end=day + timedelta(days=1), time_zone="Europe/Berlin")
    await world.settle()
    [blocker] = blockers(world)
    start, end = span(blocker)
    assert start == datetime.combine(day, datetime.min.time(), BERLIN).astimezone(UTC)
    assert end == datetime.combine(day + timedelta(days=1), datetime.min.time(), BERLIN).astimezone(UTC)


async def test_private_meeting_gets_a_neutral_title(active: World) -> None:
    meeting(active, 2, 9, subject="Secret merger talks", sensitivity="private")
    await active.settle()
    [blocker] = blockers(active)
    assert blocker["title"] == "Busy in Outlook" and "merger" not in str(blocker)


async def test_free_events_block_by_default(active: World) -> None:
    meeting(active, 2, 9, show_as="free")
    await active.settle()
    assert len(blockers(active)) == 1


@pytest.mark.parametrize("stack", [{"BLOCKING_SHOW_AS": "busy,oof"}], indirect=True)
async def test_free_events_do_not_block_when_configured(active: World) -> None:
    free = meeting(active, 2, 9, show_as="free")
    meeting(active, 2, 12, show_as="busy")
    await active.settle()
    assert [span(b)[0] for b in blockers(active)] == [active.utc(2, 12)]
    active.stack.graph.person_update_event(active.room, free["id"], show_as="busy")
    await active.settle()
    assert len(blockers(active)) == 2


async def test_duplicated_and_reordered_notifications_give_the_exact_result(active: World) -> None:
    world = active
    world.stack.graph.set_notification_faults(duplicate=3, reorder_next=4)
    event = meeting(world, 2, 9)
    world.stack.graph.person_update_event(world.room, event["id"], start=world.utc(2, 10).isoformat()[:19],
                                          end=world.utc(2, 11).isoformat()[:19], time_zone="UTC")
    other = meeting(world, 5, 8)
    world.stack.graph.person_delete_event(world.room, other["id"])
    world.stack.graph.release_held_notifications()
    await world.settle()
    [blocker] = blockers(world)
    assert span(blocker) == (world.utc(2, 10), world.utc(2, 11))


def run_queue_before_recording(monkeypatch: pytest.MonkeyPatch, flow: type, world: World) -> dict:
    """Injected race: after the write, before its link is recorded, the worker handles the queue.

    With the emulators delivering the echo before answering the write, the echo's work item is
    on the queue then, so it is processed while the link is still pending.
    """
    original = flow._record
    seen = {"interleaved": 0}

    async def record_later(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen["interleaved"] += await world.stack.host.process_queue_once("sync_worker")
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(flow, "_record", record_later)
    return seen


async def test_notification_of_our_own_write_never_becomes_a_blocker_and_costs_no_write(
        active: World, monkeypatch: pytest.MonkeyPatch) -> None:
    from sync.outbound import OutboundFlow

    world = active
    world.stack.graph.set_notification_faults(before_response=True)  # the echo beats the write's answer
    seen = run_queue_before_recording(monkeypatch, OutboundFlow, world)
    booking = world.stack.anny.person_create_booking(world.resource, world.at(2, 9), world.at(2, 10))
    await world.settle()
    world.stack.anny.person_move_booking(booking["id"], world.at(2, 11), world.at(2, 12))
    await world.settle()
    assert seen["interleaved"] >= 2
    assert blockers(world) == []
    [event] = world.mirror_events()
    assert event["start"]["dateTime"].startswith(world.utc(2, 11).isoformat()[:19])
    counts = world.stack.graph.call_counts()
    writes = {k: v for k, v in counts.items() if k.split()[0] in ("POST", "PATCH", "DELETE") and "/events" in k}
    assert sum(writes.values()) == 2  # one create, one move: the echoes cost no write
    assert counts.get("GET /users/{mailbox}/events/{id}", 0) >= 1  # recognised by our extended property


async def test_blocker_webhook_is_never_mirrored_back_even_before_our_post_returns(
        active: World, monkeypatch: pytest.MonkeyPatch) -> None:
    from sync.inbound import InboundFlow

    world = active
    world.stack.anny.set_webhook_faults(deliver_before_response=True, duplicate=2)
    seen = run_queue_before_recording(monkeypatch, InboundFlow, world)
    meeting(world, 2, 9)
    await world.settle()
    assert seen["interleaved"] == 0  # the echo's payload shows our blocker: acknowledged, nothing queued
    assert len(blockers(world)) == 1
    assert world.mirror_events() == []
    assert any(d["event"] == "bookings.created" for d in world.stack.anny.deliveries())


async def test_anny_side_deletion_of_a_blocker_is_respected_until_the_meeting_changes(active: World) -> None:
    world = active
    event = meeting(world, 2, 9)
    await world.settle()
    [blocker] = blockers(world)
    world.stack.anny.person_delete_booking(blocker["id"])
    await world.settle()
    await world.activate()  # a full resync (as every night) must not bring it back either
    await world.settle()
    assert blockers(world) == []
    world.stack.graph.person_update_event(world.room, event["id"], subject="Planning (moved)",
                                          start=world.utc(2, 14).isoformat()[:19],
                                          end=world.utc(2, 15).isoformat()[:19], time_zone="UTC")
    await world.settle()
    [back] = blockers(world)
    assert span(back) == (world.utc(2, 14), world.utc(2, 15))


async def test_anny_side_edit_of_a_blocker_is_kept_until_the_meeting_changes(active: World) -> None:
    world = active
    event = meeting(world, 2, 9)
    await world.settle()
    [blocker] = blockers(world)
    world.stack.anny.person_move_booking(blocker["id"], world.at(2, 7), world.at(2, 8))
    await world.settle()
    assert span(blockers(world)[0])[0] == world.utc(2, 7) - timedelta(hours=0)
    world.stack.graph.person_update_event(world.room, event["id"], subject="Renamed")
    await world.settle()
    assert span(blockers(world)[0]) == (world.utc(2, 9), world.utc(2, 10))


async def test_lifecycle_missed_recovers_the_changes_made_meanwhile(active: World) -> None:
    world = active
    world.stack.graph.set_notification_faults(drop_next=10)
    meeting(world, 2, 9)
    meeting(world, 3, 9)
    await world.settle()
    assert blockers(world) == []  # notifications lost
    world.stack.graph.set_notification_faults(drop_next=0)
    [sub] = world.stack.graph.subscriptions()
    world.stack.graph.fire_lifecycle(sub["id"], "missed")
    await world.settle()
    assert len(blockers(world)) == 2


async def test_subscription_removed_is_recreated_and_the_room_resynced(active: World) -> None:
    world = active
    [sub] = world.stack.graph.subscriptions()
    world.stack.graph.fire_lifecycle(sub["id"], "subscriptionRemoved")
    meeting(world, 2, 9)  # made while no subscription exists
    await world.settle()
    [new] = world.stack.graph.subscriptions()
    assert new["id"] != sub["id"]
    assert len(blockers(world)) == 1
    meeting(world, 3, 9)
    await world.settle()
    assert len(blockers(world)) == 2


async def test_reauthorization_required_renews_the_subscription(active: World) -> None:
    world = active
    [sub] = world.stack.graph.subscriptions()
    world.stack.graph.fire_lifecycle(sub["id"], "reauthorizationRequired")
    await world.settle()
    assert [s["id"] for s in world.stack.graph.subscriptions()] == [sub["id"]]
    assert any("reauthorize" in k for k in world.stack.graph.call_counts())


async def test_expired_delta_token_rebaselines_without_duplicates(active: World) -> None:
    world = active
    meeting(world, 2, 9)
    await world.settle()
    world.stack.graph.expire_delta_tokens()
    meeting(world, 3, 9)
    await world.settle()
    assert len(blockers(world)) == 2


async def test_crash_after_the_blocker_post_then_the_meeting_is_deleted_leaves_no_blocker(
        active: World, monkeypatch: pytest.MonkeyPatch) -> None:
    from sync.inbound import InboundFlow

    world = active
    crashes = crash_once(monkeypatch, InboundFlow)
    world.stack.host.queue_options.max_dequeue_count = 1  # the crashed run is parked, not retried
    event = meeting(world, 2, 9)
    await world.settle()
    assert crashes["left"] == 0 and len(blockers(world)) == 1  # written, never recorded
    world.stack.host.queue_options.max_dequeue_count = 5
    world.stack.graph.person_delete_event(world.room, event["id"])
    world.stack.graph.expire_delta_tokens()  # the next run is a baseline, as every night's is
    await world.settle()
    assert blockers(world) == []


async def test_one_event_anny_refuses_does_not_stop_the_room(active: World) -> None:
    world = active
    start = world.utc(2, 9).isoformat()[:19]
    meeting(world, 2, 8)
    world.stack.graph.person_create_event(world.room, subject="Zero length", start=start, end=start,
                                          time_zone="UTC")  # Outlook allows it; anny refuses it (422)
    meeting(world, 3, 9)
    await world.settle()
    assert len(blockers(world)) == 2
    assert await world.stack.poison_messages() == []
    assert "could not be synced" in (await world.state.get_status()).last_error
    row = (await world.admin_status())["rules"][0]
    assert "could not be synced" in row["last_error"] and row["last_error_at"]  # the room's own, in status
    meeting(world, 4, 9)
    await world.settle()
    assert len(blockers(world)) == 3  # the delta link moved on past the refused event


async def test_anny_5xx_on_blocker_write_is_retried_via_the_queue(active: World) -> None:
    world = active
    world.stack.anny.fail_next(503, count=2, route="POST /api/v1/bookings")
    meeting(world, 2, 9)
    await world.settle()
    assert len(blockers(world)) == 1


# --- bad input at the notification endpoints --------------------------------------------------------


async def post(world: World, route: str, body: object = None, **params: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=world.stack.host.url) as client:
        return await client.post(f"/api/{route}", params={"code": world.stack.keys.default, **params},
                                 json=body)


def notification(sub_id: str, client_state: str) -> dict:
    return {"value": [{"subscriptionId": sub_id, "clientState": client_state, "changeType": "created",
                       "resource": "Users/x/Events/y", "tenantId": "t",
                       "resourceData": {"@odata.type": "#Microsoft.Graph.Event", "id": "y"}}]}


async def test_wrong_client_state_or_unknown_subscription_is_dropped(active: World) -> None:
    world = active
    [sub] = world.stack.graph.subscriptions()
    for body in (notification(sub["id"], "forged"), notification("unknown-sub", "whatever")):
        answer = await post(world, "graph/notify", body)
        assert answer.status_code == 202 and answer.json()["rooms"] == 0
    assert await world.stack.host.run(world.stack.host.queue_messages("sync-work")) == []


@pytest.mark.parametrize("route", ["graph/notify", "graph/lifecycle"])
async def test_validation_token_is_echoed_as_plain_text_only(world: World, route: str) -> None:
    hostile = "<script>alert(1)</script>&x=1"
    answer = await post(world, route, None, validationToken=hostile)
    assert answer.status_code == 200 and answer.text == hostile
    assert answer.headers["content-type"].startswith("text/plain")
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert (await post(world, route, None, validationToken="x" * 5000)).status_code == 400


@pytest.mark.parametrize("route", ["graph/notify", "graph/lifecycle"])
async def test_validation_handshake_needs_neither_storage_nor_settings(
        world: World, route: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Graph waits 10 s for the handshake: an instance whose storage is out of reach (or whose
    settings are broken) still answers it, so a subscription can be created once both are back."""
    import function_app

    async def out_of_reach() -> None:
        raise StateError("Table Storage did not answer")

    monkeypatch.setattr(function_app, "get_services", out_of_reach)
    answer = await post(world, route, None, validationToken="token-1")
    assert answer.status_code == 200 and answer.text == "token-1"
    assert (await post(world, route, None, validationToken="x" * 5000)).status_code == 400


async def test_malformed_or_oversized_notifications_are_refused(world: World) -> None:
    async with httpx.AsyncClient(base_url=world.stack.host.url) as client:
        params = {"code": world.stack.keys.default}
        assert (await client.post("/api/graph/notify", params=params, content=b"{oops")).status_code == 400
        big = b'{"value": [' + b" " * (4 * 1024 * 1024) + b"]}"  # over NOTIFICATION_MAX_BODY_BYTES
        assert (await client.post("/api/graph/notify", params=params, content=big)).status_code == 413
        assert (await client.post("/api/graph/notify", params=params, json={"value": 3})).status_code == 400


async def test_notification_for_an_unmapped_room_is_a_no_op(active: World) -> None:
    world = active
    world.stack.graph.add_room("unmapped@contoso.example", "Elsewhere")
    world.stack.graph.person_create_event("unmapped@contoso.example", subject="x",
                                          start=world.utc(2, 9).isoformat()[:19],
                                          end=world.utc(2, 10).isoformat()[:19], time_zone="UTC")
    from sync.work import RoomWork, encode

    queue = await world.stack.host.run(world.stack.host.ensure_queue("sync-work"))
    await world.stack.host.run(queue.send_message(encode(RoomWork("unmapped@contoso.example")).encode()))
    world.stack.anny.reset_counters()
    await world.settle()
    assert blockers(world) == [] and world.stack.anny.counters().get("total", 0) == 0


async def test_meeting_moved_beyond_the_window_keeps_its_blocker_in_step_across_zones(active: World) -> None:
    world = active
    event = world.stack.graph.person_create_event(
        world.room, subject="Tokyo call", time_zone="Tokyo Standard Time",
        start=world.utc(2, 9).astimezone(ZoneInfo("Asia/Tokyo")).isoformat()[:19],
        end=world.utc(2, 10).astimezone(ZoneInfo("Asia/Tokyo")).isoformat()[:19])
    await world.settle()
    assert span(blockers(world)[0]) == (world.utc(2, 9), world.utc(2, 10))
    later = world.utc(400, 9)  # outside the window: delta reports it removed; the app looks it up
    world.stack.graph.person_update_event(
        world.room, event["id"], time_zone="Tokyo Standard Time",
        start=later.astimezone(ZoneInfo("Asia/Tokyo")).isoformat()[:19],
        end=(later + timedelta(hours=1)).astimezone(ZoneInfo("Asia/Tokyo")).isoformat()[:19])
    await world.settle()
    assert span(blockers(world)[0]) == (later, later + timedelta(hours=1))


async def test_a_subscription_the_app_forgot_is_replaced_not_duplicated(active: World) -> None:
    world = active
    [old] = world.stack.graph.subscriptions()
    await world.state.delete_subscription(old["id"])  # state lost; Graph still has it (409 on create)
    await world.activate()
    [new] = world.stack.graph.subscriptions()
    assert new["id"] != old["id"]
    meeting(world, 2, 9)
    await world.settle()
    assert len(blockers(world)) == 1


# --- the delta token outlives the day (a new baseline at most monthly) ----------------------------------


async def test_next_day_keeps_the_delta_token_and_blocks_what_came_into_the_window(
        active: World, monkeypatch: pytest.MonkeyPatch) -> None:
    from sync.graph import GraphGateway
    from sync.model import SyncWindow, add_months

    today = datetime.now(UTC).date()
    first = add_months(today.replace(day=1), 1)  # days 1 and 2 of next month: the same delta window
    original = SyncWindow.now.__func__  # type: ignore[attr-defined]
    shift = {"days": 0}

    def shifted(cls, now, months, zone):  # type: ignore[no-untyped-def]
        # The window's day is the zone's (in the last hour of a UTC day it is already tomorrow in
        # Berlin): the shift lands on `first` there, whatever the hour.
        local_today = now.astimezone(ZoneInfo(zone)).date()
        return original(cls, now + timedelta(days=(first - local_today).days + shift["days"]), months, zone)

    monkeypatch.setattr(SyncWindow, "now", classmethod(shifted))
    links_used: list[str] = []
    delta_pages = GraphGateway.delta_pages

    def reading(self, room, window, link, page_size):  # type: ignore[no-untyped-def]
        links_used.append(link)
        return delta_pages(self, room, window, link, page_size)

    monkeypatch.setattr(GraphGateway, "delta_pages", reading)
    far_start = datetime.combine(add_months(first, 6), datetime.min.time(), UTC) + timedelta(hours=12)
    far = active.stack.graph.person_create_event(  # beyond today's window, inside tomorrow's
        active.room, start=far_start.isoformat()[:19], end=(far_start + timedelta(hours=1)).isoformat()[:19],
        time_zone="UTC", organizer="grace@contoso.example", subject="Far ahead")
    await active.settle()
    assert not any(span(b)[0] == far_start for b in blockers(active))
    shift["days"] += 1  # the next day
    links_used.clear()
    meeting(active, 3, 10, subject="Next week")  # any change: the room runs again
    await active.settle()
    assert links_used and all(links_used)  # read with the delta token: no new baseline of the room
    starts = {span(b)[0] for b in blockers(active)}
    assert far_start in starts  # it came into the window and is blocked
    assert len([s for s in starts if s == far_start]) == 1 and far["subject"] == "Far ahead"


async def test_a_link_changed_by_another_worker_during_a_long_round_is_read_afresh(
        active: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """A round that writes one event at a time: the second event's link, rewritten by another
    worker (as a backfill item does) while the first was written, is read when its turn comes."""
    import dataclasses

    from sync.anny import AnnyClient
    from sync.services import get_services
    from sync.worker import Worker

    world = active
    first, second = meeting(world, 2, 9), meeting(world, 3, 9)
    await world.settle()
    for event in (first, second):
        world.stack.graph.person_update_event(world.room, event["id"], subject="Renamed")
    original, rewritten = AnnyClient.update_blocker, {"done": False}

    async def another_worker_meanwhile(self, anny_id, *args, **kwargs):  # type: ignore[no-untyped-def]
        if not rewritten["done"]:
            rewritten["done"] = True
            links = (await get_services()).links
            for event in (first, second):
                link = await links.link_by_event(world.room, event["id"])
                if link.anny_id != anny_id:  # the event whose turn has not come yet
                    await links.save_link(link)  # the same link written again: a new ETag
        return await original(self, anny_id, *args, **kwargs)

    monkeypatch.setattr(AnnyClient, "update_blocker", another_worker_meanwhile)

    async def run() -> object:
        worker = Worker(await get_services())
        flow = worker.inbound
        flow.settings = dataclasses.replace(flow.settings, anny_write_limit=1)  # one event after the other
        return await flow.sync_room(world.room)

    await world.stack.host.run(run())
    assert rewritten["done"]
    assert [b["title"] for b in blockers(world)] == ["Renamed", "Renamed"]


async def test_an_event_whose_link_another_worker_writes_meanwhile_is_synced_again_not_failed(
        active: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """The room run's write of an event's link loses its ETag race to another worker (a backfill
    item, a run on another instance) that wrote the same link while the blocker was updated: the
    event is decided again on the link as it is now, and the room run goes on."""
    from sync.anny import AnnyClient
    from sync.services import get_services
    from sync.worker import Worker

    world = active
    event = meeting(world, 2, 9)
    await world.settle()
    world.stack.graph.person_update_event(world.room, event["id"], subject="Renamed")
    original, rewritten = AnnyClient.update_blocker, {"done": False}

    async def another_worker_meanwhile(self, anny_id, *args, **kwargs):  # type: ignore[no-untyped-def]
        answer = await original(self, anny_id, *args, **kwargs)
        if not rewritten["done"]:
            rewritten["done"] = True
            links = (await get_services()).links
            link = await links.link_by_event(world.room, event["id"])
            await links.save_link(link)  # the same link written again: a new ETag
        return answer

    monkeypatch.setattr(AnnyClient, "update_blocker", another_worker_meanwhile)

    async def run() -> object:
        return await Worker(await get_services()).inbound.sync_room(world.room)

    await world.stack.host.run(run())
    assert rewritten["done"]
    assert [b["title"] for b in blockers(world)] == ["Renamed"]
    assert (await world.admin_status())["last_error"] is None
