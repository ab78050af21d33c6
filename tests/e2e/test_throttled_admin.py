"""A 429 during an admin command's inline sync (activation, resync, a new rule) fails nothing and loses nothing.

The command answers with what it did; what is left continues from the backfill queue after
`Retry-After`, and `status` says so until it has run.
"""

from __future__ import annotations

import httpx
import pytest

from devhost.stack import LocalStack
from tests.e2e.conftest import ROOM, World, run_admin
from tests.e2e.test_limits import queue_depth
from tests.state_tables import AllTables

EVENTS_POST = "POST /users/{mailbox}/events"
ATTEMPTS_PER_CREATE = 4  # the SDK's first try and its 3 retries
BETA = "room.beta@contoso.example"


@pytest.fixture
async def mapped(stack: LocalStack, state: AllTables) -> World:
    """A mapped room, not activated yet, with three bookings waiting for their initial sync."""
    resource = stack.anny.add_resource("Room Alpha", timezone="Europe/Berlin")["id"]
    stack.anny.add_service("Meeting")
    stack.graph.add_room(ROOM, "Room Alpha")
    world = World(stack, state, resource, resource)
    for day in (2, 3, 4):
        stack.anny.person_create_booking(resource, world.at(day, 9), world.at(day, 10))
    await run_admin(stack, "rules.add", anny_resource=resource, room=ROOM)
    stack.subscribe_anny_webhooks()
    return world


def mirrors(world: World, room: str = ROOM) -> list[dict]:
    return [e for e in world.stack.graph.events(room) if "anny" in (e.get("categories") or [])]


async def test_a_graph_429_outlasting_the_sdk_retries_during_activation_fails_nothing(mapped: World) -> None:
    world = mapped
    world.stack.graph.add_fault(429, route=EVENTS_POST, count=3 * ATTEMPTS_PER_CREATE, retry_after=1)
    answer = await world.admin("activate")  # answered, not failed
    assert answer["state"] == "active"
    rule = answer["rules"][0]
    assert rule["continues"]["reason"].startswith("Graph answered 429")
    assert mirrors(world) == []
    status = await world.admin_status()
    waiting = status["initial_sync"]["rooms"][0]
    assert status["initial_sync"]["in_progress"] and waiting["room"] == ROOM and waiting["continues_at"]
    assert await queue_depth(world, "sync-backfill") == 1  # the rest, invisible until Retry-After
    await world.settle(rounds=40)
    assert sorted(e["start"]["dateTime"][:10] for e in mirrors(world)) == [
        world.day(d).isoformat() for d in (2, 3, 4)]  # each booking once: nothing lost, nothing twice
    assert await world.stack.poison_messages() == []
    status = await world.admin_status()
    assert not status["initial_sync"]["in_progress"]
    assert status["anny_budget"]["throttled_429"]["graph"] >= 1


async def test_a_new_rule_throttled_by_graph_is_kept_and_synced_in_the_background(mapped: World) -> None:
    world = mapped
    await world.admin("activate")
    beta = world.stack.anny.add_resource("Room Beta", timezone="Europe/Berlin")
    world.stack.graph.add_room(BETA, "Room Beta")
    world.stack.anny.person_create_booking(beta["id"], world.at(5, 9), world.at(5, 10))
    world.stack.graph.add_fault(429, route=EVENTS_POST, mailbox=BETA, count=ATTEMPTS_PER_CREATE, retry_after=1)
    answer = await world.admin("rules.add", anny_resource=beta["id"], room=BETA)  # not "rule not added"
    assert answer["room"] == BETA and answer["initial_sync"]["continues"]
    assert sorted(r["room"] for r in await world.admin("rules.list")) == sorted([ROOM, BETA])
    await world.settle(rounds=40)
    assert len(mirrors(world, BETA)) == 1
    assert await world.stack.poison_messages() == []


