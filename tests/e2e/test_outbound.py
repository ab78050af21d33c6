"""anny → Outlook end to end (behaviour: anny → Outlook): webhooks through the runner, Azurite, both emulators."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from datetime import datetime
from zoneinfo import ZoneInfo

import httpx
import pytest

from devhost.stack import WEBHOOK_SECRET, WEBHOOK_SECRET_HEADER
from sync import worker as worker_module
from sync.graph import ANNY_PROPERTY_ID
from tests.e2e.conftest import World, crash_once
from tests.fixtures import graph_utc as utc

UTC = ZoneInfo("UTC")


def single(world: World) -> dict:
    events = world.mirror_events()
    assert len(events) == 1, events
    return events[0]


async def test_booking_appears_as_a_busy_mirror_event(world: World) -> None:
    booking = world.stack.anny.person_create_booking(
        world.resource, world.at(2, 10), world.at(2, 11), service="Meeting",
        customer={"email": "ada@example.org", "phone": "+49 30 1234", "name": "Ada"})
    await world.settle()
    event = single(world)
    assert event["subject"] == f"Meeting · anny #{booking['number']}"
    assert "ada@example.org" not in str(event) and "1234" not in event["subject"]
    assert utc(event["start"]["dateTime"]) == world.utc(2, 10)
    assert utc(event["end"]["dateTime"]) == world.utc(2, 11)
    assert event["showAs"] == "busy" and event["isReminderOn"] is False and not event.get("attendees")
    assert event["categories"] == ["anny"]
    props = {p["id"].lower(): p["value"] for p in event["singleValueExtendedProperties"]}
    assert props[ANNY_PROPERTY_ID.lower()] == booking["id"]
    colours = {c["displayName"]: c["color"] for c in world.stack.graph.categories(world.room)}
    assert colours["anny"] == "preset22"


async def test_moved_booking_moves_the_event_and_cancel_removes_it(world: World) -> None:
    booking = world.stack.anny.person_create_booking(world.resource, world.at(3, 9), world.at(3, 10))
    await world.settle()
    world.stack.anny.person_move_booking(booking["id"], world.at(3, 14), world.at(3, 16))
    await world.settle()
    event = single(world)
    assert utc(event["start"]["dateTime"]) == world.utc(3, 14)
    assert utc(event["end"]["dateTime"]) == world.utc(3, 16)
    world.stack.anny.person_cancel_booking(booking["id"])
    await world.settle()
    assert world.mirror_events() == []
    assert await world.state.link_by_anny_id(booking["id"]) is None


async def test_deleted_booking_removes_its_event(world: World) -> None:
    booking = world.stack.anny.person_create_booking(world.resource, world.at(3, 9), world.at(3, 10))
    await world.settle()
    world.stack.anny.person_delete_booking(booking["id"])
    await world.settle()
    assert world.mirror_events() == []


async def test_booking_on_a_child_resource_is_mirrored_into_the_parent_room(world: World) -> None:
    world.stack.anny.person_create_booking(world.child, world.at(4, 8), world.at(4, 9))
    await world.settle()
    assert utc(single(world)["start"]["dateTime"]) == world.utc(4, 8)


async def test_series_occurrences_are_mirrored_but_never_the_master(world: World) -> None:
    series = world.stack.anny.person_create_series(world.resource, world.at(2, 12), world.at(2, 13), 4)
    _, second, third, _ = series["occurrences"]
    world.stack.anny.person_move_booking(second["id"], world.at(9, 15), world.at(9, 16))
    world.stack.anny.person_cancel_booking(third["id"])
    await world.settle()
    starts = sorted(utc(e["start"]["dateTime"]) for e in world.mirror_events())
    assert starts == [world.utc(2, 12), world.utc(9, 15), world.utc(23, 12)]
    assert await world.state.link_by_anny_id(series["master"]["id"]) is None


async def test_person_made_blocker_is_mirrored_with_the_blocker_title(world: World) -> None:
    world.stack.anny.person_create_blocker(world.resource, world.at(5, 7), world.at(5, 18), title="Painting")
    await world.settle()
    assert single(world)["subject"] == "Blocked in anny"


async def test_webhook_delivered_three_times_and_reordered_gives_one_correct_event(world: World) -> None:
    world.stack.anny.set_webhook_faults(duplicate=3, reorder_batch=3)
    booking = world.stack.anny.person_create_booking(world.resource, world.at(6, 9), world.at(6, 10))
    world.stack.anny.person_move_booking(booking["id"], world.at(6, 11), world.at(6, 12))
    world.stack.anny.person_move_booking(booking["id"], world.at(6, 13), world.at(6, 14))
    world.stack.anny.release_held_webhooks()
    await world.settle()
    assert len(world.stack.anny.deliveries()) >= 9
    event = single(world)
    assert utc(event["start"]["dateTime"]) == world.utc(6, 13)


def crash_once_in_record(monkeypatch: pytest.MonkeyPatch) -> dict:
    """Injected: the process dies right after Graph created the event, before the link is recorded."""
    from sync.outbound import OutboundFlow

    return crash_once(monkeypatch, OutboundFlow)


async def test_crash_after_the_create_then_a_cancel_leaves_no_event(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    crashes = crash_once_in_record(monkeypatch)
    world.stack.host.queue_options.max_dequeue_count = 1  # the crashed item is parked, not retried
    booking = world.stack.anny.person_create_booking(world.resource, world.at(2, 16), world.at(2, 17))
    await world.settle()
    assert crashes["left"] == 0 and len(world.mirror_events()) == 1  # created, but never recorded
    world.stack.host.queue_options.max_dequeue_count = 5
    world.stack.anny.person_cancel_booking(booking["id"])
    await world.settle()
    assert world.mirror_events() == []
    assert await world.state.link_by_anny_id(booking["id"]) is None


async def test_cancel_racing_an_in_flight_create_leaves_no_event(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    from sync.outbound import OutboundFlow

    original = OutboundFlow._record
    raced = {"left": 1}

    async def cancelled_meanwhile(self, link, *args, **kwargs):  # type: ignore[no-untyped-def]
        if raced["left"]:  # another worker saw the cancellation and gave the pending link up
            raced["left"] -= 1
            world.stack.anny.person_cancel_booking(link.anny_id)
            await self.links.delete_link(await self.links.link_by_anny_id(link.anny_id))
        return await original(self, link, *args, **kwargs)

    monkeypatch.setattr(OutboundFlow, "_record", cancelled_meanwhile)
    world.stack.anny.person_create_booking(world.resource, world.at(2, 16), world.at(2, 17))
    await world.settle()
    assert raced["left"] == 0
    assert world.mirror_events() == []


async def test_crash_between_graph_create_and_link_write_still_gives_one_event(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    crashes = crash_once_in_record(monkeypatch)
    booking = world.stack.anny.person_create_booking(world.resource, world.at(2, 16), world.at(2, 17))
    await world.settle()
    assert crashes["left"] == 0
    assert len(world.mirror_events()) == 1
    link = await world.state.link_by_anny_id(booking["id"])
    assert link.state == "synced" and link.event_id == single(world)["id"]


async def test_booking_moved_into_the_window_is_synced_and_outside_is_ignored(world: World) -> None:
    far = world.stack.anny.person_create_booking(world.resource, world.at(250, 9), world.at(250, 10))
    await world.settle()
    assert world.mirror_events() == []
    world.stack.anny.person_move_booking(far["id"], world.at(10, 9), world.at(10, 10))
    await world.settle()
    assert utc(single(world)["start"]["dateTime"]) == world.utc(10, 9)


async def test_outlook_edit_or_delete_of_a_mirror_event_is_restored_from_anny(world: World) -> None:
    booking = world.stack.anny.person_create_booking(world.resource, world.at(2, 9), world.at(2, 10))
    await world.settle()
    event = single(world)
    world.stack.graph.person_update_event(world.room, event["id"], subject="Mine now", time_zone="UTC",
                                          start=world.utc(2, 18).isoformat()[:19],
                                          end=world.utc(2, 19).isoformat()[:19])
    await world.settle()  # the notification about the edit makes the worker re-read anny, which wins
    restored = single(world)
    assert restored["subject"].endswith(f"#{booking['number']}")
    assert utc(restored["start"]["dateTime"]) == world.utc(2, 9)
    world.stack.graph.person_delete_event(world.room, restored["id"])
    await world.settle()
    again = single(world)
    assert again["id"] != restored["id"] and utc(again["start"]["dateTime"]) == world.utc(2, 9)
    assert (await world.state.link_by_anny_id(booking["id"])).event_id == again["id"]
    assert await world.state.links_of_room(world.room) != []
    blockers = [b for b in world.stack.anny.bookings() if b["is_blocker"]]
    assert blockers == []  # the mirror event never became a blocker


async def test_unchanged_booking_costs_no_graph_call(world: World) -> None:
    booking = world.stack.anny.person_create_booking(world.resource, world.at(2, 9), world.at(2, 10))
    await world.settle()
    world.stack.graph.reset_counters()
    world.stack.anny.person_update_booking(booking["id"], note="internal note only")
    await world.settle()
    assert world.stack.graph.call_counts().get("total", 0) == 0


async def test_booking_of_an_unmapped_resource_is_a_no_op(world: World) -> None:
    other = world.stack.anny.add_resource("Elsewhere", timezone="Europe/Berlin")
    world.stack.graph.reset_counters()
    world.stack.anny.person_create_booking(other["id"], world.at(2, 9), world.at(2, 10))
    await world.settle()
    assert world.stack.graph.call_counts().get("total", 0) == 0
    assert world.stack.graph.events(world.room) == []


async def test_a_graph_outage_longer_than_the_queues_retries_poisons_no_change(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Graph answers 500 to a cancelled booking's delete for longer than the queue's retries (5
    attempts; the SDK does not retry a 500): at the last, the work item is put back after a wait
    instead of going to the poison queue (where the sweep, which cannot see deletions, would never
    find it)."""
    monkeypatch.setattr(worker_module, "OUTAGE_BACKOFF_S", 0.3)  # seconds, not the half hour of production
    booking = world.stack.anny.person_create_booking(world.resource, world.at(2, 9), world.at(2, 10))
    await world.settle()
    assert len(world.mirror_events()) == 1
    world.stack.graph.add_fault(500, route="DELETE /users/{mailbox}/events/*", count=6, retry_after=None)
    world.stack.anny.person_cancel_booking(booking["id"])
    for _ in range(60):  # the runner works the queue while it settles; put-back items wait their delay
        await world.settle()
        if world.mirror_events() == []:
            break
        await asyncio.sleep(0.5)
    assert world.mirror_events() == []
    [fault] = world.stack.graph.list_faults()
    assert fault["hits"] == 6  # every 500 was met: the queue's 5 attempts, the first after the put-back, then done
    assert await world.stack.host.run(world.stack.host.queue_messages("sync-work-poison")) == []


