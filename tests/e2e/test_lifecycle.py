"""The admin's lifecycle end to end (behaviour: rules, activation and removal; issue 13):
reactivation transfers only what is new,
previews write nothing, the brake on mass deletion holds a rule, the catch-up sweep and the nightly run
repair what was missed and say so in `status`. Through the runner, Azurite and both emulators."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest

from sync.cli import main
from sync.errors import RemoteUnavailable
from sync.state import IntegrationStatus
from tests.e2e.conftest import World, run_admin
from tests.e2e.test_inbound import blockers, meeting
from tests.e2e.test_rules import BETA, manage


async def fire(world: World, timer: str) -> None:
    """The Functions host firing a timer trigger of the app."""
    await world.stack.host.run(world.stack.host.fire_timer(timer))
    await world.settle()


async def sweep_now(world: World) -> dict:
    await world.state.update_status(lambda s: setattr(s, "last_sweep_at", None))  # due again
    await fire(world, "sweep")
    return (await manage(world, "GET", "status")).json()["last_sweep"]


async def nightly_now(world: World) -> dict:
    def yesterday(status: IntegrationStatus) -> None:
        status.nightly_day, status.nightly_claimed_at = "2000-01-01", None

    await world.state.update_status(yesterday)
    await fire(world, "nightly")
    return (await manage(world, "GET", "status")).json()["last_nightly"]


def anny_mirrors(world: World) -> list[str]:
    return sorted(e["subject"] for e in world.mirror_events())


def blocker_titles(world: World) -> list[str]:
    return sorted(b["title"] for b in blockers(world))


# --- reactivation and preview -------------------------------------------------------------------------


async def test_reactivation_transfers_only_what_is_new_and_resync_brings_the_rest(world: World) -> None:
    kept = world.stack.anny.person_create_booking(world.resource, world.at(2, 9), world.at(2, 10))
    linked = meeting(world, 3, 9, subject="Linked")
    await world.settle()
    assert (await manage(world, "POST", "deactivate")).status_code == 200
    world.stack.anny.person_create_booking(world.resource, world.at(4, 9), world.at(4, 10))  # while off
    meeting(world, 5, 9, subject="While off")
    world.stack.anny.person_move_booking(kept["id"], world.at(2, 11), world.at(2, 12))  # linked: catches up
    world.stack.graph.person_update_event(world.room, linked["id"], subject="Linked, renamed")
    await world.settle()
    writes_before = world.stack.graph.call_counts().get("POST /users/{mailbox}/events", 0)

    preview = (await manage(world, "POST", "activate", json={"dry_run": True})).json()
    rule = preview["rules"][0]
    assert preview["dry_run"] and rule["mode"] == "reactivation"
    for direction in ("anny → Outlook", "Outlook → anny"):
        assert rule[direction]["update"] == 1 and rule[direction]["left unsynced"] == 1, rule
        assert "create" not in rule[direction] and "delete" not in rule[direction]
    assert rule["first_items"]["anny → Outlook"][0]["booking_id"] == kept["id"]
    assert world.stack.graph.call_counts().get("POST /users/{mailbox}/events", 0) == writes_before
    assert (await manage(world, "GET", "status")).json()["state"] == "inactive"  # the preview changed nothing
    typo = await manage(world, "POST", "activate", json={"dry_run": "ture"})
    assert typo.status_code == 400 and "dry_run must be true or false" in typo.json()["error"]
    assert (await manage(world, "GET", "status")).json()["state"] == "inactive"

    report = (await manage(world, "POST", "activate")).json()
    assert report["rules"][0]["mode"] == "reactivation" and "stay unsynced" in report["note"]
    assert report["rules"][0]["anny → Outlook"]["left unsynced"] == 1
    assert report["rules"][0]["Outlook → anny"]["left unsynced"] == 1
    await world.settle()
    assert len(world.mirror_events()) == 1
    assert world.mirror_events()[0]["start"]["dateTime"].startswith(world.utc(2, 11).strftime("%Y-%m-%dT%H:%M"))
    assert blocker_titles(world) == ["Linked, renamed"]

    world.stack.anny.person_create_booking(world.resource, world.at(6, 9), world.at(6, 10))  # after: synced
    meeting(world, 7, 9, subject="After")
    await world.settle()
    assert len(world.mirror_events()) == 2 and blocker_titles(world) == ["After", "Linked, renamed"]
    await nightly_now(world)  # the nightly run leaves what was created while off alone, too
    assert len(world.mirror_events()) == 2 and len(blockers(world)) == 2

    resynced = (await manage(world, "POST", "resync", json={"rule": world.resource})).json()
    assert resynced["rules"][0]["anny → Outlook"]["create"] == 1
    await world.settle()
    assert len(world.mirror_events()) == 3 and blocker_titles(world) == ["After", "Linked, renamed", "While off"]


async def test_first_activation_preview_counts_and_writes_nothing(world: World,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    await manage(world, "POST", "deactivate")
    await manage(world, "DELETE", f"rules/{world.resource}")
    for day in (2, 3, 4):
        world.stack.anny.person_create_booking(world.resource, world.at(day, 9), world.at(day, 10))
    meeting(world, 5, 9)
    await world.settle()
    assert (await manage(world, "POST", "rules", json={"anny_resource": world.resource,
                                                       "room": world.room})).status_code == 200
    world.stack.graph.reset_counters()
    api = (await manage(world, "POST", "activate", json={"dry_run": True})).json()
    code = await asyncio.to_thread(main, ["activate", "--dry-run", "--json"])
    cli = json.loads(capsys.readouterr().out)
    assert code == 0 and cli["rules"] == api["rules"]  # one implementation behind both
    rule = api["rules"][0]
    assert rule["mode"] == "initial"
    assert rule["anny → Outlook"] == {"create": 3} and rule["Outlook → anny"] == {"create": 1}
    assert len(rule["first_items"]["anny → Outlook"]) == 3
    writes = {k: v for k, v in world.stack.graph.call_counts().items() if not k.startswith("GET") and k != "total"}
    assert writes == {} and world.mirror_events() == [] and blockers(world) == []
    code = await asyncio.to_thread(main, ["activate", "--dry-run"])
    text = capsys.readouterr().out
    assert code == 0 and "nothing was written" in text and "{" not in text
    assert f"{world.resource} → {world.room} (initial)" in text
    assert "  anny → Outlook   create 3" in text and "  Outlook → anny   create 1" in text


# --- the brake on mass deletion -----------------------------------------------------------------------

BRAKE = {"DELETION_BRAKE_MIN_ITEMS": "3"}  # more than 3 and more than 50 %: 4 of 5 holds


async def test_a_nightly_run_whose_renewals_graph_throttles_still_reconciles(world: World) -> None:
    """A 429 that outlasts the SDK's retries on a subscription renewal: the renewal waits for the
    next run (the sweep recreates a subscription that expires meanwhile), the run goes on."""
    [sub] = await world.state.list_subscriptions()
    sub.expires_at = datetime.now(UTC) + timedelta(days=1)  # due for renewal
    await world.state.save_subscription(sub)
    world.stack.graph.add_fault(429, route="PATCH /subscriptions/*", count=4, retry_after=1)  # every SDK attempt
    world.stack.anny.set_webhook_faults(drop_next=1)  # the booking's webhook is lost: the nightly run repairs it
    world.stack.anny.person_create_booking(world.resource, world.at(2, 9), world.at(2, 10))
    await world.settle()
    assert world.mirror_events() == []
    nightly = await nightly_now(world)
    assert nightly["error"] is None and nightly["checked"]["subscriptions renewed"] == 0
    assert nightly["repaired"] == {"missed booking": 1} and len(world.mirror_events()) == 1  # reconciled all the same
    [still] = await world.state.list_subscriptions()
    assert still.expires_at == sub.expires_at  # to be renewed by the next run


@pytest.mark.parametrize("stack", [BRAKE], indirect=True)
async def test_nightly_run_that_would_delete_most_mirror_events_holds_the_rule(world: World) -> None:
    bookings = [world.stack.anny.person_create_booking(world.resource, world.at(2 + i, 9), world.at(2 + i, 10))
                for i in range(5)]
    await world.settle()
    assert len(world.mirror_events()) == 5
    world.stack.anny.set_webhook_faults(drop_next=4)  # anny "loses" four bookings without telling us
    for booking in bookings[:4]:
        world.stack.anny.person_delete_booking(booking["id"])
    await world.settle()
    nightly = await nightly_now(world)
    assert nightly["held"] == [world.resource]
    assert len(world.mirror_events()) == 5  # nothing deleted
    status = (await manage(world, "GET", "status")).json()
    rule = status["rules"][0]
    assert rule["state"] == "held" and "4 of 5 mirror(s) would be deleted" in rule["held"]
    code = await asyncio.to_thread(main, ["status"])
    assert code == 0
    world.stack.anny.person_create_booking(world.resource, world.at(9, 9), world.at(9, 10))
    await world.settle()
    assert len(world.mirror_events()) == 5  # a held rule is paused as a whole

    refused = await manage(world, "POST", "resync", json={"rule": world.resource})
    assert refused.status_code == 400 and "--confirm-deletions" in refused.json()["error"]
    preview = (await manage(world, "POST", "resync", json={"rule": world.resource, "dry_run": True})).json()
    assert preview["rules"][0]["anny → Outlook"]["delete if gone"] == 4
    released = await manage(world, "POST", "resync", json={"rule": world.resource, "confirm_deletions": True})
    assert released.status_code == 200
    await world.settle()
    assert len(world.mirror_events()) == 2  # the one left and the one made while held
    assert (await manage(world, "GET", "status")).json()["rules"][0]["state"] == "OK"


@pytest.mark.parametrize("stack", [BRAKE], indirect=True)
async def test_a_room_run_that_would_delete_most_blockers_holds_the_rule(world: World) -> None:
    meetings = [meeting(world, 2 + i, 9, subject=f"M{i}") for i in range(5)]
    await world.settle()
    assert len(blockers(world)) == 5
    world.stack.graph.set_notification_faults(drop_next=4)  # the sweep's delta read sees all four at once
    for m in meetings[:4]:
        world.stack.graph.person_delete_event(world.room, m["id"])
    await world.settle()
    sweep = await sweep_now(world)
    assert sweep["held"] == [world.resource] and sweep["repaired"] == {}
    assert len(blockers(world)) == 5
    status = (await manage(world, "GET", "status")).json()
    assert status["rules"][0]["state"] == "held"
    assert "Outlook → anny: 4 of 5 mirror(s)" in status["rules"][0]["held"]
    preview = (await manage(world, "POST", "resync", json={"rule": world.resource, "dry_run": True})).json()
    assert "Outlook → anny: 4 of 5 mirror(s) would be deleted" in preview["rules"][0]["would_hold"]
    await manage(world, "POST", "resync", json={"rule": world.resource, "confirm_deletions": "true"})
    await world.settle()
    assert blocker_titles(world) == ["M4"]


async def test_few_deletions_never_hold(world: World) -> None:
    meetings = [meeting(world, 2 + i, 9, subject=f"M{i}") for i in range(3)]
    await world.settle()
    for m in meetings:
        world.stack.graph.person_delete_event(world.room, m["id"])
    await world.settle()
    assert blockers(world) == []
    assert (await manage(world, "GET", "status")).json()["rules"][0]["state"] == "OK"


# --- the catch-up sweep and the drift report ----------------------------------------------------------


async def test_sweep_repairs_a_lost_webhook_and_a_lost_notification_and_reports_them(
        world: World, capsys: pytest.CaptureFixture[str]) -> None:
    world.stack.anny.set_webhook_faults(drop_next=1)
    booking = world.stack.anny.person_create_booking(world.resource, world.at(2, 9), world.at(2, 10))
    world.stack.graph.set_notification_faults(drop_next=1)
    meeting(world, 3, 9, subject="Lost")
    await world.settle()
    assert world.mirror_events() == [] and blockers(world) == []
    world.stack.anny.reset_counters()
    sweep = await sweep_now(world)
    assert len(world.mirror_events()) == 1 and blocker_titles(world) == ["Lost"]
    assert sweep["repaired"] == {"missed booking": 1, "missed meeting": 1}
    reads = world.stack.anny.counters().get("GET /api/v1/bookings", 0)
    assert reads == 1  # newest first, stopped at the high-water mark
    runs = (await manage(world, "GET", "status", params={"drift": "true"})).json()["runs"]
    drift = next(run for run in runs if run["kind"] == "sweep")["items"]
    assert {"kind": "missed booking", "room": world.room, "booking_id": booking["id"]} in drift
    code = await asyncio.to_thread(main, ["status", "--drift"])
    text = capsys.readouterr().out
    assert code == 0 and "missed booking" in text and booking["id"] in text

    world.stack.anny.reset_counters()
    quiet = await sweep_now(world)  # nothing changed since: one read of anny, nothing repaired
    assert quiet["repaired"] == {} and world.stack.anny.counters().get("GET /api/v1/bookings", 0) == 1
    assert len(world.mirror_events()) == 1


async def test_a_sweep_catches_up_every_room_it_can_reach_when_anny_and_another_room_fail(world: World) -> None:
    """anny answering 503 to the sweep's list, and Graph 503 for one room beyond the SDK's retries:
    the other room's lost notification is repaired all the same, and the run says what failed."""
    beta = world.stack.anny.add_resource("Room Beta", timezone="Europe/Berlin")
    world.stack.graph.add_room(BETA, "Room Beta")
    await run_admin(world.stack, "rules.add", anny_resource=beta["id"], room=BETA)
    await world.settle()
    world.stack.graph.set_notification_faults(drop_next=1)
    start = world.utc(3, 9)
    world.stack.graph.person_create_event(BETA, start=start.isoformat()[:19],
                                          end=(start + timedelta(hours=1)).isoformat()[:19], time_zone="UTC",
                                          organizer="grace@contoso.example", subject="Lost in Beta")
    await world.settle()
    assert blocker_titles(world) == []
    world.stack.anny.fail_next(503, count=50, route="GET /api/v1/bookings")
    world.stack.graph.add_fault(503, route="*", mailbox=world.room, count=50, retry_after=None)
    await world.state.update_status(lambda s: setattr(s, "last_sweep_at", None))
    with pytest.raises(RemoteUnavailable):
        await world.stack.host.run(world.stack.host.fire_timer("sweep"))
    await world.settle()
    assert blocker_titles(world) == ["Lost in Beta"]
    sweep = (await manage(world, "GET", "status")).json()["last_sweep"]
    assert sweep["repaired"] == {"missed meeting": 1} and "503" in sweep["error"]