async def test_an_anny_429_with_a_long_retry_after_during_resync_fails_nothing(mapped: World) -> None:
    world = mapped
    await world.admin("activate")
    await world.settle()
    world.stack.anny.fail_next(429, count=1, route="GET /api/v1/bookings", retry_after=3)
    answer = await world.admin("resync")
    reason = answer["rules"][0]["continues"]["reason"]
    assert reason.startswith("anny ") and "answered 429" in reason
    assert (await world.admin_status())["initial_sync"]["rooms"][0]["continues_at"]
    await world.settle(rounds=80)
    assert len(mirrors(world)) == 3
    assert await world.stack.poison_messages() == []
    status = await world.admin_status()
    assert not status["initial_sync"]["in_progress"]
    assert status["runs"][0]["kind"] == "resync (continued)" and not status["runs"][0]["error"]


async def test_a_preview_that_anny_throttles_says_when_to_try_again(mapped: World) -> None:
    """A `--dry-run` reads both sides and writes nothing; when anny answers 429 there is nothing to
    continue in the background, so the preview answers 503 with anny's Retry-After, not a 502."""
    world = mapped
    world.stack.anny.fail_next(429, count=3, route="GET /api/v1/bookings", retry_after=42)
    async with httpx.AsyncClient(base_url=world.stack.host.url, timeout=60) as client:
        answer = await client.post("/api/manage/activate", json={"dry_run": True},
                                   headers={"x-functions-key": world.stack.keys.master})
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "42"
    body = answer.json()
    assert body["error"].endswith("try again in 42 s") and body["retry_after_s"] == 42
    assert mirrors(world) == []
    assert (await world.admin_status())["state"] == "inactive"  # a preview never activates


@pytest.mark.parametrize("stack", [{"ADMIN_ANSWER_SECONDS": "1"}], indirect=True)
async def test_activation_through_the_admin_api_answers_before_azure_ends_the_request(mapped: World) -> None:
    """Azure ends an HTTP request after 230 s: an activation that would sync longer answers in time,
    with what continues in the background, and the rest is synced from the backfill queue."""
    world = mapped
    world.stack.graph.set_latency(400)  # the inline sync takes seconds: longer than the answer may wait
    async with httpx.AsyncClient(base_url=world.stack.host.url, timeout=60) as client:
        answer = await client.post("/api/manage/activate", headers={"x-functions-key": world.stack.keys.master})
    assert answer.status_code == 200
    body = answer.json()
    assert body["state"] == "active" and "230 s" in body["rules"][0]["continues"]["reason"]
    assert "continues in the background" in body["note"]
    assert (await world.admin_status())["initial_sync"]["in_progress"]
    world.stack.graph.set_latency(0)
    await world.settle(rounds=40)
    assert sorted(e["start"]["dateTime"][:10] for e in mirrors(world)) == [
        world.day(d).isoformat() for d in (2, 3, 4)]  # each booking once: nothing lost, nothing twice
    assert await world.stack.poison_messages() == []
    assert not (await world.admin_status())["initial_sync"]["in_progress"]


@pytest.mark.parametrize("stack", [{"ADMIN_ANSWER_SECONDS": "1"}], indirect=True)
async def test_a_preview_through_the_admin_api_answers_before_azure_ends_the_request(mapped: World) -> None:
    """A preview has nothing to continue in the background: what was not previewed when the answer
    was due is said so, with how to preview that rule alone; nothing is written."""
    world = mapped
    world.stack.graph.set_latency(1500)  # the room's delta read alone outlasts the answer's due time
    async with httpx.AsyncClient(base_url=world.stack.host.url, timeout=60) as client:
        answer = await client.post("/api/manage/activate", json={"dry_run": True},
                                   headers={"x-functions-key": world.stack.keys.master})
    world.stack.graph.set_latency(0)
    assert answer.status_code == 200
    [rule] = answer.json()["rules"]
    assert f"resync --rule {world.resource} --dry-run" in rule["not_previewed"]
    assert mirrors(world) == [] and (await world.admin_status())["state"] == "inactive"