# --- bad input at the webhook --------------------------------------------------------------------


def envelope(booking_id: str = "b-1", event: str = "bookings.created", event_id: str = "evt-1") -> dict:
    now = datetime.now(UTC).isoformat()
    return {"event": event, "timestamp": now, "event_id": event_id, "webhook_id": "wh-1",
            "triggered_at": now, "data": {"id": booking_id, "type": "bookings"}}


async def post_webhook(world: World, body: bytes | dict, *, key: str | None = "default",
                       secret: str | None = WEBHOOK_SECRET, headers: dict | None = None,
                       content: AsyncIterator[bytes] | None = None) -> httpx.Response:
    url = f"{world.stack.host.url}/api/anny/webhook"
    params = {"code": world.stack.keys.default if key == "default" else key} if key else {}
    sent = dict(headers or {})
    if secret is not None:
        sent[WEBHOOK_SECRET_HEADER] = secret
    async with httpx.AsyncClient() as client:
        if isinstance(body, dict):
            return await client.post(url, params=params, json=body, headers=sent)
        return await client.post(url, params=params, content=content or body, headers=sent)


async def queued(world: World) -> list[bytes]:
    return await world.stack.host.run(world.stack.host.queue_messages("sync-work"))


@pytest.mark.parametrize(("key", "secret"), [(None, WEBHOOK_SECRET), ("wrong", WEBHOOK_SECRET),
                                             ("default", None), ("default", "wrong-secret")])