async def test_a_nightly_run_whose_renewal_graph_refuses_still_renews_the_others_and_reconciles(
        world: World) -> None:
    beta = world.stack.anny.add_resource("Room Beta", timezone="Europe/Berlin")
    world.stack.graph.add_room(BETA, "Room Beta")
    await run_admin(world.stack, "rules.add", anny_resource=beta["id"], room=BETA)
    await world.settle()
    subs = await world.state.list_subscriptions()
    for sub in subs:
        sub.expires_at = datetime.now(UTC) + timedelta(days=1)  # due for renewal
        await world.state.save_subscription(sub)
    world.stack.graph.add_fault(503, route="PATCH /subscriptions/*", count=4, retry_after=1)  # the 1st: 4 tries
    world.stack.anny.set_webhook_faults(drop_next=1)  # a lost webhook: the nightly run repairs it
    world.stack.anny.person_create_booking(world.resource, world.at(2, 9), world.at(2, 10))
    await world.settle()
    nightly = await nightly_now(world)
    assert nightly["checked"]["subscriptions renewed"] == 1
    assert nightly["repaired"] == {"missed booking": 1} and len(world.mirror_events()) == 1
    renewed = [s.expires_at > datetime.now(UTC) + timedelta(days=2) for s in await world.state.list_subscriptions()]
    assert sorted(renewed) == [False, True]  # the other room's renewal went ahead


