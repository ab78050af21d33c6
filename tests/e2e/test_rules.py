"""Rules (behaviour: rules, activation and removal; issue 13): what may be mapped, refused clearly
and storing nothing; the same answers from the admin API, the local CLI and the CLI through the admin API."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from sync.cli import main
from sync.state import Rule
from tests.e2e.conftest import World
from tests.e2e.test_inbound import blockers, meeting

BETA = "room.beta@contoso.example"


async def manage(world: World, method: str, path: str, **kwargs: object) -> httpx.Response:
    async with httpx.AsyncClient(base_url=world.stack.host.url, timeout=60) as client:
        return await client.request(method, f"/api/manage/{path}",
                                    headers={"x-functions-key": world.stack.keys.master}, **kwargs)


async def cli(world: World, capsys: pytest.CaptureFixture[str], *argv: str, remote: bool = False
              ) -> tuple[int, str, str]:
    """`python -m sync …` locally (the app's settings in the environment) or through the admin API."""
    via = ["--api", f"{world.stack.host.url}/api/manage", "--key", world.stack.keys.master] if remote else []
    code = await asyncio.to_thread(main, [*argv, *via])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def beta(world: World) -> dict:
    """A second, unmapped anny parent resource and room."""
    world.stack.graph.add_room(BETA, "Room Beta")
    return world.stack.anny.add_resource("Room Beta", timezone="Europe/Berlin")


async def refused(world: World, capsys: pytest.CaptureFixture[str], resource: str, room: str) -> str:
    """Add through all three ways; each must refuse with the same message and store nothing."""
    answer = await manage(world, "POST", "rules", json={"anny_resource": resource, "room": room})
    assert answer.status_code == 400, answer.text
    message = answer.json()["error"]
    for remote in (False, True):
        code, out, _ = await cli(world, capsys, "rules", "add", "--anny-resource", resource, "--room", room,
                                 "--json", remote=remote)
        assert code == 2
        assert message in json.loads(out)["error"]
    assert [r.anny_resource_id for r in await world.state.list_rules()] == [world.resource]
    return message


async def test_child_resource_is_refused_and_its_bookings_stay_in_the_parents_room(
        world: World, beta: dict, capsys: pytest.CaptureFixture[str]) -> None:
    desk = world.stack.anny.person_create_booking(world.child, world.at(2, 9), world.at(2, 10))
    await world.settle()
    message = await refused(world, capsys, world.child, BETA)
    assert f"is a child of {world.resource}: map {world.resource} instead" in message
    world.stack.anny.person_move_booking(desk["id"], world.at(2, 11), world.at(2, 12))
    await world.settle()
    assert len(world.mirror_events()) == 1  # still in the parent's room
    assert [e for e in world.stack.graph.events(BETA)] == []


async def test_a_child_rule_stored_by_an_older_version_never_pulls_bookings_out_of_the_parents_room(
        world: World, beta: dict) -> None:
    await world.state.add_rule(Rule(world.child, BETA))  # bypasses the checks, as before issue 13
    world.stack.anny.person_create_booking(world.child, world.at(2, 9), world.at(2, 10))
    await world.settle()
    assert len(world.mirror_events()) == 1
    assert world.stack.graph.events(BETA) == []


async def test_unknown_resource_is_refused(world: World, beta: dict, capsys: pytest.CaptureFixture[str]) -> None:
    message = await refused(world, capsys, "no-such-resource", BETA)
    assert "unknown anny resource" in message and "python -m sync resources" in message


@pytest.mark.parametrize("address", ["someone@contoso.example", "nobody@contoso.example"])
async def test_an_address_that_is_not_a_room_in_places_is_refused(
        world: World, beta: dict, capsys: pytest.CaptureFixture[str], address: str) -> None:
    world.stack.graph.add_mailbox("someone@contoso.example", "Someone")  # a user mailbox
    message = await refused(world, capsys, beta["id"], address)
    assert "not a room in Microsoft Graph Places" in message and "python -m sync rooms" in message
    assert world.stack.graph.events("someone@contoso.example") == []


async def test_resource_or_room_mapped_already_is_refused(world: World, beta: dict,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert "anny resource is mapped already" in await refused(world, capsys, world.resource, BETA)
    assert "room is mapped already" in await refused(world, capsys, beta["id"], world.room.upper())


@pytest.mark.parametrize("failing", [
    "anny lists the bookings",  # after the subscription was made
    "Graph creates the subscription",
    "Graph reads the room",  # after the mirror event was written
])
async def test_a_rule_whose_initial_sync_fails_while_active_is_not_kept(world: World, beta: dict,
                                                                         failing: str) -> None:
    world.stack.anny.person_create_booking(beta["id"], world.at(2, 9), world.at(2, 10))
    world.stack.graph.person_create_event(BETA, subject="Existing", start=world.utc(3, 9).isoformat()[:19],
                                          end=world.utc(3, 10).isoformat()[:19], time_zone="UTC")
    await world.settle()
    if failing == "anny lists the bookings":
        world.stack.anny.fail_next(500, count=1, route="GET /api/v1/bookings")
    elif failing == "Graph creates the subscription":
        world.stack.graph.add_fault(500, route="POST /subscriptions", count=1)
    else:
        world.stack.graph.add_fault(500, route="GET /users/{mailbox}/calendarView/delta", count=1, mailbox=BETA)
    answer = await manage(world, "POST", "rules", json={"anny_resource": beta["id"], "room": BETA})
    assert answer.status_code == 502 and "rule not added" in answer.json()["error"]
    assert [r.anny_resource_id for r in await world.state.list_rules()] == [world.resource]
    assert [s["resource"] for s in world.stack.graph.subscriptions()] == [f"users/{world.room}/events"]
    assert [e["subject"] for e in world.stack.graph.events(BETA)] == ["Existing"]
    assert blockers(world) == []
    again = await manage(world, "POST", "rules", json={"anny_resource": beta["id"], "room": BETA})
    assert again.status_code == 200  # nothing was left behind that would refuse it
    await world.settle()
    assert len([e for e in world.stack.graph.events(BETA) if "anny" in e["categories"]]) == 1


async def test_rules_list_and_add_answer_the_same_through_cli_and_api(
        world: World, beta: dict, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = await cli(world, capsys, "rules", "add", "--anny-resource", beta["id"], "--room", BETA, "--json",
                             remote=True)
    assert code == 0 and json.loads(out)["room"] == BETA
    api = (await manage(world, "GET", "rules")).json()
    code, out, _ = await cli(world, capsys, "--json", "rules", "list")
    assert code == 0 and json.loads(out) == api
    code, text, _ = await cli(world, capsys, "rules", "list")
    assert code == 0 and text.splitlines()[0].split()[:2] == ["anny_resource_id", "room"]


async def test_delete_says_what_it_would_remove_and_needs_confirmation(
        world: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sync.admin.DELETION_GRACE_S", 0)
    meeting(world, 2, 9)
    world.stack.anny.person_create_booking(world.resource, world.at(3, 9), world.at(3, 10))
    await world.settle()
    unconfirmed = await manage(world, "POST", "delete")
    assert unconfirmed.status_code == 400
    body = unconfirmed.json()
    assert body["needs_confirmation"] is True
    assert body["would_remove"] == {"events": 1, "blockers": 1, "subscriptions": 1, "rules": 1}
    assert "1 mirror event(s)" in body["error"] and '{"confirm": "delete"}' in body["error"]
    wrong = await manage(world, "POST", "delete", json={"confirm": "yes"})
    assert wrong.status_code == 400
    for remote in (False, True):
        code, _, err = await cli(world, capsys, "delete", remote=remote)
        assert code == 2 and "1 mirror blocker(s)" in err and "--yes" in err
    assert len(world.mirror_events()) == 1 and len(blockers(world)) == 1  # nothing removed yet
    code, out, _ = await cli(world, capsys, "delete", "--yes", "--json", remote=True)
    assert code == 0 and json.loads(out)["removed"] == {"events": 1, "blockers": 1, "subscriptions": 1, "rules": 1}
    assert world.mirror_events() == [] and blockers(world) == []