async def test_wrong_or_missing_key_or_secret_is_refused_and_nothing_queued(
        world: World, key: str | None, secret: str | None) -> None:
    answer = await post_webhook(world, envelope(), key=key, secret=secret)
    assert answer.status_code == 401
    assert await queued(world) == []


async def test_malformed_json_is_400(world: World) -> None:
    answer = await post_webhook(world, b"{not json")
    assert answer.status_code == 400 and await queued(world) == []


@pytest.mark.parametrize("start", ["soon", 1, "2026-12-01T10:00:00"])
async def test_an_authentic_webhook_whose_booking_copy_is_unusable_is_taken_and_the_booking_read(
        world: World, start: object) -> None:
    """anny's delivery is sound, only its copy of the booking has a start that is no time (or one
    without its offset): answered 2xx like any authentic delivery, never 500 (anny would retry
    and in the end switch the webhook off), and the worker reads the booking instead."""
    booking = world.stack.anny.person_create_booking(world.resource, world.at(2, 9), world.at(2, 10))
    await world.settle()
    [mirror] = world.mirror_events()
    world.stack.anny.person_move_booking(booking["id"], world.at(2, 11), world.at(2, 12))
    data = {"id": booking["id"], "type": "bookings", "number": booking["number"], "status": "accepted",
            "start_date": start, "end_date": world.at(2, 12), "updated_at": datetime.now(UTC).isoformat(),
            "resource": {"id": world.resource, "name": "Room Alpha", "meta": {"parent_id": None}},
            "service": {"id": "s-1", "name": "Meeting"}}
    body = {**envelope(booking["id"], "bookings.updated", f"evt-unusable-{start}"), "data": data}
    answer = await post_webhook(world, body)
    assert answer.status_code == 202 and answer.json()["status"] == "queued"
    await world.settle()
    [moved] = world.mirror_events()
    assert moved["id"] == mirror["id"]
    assert utc(moved["start"]["dateTime"]) == world.utc(2, 11)
    assert await world.stack.host.run(world.stack.host.queue_messages("sync-work-poison")) == []


