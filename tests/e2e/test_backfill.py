"""Live before backfill: an initial sync spends anny's budget at low priority, and shows its progress.

The runner polls both queues by itself here, as the Functions host does, and the anny
emulator enforces a small write budget, so the initial sync takes many seconds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import pytest

from devhost.azurite import Azurite
from devhost.stack import Emulators, LocalStack, start_stack
from sync.settings import StorageSettings
from tests.e2e.conftest import ROOM, World, run_admin
from tests.state_tables import AllTables

MEETINGS = 24
LIMITS = {"ANNY_READ_LIMIT": "40", "ANNY_WRITE_LIMIT": "8", "ANNY_LIMIT_WINDOW_SECONDS": "2"}


async def until(condition: Callable[[], bool], timeout: float = 90, what: str = "") -> float:
    """Poll until `condition` holds; returns when (monotonic seconds)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)
    return time.monotonic()


def blockers(world: World) -> list[dict]:
    return [b for b in world.stack.anny.bookings() if b["is_blocker"] and not b.get("canceled_at")]


@pytest.fixture
async def busy_room(azurite: Azurite, emulators: Emulators, table_prefix: str) -> AsyncIterator[World]:
    """A room with MEETINGS meetings and a mapped resource, the queues polled, anny's limits on."""
    emulators.reset()
    emulators.anny.set_rate_limits(reads_per_window=40, writes_per_window=8, rate_window_s=2)
    stack = start_stack(azurite, emulators, table_prefix, poll_queues=True, **LIMITS)
    try:
        async with AllTables(StorageSettings(connection_string=azurite.connection_string), table_prefix) as state:
            parent = stack.anny.add_resource("Room Alpha", timezone="Europe/Berlin")
            stack.anny.add_service("Meeting")
            stack.graph.add_room(ROOM, "Room Alpha")
            world = World(stack, state, parent["id"], parent["id"])
            for n in range(MEETINGS):
                start = world.utc(2 + n // 8, 8 + n % 8)
                stack.graph.person_create_event(ROOM, subject=f"Meeting {n}", start=start.isoformat()[:19],
                                                end=(start + timedelta(minutes=30)).isoformat()[:19],
                                                time_zone="UTC")
            await run_admin(stack, "rules.add", anny_resource=parent["id"], room=ROOM)
            stack.subscribe_anny_webhooks()
            yield world
    finally:
        stack.stop()


async def test_live_changes_overtake_a_long_initial_sync(busy_room: World) -> None:
    world = busy_room
    answer = await world.admin("activate")
    assert answer["state"] == "active" and answer["rules"][0]["Outlook → anny"]["create (queued)"] == MEETINGS
    await until(lambda: len(blockers(world)) >= 3, what="the backfill to start")
    status = await world.admin_status()
    sync = status["initial_sync"]
    assert sync["in_progress"] and sync["to_anny"]["total"] == MEETINGS and sync["to_anny"]["to_do"] > 0
    assert sync["eta_s"] is not None and sync["eta_s"] > 0
    assert status["anny_budget"]["mode"].startswith("shared")

    start = world.utc(1, 7)
    live = world.stack.graph.person_create_event(ROOM, subject="Live", start=start.isoformat()[:19],
                                                 end=(start + timedelta(minutes=30)).isoformat()[:19],
                                                 time_zone="UTC")
    booking = world.stack.anny.person_create_booking(world.resource, world.at(1, 12), world.at(1, 13))
    await until(lambda: any(b["title"] == "Live" for b in blockers(world)), what="the live meeting's blocker")
    assert len(blockers(world)) < MEETINGS + 1  # the live meeting did not wait for the backfill
    await until(lambda: any(booking["number"] in e["subject"] for e in world.stack.graph.events(ROOM)),
                what="the live booking's mirror event")
    assert len(blockers(world)) < MEETINGS + 1

    await until(lambda: len(blockers(world)) == MEETINGS + 1, timeout=120, what="the backfill to finish")
    await world.settle()
    assert sorted(b["title"] for b in blockers(world)) == sorted([*(f"Meeting {n}" for n in range(MEETINGS)), "Live"])
    assert world.stack.anny.throttled_count() == 0  # the budget kept every instance within anny's limits
    assert await world.stack.poison_messages() == []
    done = (await world.admin_status())["initial_sync"]
    assert not done["in_progress"] and done["to_anny"] == {"done": MEETINGS, "to_do": 0, "total": MEETINGS}
    assert done["to_outlook"]["to_do"] == 0
    assert live["id"]


async def test_a_backfill_item_reads_its_span_once_and_alone_only_what_changed_since(stack: LocalStack,
                                                                                     state: AllTables) -> None:
    """The baseline queues the room's meetings with the span they lie in. People move, delete and
    rename some before the item runs: the item finds them as they are now with one calendarView
    read of the span, reads alone only the two that left it, and blocks exactly what is there."""
    parent = stack.anny.add_resource("Room Alpha", timezone="Europe/Berlin")
    stack.anny.add_service("Meeting")
    stack.graph.add_room(ROOM, "Room Alpha")
    world = World(stack, state, parent["id"], parent["id"])

    def meeting(n: int) -> str:
        start = world.utc(2, 8 + n)
        return str(stack.graph.person_create_event(ROOM, subject=f"Meeting {n}", start=start.isoformat()[:19],
                                                   end=(start + timedelta(minutes=30)).isoformat()[:19],
                                                   time_zone="UTC")["id"])

    moved, gone, renamed, *_ = [meeting(n) for n in range(6)]
    await run_admin(stack, "rules.add", anny_resource=parent["id"], room=ROOM)
    stack.subscribe_anny_webhooks()
    answer = await run_admin(stack, "activate")
    assert answer["rules"][0]["Outlook → anny"]["create (queued)"] == 6
    assert blockers(world) == []  # queued on the backfill queue, not run yet

    later = world.utc(9, 15)
    stack.graph.person_update_event(ROOM, moved, start=later.isoformat()[:19],
                                    end=(later + timedelta(minutes=30)).isoformat()[:19], time_zone="UTC")
    stack.graph.person_delete_event(ROOM, gone)
    stack.graph.person_update_event(ROOM, renamed, subject="Renamed")
    await stack.graph.wait_deliveries()  # their room run waits on the live queue
    stack.graph.reset_counters()
    await stack.host.run(stack.host.process_queue_once("sync_backfill"))

    calls = stack.graph.call_counts()
    assert calls.get("GET /users/{mailbox}/calendarView") == 1
    assert calls.get("GET /users/{mailbox}/events/{id}") == 2  # the moved and the deleted meeting
    titles = sorted(b["title"] for b in blockers(world))
    assert titles == ["Meeting 0", "Meeting 3", "Meeting 4", "Meeting 5", "Renamed"]
    [moved_blocker] = [b for b in blockers(world) if b["title"] == "Meeting 0"]
    assert datetime.fromisoformat(moved_blocker["start_date"]).astimezone(UTC) == later

    await world.settle()  # the live room run then finds everything linked: nothing doubled
    assert sorted(b["title"] for b in blockers(world)) == titles
    assert await stack.poison_messages() == []