async def test_sweep_waits_for_its_interval_and_recreates_a_lost_subscription(world: World) -> None:
    await sweep_now(world)
    runs = len((await manage(world, "GET", "status")).json()["runs"])
    await fire(world, "sweep")  # fired again within the interval: does nothing
    assert len((await manage(world, "GET", "status")).json()["runs"]) == runs
    sub = (await world.state.list_subscriptions())[0]
    world.stack.graph.expire_subscription(sub.subscription_id)
    sub.expires_at = datetime.now(UTC) - timedelta(minutes=1)
    await world.state.save_subscription(sub)
    sweep = await sweep_now(world)
    assert sweep["repaired"] == {"subscription re-created": 1}
    assert len(world.stack.graph.subscriptions()) == 1


async def test_the_nightly_run_removes_the_blocker_of_a_meeting_whose_deletion_delta_never_reported(
        world: World) -> None:
    """Graph's delta drops some deletions (microsoft-graph-docs #11728): only a comparison of the
    whole window finds them, and the nightly run makes one without a new baseline."""
    gone = meeting(world, 3, 9, subject="Gone quietly")
    meeting(world, 4, 9, subject="Still here")
    await world.settle()
    assert blocker_titles(world) == ["Gone quietly", "Still here"]
    world.stack.graph.set_delta_faults(omit_removals=1)
    world.stack.graph.person_delete_event(world.room, gone["id"])
    await world.settle()
    assert blocker_titles(world) == ["Gone quietly", "Still here"]  # the notification came, the feed said nothing
    await sweep_now(world)
    assert blocker_titles(world) == ["Gone quietly", "Still here"]  # the sweep reads the feed only
    state = await world.state.get_room_state(world.room)
    nightly = await nightly_now(world)
    assert blocker_titles(world) == ["Still here"] and nightly["repaired"] == {"missed meeting": 1}
    assert (await world.state.get_room_state(world.room)).delta_link != ""  # no new baseline was needed
    assert state.delta_link