@pytest.mark.parametrize("on_child", [False, True])
async def test_a_webhook_whose_resource_does_not_say_whether_it_has_a_parent(world: World, on_child: bool) -> None:
    """resource.json makes `parent` optional: anny's own delivery of a move, without its resource's
    parent fields. On the mapped resource itself the copy still stands for the booking (no anny
    read); on another resource it might be a mapped parent's child, so the booking is read."""
    resource = world.child if on_child else world.resource
    booking = world.stack.anny.person_create_booking(resource, world.at(2, 9), world.at(2, 10))
    await world.settle()
    world.stack.anny.set_webhook_faults(drop_next=1)
    world.stack.anny.person_move_booking(booking["id"], world.at(2, 11), world.at(2, 12))
    await world.settle()
    payload = world.stack.anny.deliveries()[-1]["payload"]
    [unmoved] = world.mirror_events()
    assert payload["event"] == "bookings.updated" and utc(unmoved["start"]["dateTime"]) == world.utc(2, 9)
    payload["data"]["resource"] = {k: v for k, v in payload["data"]["resource"].items() if k not in ("parent", "meta")}
    world.stack.anny.reset_counters()
    assert (await post_webhook(world, {**payload, "event_id": f"evt-no-parent-{on_child}"})).status_code == 202
    await world.settle()
    [moved] = world.mirror_events()
    assert utc(moved["start"]["dateTime"]) == world.utc(2, 11)
    assert world.stack.anny.counters().get("GET /api/v1/bookings/{id}", 0) == (1 if on_child else 0)


