"""anny's limits end to end: reads only where they buy truth, 429s honoured without poisoning, one budget.

The anny emulator's rate limits are switched on where a test is about them.
"""

from __future__ import annotations

import copy
import uuid

import pytest

from sync import inbound
from tests.e2e.conftest import World
from tests.e2e.test_outbound import post_webhook, single
from tests.fixtures import graph_utc as utc

READ_ONE = "GET /api/v1/bookings/{id}"


def reads(world: World) -> int:
    return world.stack.anny.counters().get(READ_ONE, 0)


async def queue_depth(world: World, name: str = "sync-work") -> int:
    async def depth() -> int:
        client = await world.stack.host.ensure_queue(name)
        return (await client.get_queue_properties()).approximate_message_count

    return await world.stack.host.run(depth())


# --- reads only where they buy truth -----------------------------------------------------------------


async def test_a_change_to_a_linked_booking_costs_no_anny_read(world: World) -> None:
    booking = world.stack.anny.person_create_booking(world.resource, world.at(3, 9), world.at(3, 10))
    await world.settle()
    assert reads(world) == 1  # a booking without a link is read before it is created
    world.stack.anny.reset_counters()
    world.stack.anny.person_move_booking(booking["id"], world.at(3, 14), world.at(3, 15))
    await world.settle()
    assert utc(single(world)["start"]["dateTime"]) == world.utc(3, 14)
    world.stack.anny.person_cancel_booking(booking["id"])
    await world.settle()
    assert world.mirror_events() == []
    assert world.stack.anny.counters() == {}  # the payloads were newer than the link: no request at all


