"""Admin surface end to end (behaviour: rules, activation and removal): the admin HTTP API, the CLI
against it, deactivate, delete."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator

import azure.functions as func
import httpx
import pytest
from azure.core.exceptions import ResourceExistsError

from sync.admin_api import command_params
from sync.cli import main
from sync.queues import WorkQueues, queue_client
from sync.settings import StorageSettings
from sync.work import BookingWork, encode
from tests.e2e.conftest import World
from tests.e2e.test_inbound import blockers, meeting


async def manage(world: World, method: str, path: str, key: str | None = "master", **kwargs: object
                 ) -> httpx.Response:
    headers = {"x-functions-key": world.stack.keys.master if key == "master" else key} if key else {}
    async with httpx.AsyncClient(base_url=world.stack.host.url, timeout=60) as client:
        return await client.request(method, f"/api/manage/{path}", headers=headers, **kwargs)


def test_the_hosts_key_in_the_query_is_not_a_command_parameter() -> None:
    request = func.HttpRequest("POST", "https://sync.example.org/api/manage/resync", body=b'{"rule": "r-1"}',
                               params={"code": "the-master-key", "dry_run": "true"})
    assert command_params(request, {}) == {"dry_run": "true", "rule": "r-1"}


async def test_admin_api_needs_the_admin_key(world: World) -> None:
    assert (await manage(world, "GET", "status", key=None)).status_code == 401
    assert (await manage(world, "GET", "status", key=world.stack.keys.default)).status_code == 401
    status = (await manage(world, "GET", "status")).json()
    assert status["state"] == "active" and status["rules"][0]["room"] == world.room
    assert status["rules"][0]["subscription_expires"] and status["poison_queue"] == 0


async def test_rooms_and_resources_can_be_listed_for_mapping(world: World) -> None:
    rooms = (await manage(world, "GET", "rooms")).json()
    assert rooms == [{"email": world.room, "name": "Room Alpha"}]
    resources = {r["id"]: r for r in (await manage(world, "GET", "resources")).json()}
    assert resources[world.resource]["parent_id"] == "" and resources[world.child]["parent_id"] == world.resource


async def test_admin_api_refuses_bad_input_clearly(world: World) -> None:
    duplicate = await manage(world, "POST", "rules", json={"anny_resource": world.resource, "room": "x@y.example"})
    assert duplicate.status_code == 400 and "mapped already" in duplicate.json()["error"]
    assert (await manage(world, "POST", "rules", content=b"{nope")).status_code == 400
    assert (await manage(world, "POST", "nonsense")).status_code == 404


async def test_admin_api_refuses_a_body_sent_in_chunks_with_what_to_fix(world: World) -> None:
    """Azure Functions hands a Python function no body sent in chunks: a command must not run
    without the parameters it was sent."""
    other = world.stack.anny.add_resource("Room Beta", timezone="Europe/Berlin")
    body = json.dumps({"anny_resource": other["id"], "room": "room.beta@contoso.example"}).encode()

    async def chunks() -> AsyncIterator[bytes]:
        yield body

    answer = await manage(world, "POST", "rules", content=chunks())
    assert answer.status_code == 411 and "Content-Length" in answer.json()["problem"]
    assert [r["anny_resource_id"] for r in (await manage(world, "GET", "rules")).json()] == [world.resource]


async def test_rule_added_while_active_is_synced_at_once(world: World) -> None:
    other = world.stack.anny.add_resource("Room Beta", timezone="Europe/Berlin")
    world.stack.graph.add_room("room.beta@contoso.example", "Room Beta")
    world.stack.anny.person_create_booking(other["id"], world.at(2, 9), world.at(2, 10))
    world.stack.graph.person_create_event("room.beta@contoso.example", subject="Existing",
                                          start=world.utc(3, 9).isoformat()[:19],
                                          end=world.utc(3, 10).isoformat()[:19], time_zone="UTC")
    await world.settle()
    added = await manage(world, "POST", "rules", json={"anny_resource": other["id"],
                                                       "room": "room.beta@contoso.example"})
    assert added.status_code == 200
    await world.settle()
    beta_events = [e for e in world.stack.graph.events("room.beta@contoso.example") if "anny" in e["categories"]]
    assert len(beta_events) == 1
    assert [b["resource"]["id"] for b in blockers(world)] == [other["id"]]


async def test_deactivate_stops_sync_and_removes_nothing(world: World) -> None:
    meeting(world, 2, 9)
    world.stack.anny.person_create_booking(world.resource, world.at(3, 9), world.at(3, 10))
    await world.settle()
    answer = await manage(world, "POST", "deactivate")
    assert answer.json() == {"state": "inactive", "subscriptions_removed": 1}
    assert world.stack.graph.subscriptions() == []
    world.stack.anny.person_create_booking(world.resource, world.at(4, 9), world.at(4, 10))
    await world.settle()
    assert len(world.mirror_events()) == 1 and len(blockers(world)) == 1  # kept, and nothing new synced


async def test_delete_removes_only_what_the_app_created_and_reports_it(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sync.admin.DELETION_GRACE_S", 0)  # one instance here: nobody else to wait for
    meeting(world, 2, 9)
    world.stack.anny.person_create_booking(world.resource, world.at(3, 9), world.at(3, 10))
    person_blocker = world.stack.anny.person_create_blocker(world.resource, world.at(5, 9), world.at(5, 10))
    await world.settle()
    assert len(world.mirror_events()) == 2  # the booking and the person-made blocker
    report = (await manage(world, "POST", "delete", json={"confirm": "delete"})).json()
    assert report["removed"] == {"events": 2, "blockers": 1, "subscriptions": 1, "rules": 1}
    assert world.mirror_events() == []
    assert blockers(world) == [world.stack.anny.booking(person_blocker["id"])]
    assert [e["subject"] for e in world.stack.graph.events(world.room)] == ["Planning"]  # the person's meeting
    assert world.stack.graph.subscriptions() == []
    # the app keeps working after a deletion: a new install starts from empty state
    status = (await manage(world, "GET", "status")).json()
    assert status["state"] == "inactive" and status["rules"] == []
    added = await manage(world, "POST", "rules", json={"anny_resource": world.resource, "room": world.room})
    assert added.status_code == 200


async def test_rules_remove_deletes_the_rooms_mirrors(world: World) -> None:
    meeting(world, 2, 9)
    world.stack.anny.person_create_booking(world.resource, world.at(3, 9), world.at(3, 10))
    await world.settle()
    removed = (await manage(world, "DELETE", f"rules/{world.resource}")).json()
    assert removed["removed"] == {"events": 1, "blockers": 1, "subscriptions": 1, "rules": 1}
    assert world.mirror_events() == [] and blockers(world) == []
    assert (await manage(world, "GET", "rules")).json() == []


async def test_cli_runs_the_commands_through_the_admin_api(world: World, capsys: pytest.CaptureFixture[str]
                                                           ) -> None:
    api = f"{world.stack.host.url}/api/manage"
    code = await _cli(["--json", "--api", api, "--key", world.stack.keys.master, "status"])
    assert code == 0 and '"state": "active"' in capsys.readouterr().out
    code = await _cli(["--api", api, "--key", "wrong", "status"])
    assert code == 2 and "401" in capsys.readouterr().err


async def _cli(argv: list[str]) -> int:
    import asyncio

    return await asyncio.to_thread(main, argv)


async def test_replay_poison_puts_parked_work_back_as_the_app_and_loses_nothing(world: World) -> None:
    """The template turns shared keys off, so the portal would need a data role of the admin's
    own: `replay-poison` moves the parked items back through the admin API, as the app."""
    world.stack.anny.person_create_booking(world.resource, world.at(2, 9), world.at(2, 10))
    await world.stack.anny.settle()
    world.stack.anny.force_status(401)  # the token was revoked: the work item is parked
    await world.settle()
    world.stack.anny.force_status(None)  # ... and fixed
    assert len(await world.stack.poison_messages()) == 1 and world.mirror_events() == []
    answer = await manage(world, "POST", "poison/replay")
    assert answer.status_code == 200
    assert answer.json() == {"moved back": {"sync-work": 1, "sync-backfill": 0}, "still in the poison queues": 0}
    await world.settle()
    assert len(world.mirror_events()) == 1 and await world.stack.poison_messages() == []
    again = (await manage(world, "POST", "poison/replay")).json()
    assert again == {"moved back": {"sync-work": 0, "sync-backfill": 0}, "still in the poison queues": 0}


async def test_replay_poison_stops_at_its_limit_and_leaves_the_rest_ready_for_the_next_call(world: World) -> None:
    storage = StorageSettings(connection_string=world.stack.azurite.connection_string)
    queues = WorkQueues(storage)
    try:
        for queue, booking_id in (("sync-work-poison", "1"), ("sync-work-poison", "2"), ("sync-backfill-poison", "3")):
            client, _ = queue_client(storage, queue)
            async with client:
                with contextlib.suppress(ResourceExistsError):
                    await client.create_queue()
                await client.send_message(encode(BookingWork(booking_id)).encode())
        assert await queues.replay_poison(limit=2) == {"sync-work": 2, "sync-backfill": 0}
        # the backfill item was not even received, so it is not leased away from the next call
        assert await queues.replay_poison(limit=2) == {"sync-work": 0, "sync-backfill": 1}
    finally:
        await queues.close()