async def test_nightly_undoes_an_outlook_edit_and_respects_an_anny_deletion_and_runs_once_a_day(
        world: World) -> None:
    world.stack.anny.person_create_booking(world.resource, world.at(2, 9), world.at(2, 10))
    meeting(world, 3, 9, subject="Kept")
    await world.settle()
    world.stack.graph.set_notification_faults(drop_next=1)
    world.stack.graph.person_update_event(world.room, world.mirror_events()[0]["id"], subject="Edited in Outlook")
    world.stack.anny.set_webhook_faults(drop_next=1)
    world.stack.anny.person_delete_booking(blockers(world)[0]["id"])
    await world.settle()
    nightly = await nightly_now(world)
    assert nightly["repaired"] == {"Outlook edit undone": 1, "blocker deleted in anny": 1}
    assert anny_mirrors(world) != ["Edited in Outlook"] and blockers(world) == []
    runs = len((await manage(world, "GET", "status")).json()["runs"])
    await fire(world, "nightly")  # the next hourly tick of the same local day
    assert len((await manage(world, "GET", "status")).json()["runs"]) == runs


async def test_status_reads_as_aligned_text(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    world.stack.anny.person_create_booking(world.resource, world.at(2, 9), world.at(2, 10))
    meeting(world, 3, 9)
    await world.settle()
    await sweep_now(world)
    code = await asyncio.to_thread(main, ["status"])
    text = capsys.readouterr().out
    assert code == 0 and "None" not in text and "{" not in text
    lines = text.splitlines()
    assert lines[0].startswith("state          active since ")
    header = next(line for line in lines if line.strip().startswith("room "))
    row = next(line for line in lines if line.strip().startswith(world.room))
    assert row.index(world.resource) == header.index("anny resource")
    assert " OK " in row and "last sweep     " in text
    api = (await manage(world, "GET", "status")).json()
    code = await asyncio.to_thread(main, ["status", "--json"])
    assert json.loads(capsys.readouterr().out)["rules"] == api["rules"]