async def test_a_resync_reads_no_resource_alone_when_the_list_showed_its_time_zone(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """A comparison of every rule lists anny's resources first; each room's delta read needs its
    resource's time zone, which that list has: it is not read again one resource at a time (in a
    fresh process, before each room's first delta read)."""
    monkeypatch.setattr(inbound, "_resource_zones", {})  # as in a fresh process
    world.stack.anny.reset_counters()
    await world.admin("resync")
    counts = world.stack.anny.counters()
    assert counts.get("GET /api/v1/resources") == 1 and "GET /api/v1/resources/{id}" not in counts
    assert inbound._resource_zones[world.resource] == "Europe/Berlin"


async def test_a_stale_payload_is_checked_against_anny_and_loses(world: World) -> None:
    booking = world.stack.anny.person_create_booking(world.resource, world.at(3, 9), world.at(3, 10))
    await world.settle()
    first = copy.deepcopy(world.stack.anny.deliveries()[-1]["payload"])
    world.stack.anny.person_move_booking(booking["id"], world.at(3, 14), world.at(3, 15))
    await world.settle()
    world.stack.anny.reset_counters()
    first["event_id"] = str(uuid.uuid4())  # the first state again, as a late redelivery would bring it
    assert (await post_webhook(world, first)).status_code == 202
    await world.settle()
    assert reads(world) == 1  # older than the link: the truth was read, and it wins
    assert utc(single(world)["start"]["dateTime"]) == world.utc(3, 14)


async def test_a_payload_that_disagrees_with_anny_is_read_when_the_link_cannot_order_it(world: World) -> None:
    booking = world.stack.anny.person_create_booking(world.resource, world.at(3, 9), world.at(3, 10))
    await world.settle()
    forged = copy.deepcopy(world.stack.anny.deliveries()[-1]["payload"])
    forged["event_id"] = str(uuid.uuid4())
    forged["data"]["start_date"] = forged["data"]["start_date"].replace("T09:", "T07:")
    del forged["data"]["updated_at"]  # cannot be ordered against what the link saw
    world.stack.anny.reset_counters()
    await post_webhook(world, forged)
    await world.settle()
    assert reads(world) == 1 and utc(single(world)["start"]["dateTime"]) == world.utc(3, 9)
    assert booking["id"] == single(world)["singleValueExtendedProperties"][0]["value"]


async def test_created_then_deleted_delivered_in_reverse_leaves_nothing(world: World) -> None:
    world.stack.anny.set_webhook_faults(reorder_batch=2)
    booking = world.stack.anny.person_create_booking(world.resource, world.at(4, 9), world.at(4, 10))
    world.stack.anny.person_delete_booking(booking["id"])
    await world.settle()
    assert {(d["event"], d["status"]) for d in world.stack.anny.deliveries()} == {
        ("bookings.created", "delivered"), ("bookings.deleted", "delivered")}  # sent newest first
    assert world.mirror_events() == []
    assert await world.state.link_by_anny_id(booking["id"]) is None


async def test_updates_delivered_in_reverse_converge_on_the_latest(world: World) -> None:
    booking = world.stack.anny.person_create_booking(world.resource, world.at(5, 9), world.at(5, 10))
    await world.settle()
    world.stack.anny.set_webhook_faults(reorder_batch=3)
    for hour in (11, 13, 15):
        world.stack.anny.person_move_booking(booking["id"], world.at(5, hour), world.at(5, hour + 1))
    world.stack.anny.reset_counters()
    await world.settle()
    assert utc(single(world)["start"]["dateTime"]) == world.utc(5, 15)
    assert reads(world) <= 3  # worked on at once: a payload older than the link by then was checked


# --- 429s: honoured, never poisoned ------------------------------------------------------------------


async def test_an_anny_429_puts_the_work_item_back_for_retry_after_without_poisoning(world: World) -> None:
    world.stack.anny.fail_next(429, count=1, route=READ_ONE, retry_after=42)
    world.stack.anny.person_create_booking(world.resource, world.at(2, 9), world.at(2, 10))
    await world.stack.anny.settle()
    await world.stack.host.run(world.stack.host.process_queue_once("sync_worker"))
    assert await queue_depth(world) == 1  # back on the queue, invisible for 42 s
    assert await world.stack.host.run(world.stack.host.queue_messages("sync-work")) == []
    assert await world.stack.poison_messages() == [] and world.stack.host.failures["sync_worker"] == 0
    assert world.mirror_events() == []
    status = await world.admin_status()
    assert status["anny_budget"]["throttled_429"] == {"anny": 1}


async def test_a_storm_of_anny_429s_loses_nothing(world: World) -> None:
    world.stack.anny.fail_next(429, count=25, route=READ_ONE, retry_after=1)
    for day in range(2, 7):
        world.stack.anny.person_create_booking(world.resource, world.at(day, 9), world.at(day, 10))
    await world.settle(rounds=40)
    assert len(world.mirror_events()) == 5
    assert await world.stack.poison_messages() == [] and world.stack.host.failures["sync_worker"] == 0
    assert world.stack.anny.faults()["api"]["fail_next"] == []  # every 429 was answered and waited out


async def test_a_graph_429_that_outlasts_the_sdk_retries_is_put_back_not_poisoned(world: World) -> None:
    world.stack.graph.add_fault(429, route="POST /users/{mailbox}/events", count=4, retry_after=1)
    world.stack.anny.person_create_booking(world.resource, world.at(2, 9), world.at(2, 10))
    await world.settle(rounds=30)
    assert len(world.mirror_events()) == 1
    assert await world.stack.poison_messages() == [] and world.stack.host.failures["sync_worker"] == 0
    assert (await world.state.throttled_counts()) == {"graph": 1}


# --- the budget, against the emulator's limits --------------------------------------------------------

LIMITED = {"ANNY_READ_LIMIT": "8", "ANNY_WRITE_LIMIT": "4", "ANNY_LIMIT_WINDOW_SECONDS": "2"}


@pytest.mark.parametrize("stack", [LIMITED], indirect=True)
async def test_a_burst_of_new_bookings_stays_within_anny_limits(world: World) -> None:
    world.stack.anny.set_rate_limits(reads_per_window=8, writes_per_window=4, rate_window_s=2)
    created = [world.stack.anny.person_create_booking(world.resource, world.at(2, 6), world.at(2, 7),
                                                      description=f"burst {n}") for n in range(20)]
    await world.settle(rounds=60)
    assert len(world.mirror_events()) == len(created)
    assert world.stack.anny.throttled_count() == 0
    assert await world.stack.poison_messages() == []