async def test_a_webhook_whose_booking_copy_would_not_fit_a_queue_message_is_taken_and_the_booking_read(
        world: World) -> None:
    """Texts within anny's lengths, in characters that JSON escapes to 6 bytes each: the copy would
    make the work item larger than a queue message (64 KiB after base64)."""
    booking = world.stack.anny.person_create_booking(world.resource, world.at(2, 9), world.at(2, 10))
    await world.settle()
    world.stack.anny.person_move_booking(booking["id"], world.at(2, 11), world.at(2, 12))
    data = {"id": booking["id"], "type": "bookings", "number": booking["number"], "status": "accepted",
            "start_date": world.at(2, 11), "end_date": world.at(2, 12), "updated_at": datetime.now(UTC).isoformat(),
            "description": "ж" * 4000, "note": "ж" * 4000, "title": "ж" * 4000,
            "resource": {"id": world.resource, "name": "Room Alpha", "meta": {"parent_id": None}},
            "service": {"id": "s-1", "name": "Meeting"}}
    answer = await post_webhook(world, {**envelope(booking["id"], "bookings.updated", "evt-long"), "data": data})
    assert answer.status_code == 202 and answer.json()["status"] == "queued"
    await world.settle()
    [moved] = world.mirror_events()
    assert utc(moved["start"]["dateTime"]) == world.utc(2, 11)


async def test_oversized_body_is_413(world: World) -> None:
    answer = await post_webhook(world, b"{" + b" " * 300_000 + b"}")
    assert answer.status_code == 413 and await queued(world) == []


async def test_a_chunked_body_is_411_and_says_what_to_fix(world: World) -> None:
    """Azure Functions hands a Python function no body sent in chunks: say so, rather than "not JSON"."""
    body = json.dumps(envelope()).encode()

    async def chunks() -> AsyncIterator[bytes]:
        yield body[:10]
        yield body[10:]

    answer = await post_webhook(world, b"", content=chunks())
    assert answer.status_code == 411 and "Content-Length" in answer.json()["problem"]
    assert await queued(world) == []


async def test_unknown_event_type_is_acknowledged_and_ignored(world: World) -> None:
    answer = await post_webhook(world, envelope(event="customers.updated"))
    assert answer.status_code == 202 and await queued(world) == []


async def test_json_api_wrapped_payload_is_accepted(world: World) -> None:
    body = envelope()
    body["data"] = {"data": {"id": "b-77", "type": "bookings", "attributes": {}}}
    answer = await post_webhook(world, body)
    assert answer.status_code == 202 and answer.json()["booking_id"] == "b-77"


async def test_already_processed_event_id_is_dropped(world: World) -> None:
    booking = world.stack.anny.person_create_booking(world.resource, world.at(2, 9), world.at(2, 10))
    await world.settle()
    event_id = world.stack.anny.deliveries()[0]["event_id"]
    answer = await post_webhook(world, envelope(booking["id"], event_id=event_id))
    assert answer.json()["status"] == "duplicate" and await queued(world) == []


async def test_a_delivery_with_its_booking_needs_no_record_and_its_redelivery_elsewhere_costs_no_read(
        world: World) -> None:
    from sync import processed

    world.stack.anny.person_create_booking(world.resource, world.at(2, 9), world.at(2, 10))
    await world.settle()
    [delivery] = world.stack.anny.deliveries()
    assert not await world.state.is_processed(delivery["event_id"])  # the payload's fingerprint suffices
    processed._remembered.clear()  # as if the redelivery reached another instance
    world.stack.anny.reset_counters()
    before = single(world)
    answer = await post_webhook(world, delivery["payload"])
    assert answer.json()["status"] == "queued"
    await world.settle()
    assert world.stack.anny.counters() == {} and single(world) == before


async def test_a_delivery_without_its_booking_is_recorded_as_processed(world: World) -> None:
    from sync import processed

    booking = world.stack.anny.person_create_booking(world.resource, world.at(2, 9), world.at(2, 10))
    await world.settle()
    answer = await post_webhook(world, envelope(booking["id"], event="bookings.updated", event_id="evt-bare"))
    assert answer.json()["status"] == "queued"
    await world.settle()
    assert await world.state.is_processed("evt-bare")  # its redelivery would read anny again
    processed._remembered.clear()
    answer = await post_webhook(world, envelope(booking["id"], event="bookings.updated", event_id="evt-bare"))
    assert answer.json()["status"] == "duplicate" and await queued(world) == []


@pytest.mark.parametrize("stack", [{"ANNY_WEBHOOK_SIGNING_KEY": "k" * 64}], indirect=True)
async def test_hmac_signature_is_checked_when_a_signing_key_is_set(world: World) -> None:
    import hashlib
    import hmac
    import json

    body = json.dumps(envelope()).encode()
    good = hmac.new(b"k" * 64, body, hashlib.sha256).hexdigest()
    assert (await post_webhook(world, body, headers={"x-anny-signature": "0" * 64})).status_code == 401
    assert (await post_webhook(world, body)).status_code == 401
    assert await queued(world) == []
    assert (await post_webhook(world, body, headers={"x-anny-signature": good})).status_code == 202


async def test_anny_5xx_is_retried_by_the_queue_put_back_while_it_lasts_then_poisoned(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker_module, "OUTAGE_BACKOFF_S", 0.01)  # put-backs at once, not after half an hour
    booking = world.stack.anny.person_create_booking(world.resource, world.at(2, 9), world.at(2, 10))
    await world.stack.anny.settle()
    world.stack.anny.fail_next(503, count=2, route="GET /api/v1/bookings/{id}")
    await world.settle()
    assert len(world.mirror_events()) == 1  # two failures, third attempt succeeded
    world.stack.anny.person_create_booking(world.resource, world.at(3, 11), world.at(3, 12))
    await world.stack.anny.settle()
    world.stack.anny.fail_next(503, count=500, route="GET /api/v1/bookings/{id}")  # a new booking is read first
    await world.settle(rounds=40)
    assert len(await world.stack.poison_messages()) == 1  # after every put-back, the admin gets it
    assert utc(single(world)["start"]["dateTime"]) == world.utc(2, 9)  # nothing lost or half-written
    assert booking["id"] == single(world)["singleValueExtendedProperties"][0]["value"]


async def test_anny_auth_failure_is_reported_and_parked_not_retried_endlessly(
        world: World, caplog: pytest.LogCaptureFixture) -> None:
    world.stack.anny.person_create_booking(world.resource, world.at(2, 9), world.at(2, 10))
    await world.stack.anny.settle()
    world.stack.anny.force_status(401)
    with caplog.at_level(logging.ERROR):
        await world.settle()
    world.stack.anny.force_status(None)
    assert len(await world.stack.poison_messages()) == 1  # kept for a replay once the token is fixed
    status = await world.admin_status()
    assert status["poison_queue"] == 1 and "401" in status["last_error"]
    assert world.stack.anny.counters().get("GET /api/v1/bookings/{id}", 0) <= 5
    status = await world.state.get_status()
    assert "401" in status.last_error
    assert any("credentials" in r.getMessage() for r in caplog.records)
