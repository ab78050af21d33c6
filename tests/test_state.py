"""The Table Storage repository against Azurite: every operation, races and limits."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from azure.data.tables import UpdateMode

from devhost.azurite import Azurite
from sync.errors import ConcurrencyError, EntityTooLargeError, NotFoundError, RoomNotMapped
from sync.keys import encode_key
from sync.state import IntegrationStatus, Link, RoomState, Rule, Subscription
from tests.state_tables import AllTables
from tests.test_keys import GRAPH_ID

ROOM = "Room.Alpha@Contoso.example"


async def test_rules_add_get_list_remove(store: AllTables) -> None:
    await store.add_rule(Rule("res-1", ROOM))
    await store.add_rule(Rule("res/2#?", "room.beta@contoso.example"))
    assert (await store.get_rule("res-1")).room == "room.alpha@contoso.example"
    assert (await store.get_rule_for_room("ROOM.ALPHA@contoso.example")).anny_resource_id == "res-1"
    assert [r.anny_resource_id for r in await store.list_rules()] == ["res-1", "res/2#?"]
    removed = await store.remove_rule("res/2#?")
    assert removed.room == "room.beta@contoso.example"
    assert await store.get_rule_for_room("room.beta@contoso.example") is None
    assert [r.anny_resource_id for r in await store.list_rules()] == ["res-1"]


async def test_rule_for_a_mapped_resource_or_room_is_refused(store: AllTables) -> None:
    await store.add_rule(Rule("res-1", ROOM))
    with pytest.raises(ConcurrencyError, match="mapped already"):
        await store.add_rule(Rule("res-1", "other@contoso.example"))
    with pytest.raises(ConcurrencyError, match="mapped already"):
        await store.add_rule(Rule("res-9", ROOM.upper()))
    assert len(await store.list_rules()) == 1


async def test_removing_an_unknown_rule_says_so(store: AllTables) -> None:
    with pytest.raises(NotFoundError, match="no rule"):
        await store.remove_rule("nope")


async def test_link_is_found_by_anny_id_and_by_room_and_event(store: AllTables) -> None:
    link = Link(room=ROOM, origin="anny", anny_id="b-1", state="pending", transaction_id="tx")
    await store.save_link(link)
    assert (await store.link_by_anny_id("b-1")).state == "pending"
    link.event_id, link.state, link.event_change_key = GRAPH_ID, "synced", "ck1"
    await store.save_link(link)
    by_event = await store.link_by_event(ROOM.lower(), GRAPH_ID)
    assert by_event is not None and by_event.anny_id == "b-1" and by_event.event_change_key == "ck1"
    assert [x.anny_id for x in await store.links_of_room(ROOM)] == ["b-1"]
    await store.delete_link(await store.link_by_anny_id("b-1"))
    assert await store.link_by_anny_id("b-1") is None
    assert await store.link_by_event(ROOM, GRAPH_ID) is None


async def test_outlook_origin_link_is_owned_by_the_event(store: AllTables) -> None:
    link = await store.save_link(Link(room=ROOM, origin="outlook", event_id=GRAPH_ID, state="pending"))
    link.anny_id = "blk-7"
    link.state = "synced"
    await store.save_link(link)
    assert (await store.link_by_anny_id("blk-7")).event_id == GRAPH_ID
    assert (await store.owner_link(link)).state == "synced"


async def test_moving_a_link_to_another_event_drops_the_old_index(store: AllTables) -> None:
    link = await store.save_link(Link(room=ROOM, origin="anny", anny_id="b-1", event_id="old"))
    previous = store.index_key_of(link)
    link.event_id = "new"
    await store.save_link(link, previous_index=previous)
    assert await store.link_by_event(ROOM, "old") is None
    assert (await store.link_by_event(ROOM, "new")).anny_id == "b-1"


async def test_concurrent_link_writers_exactly_one_wins(store: AllTables) -> None:
    await store.save_link(Link(room=ROOM, origin="anny", anny_id="b-1", event_id="e"))
    first, second = await store.link_by_anny_id("b-1"), await store.link_by_anny_id("b-1")
    first.fingerprint, second.fingerprint = "writer-1", "writer-2"
    results = await asyncio.gather(store.save_link(first), store.save_link(second), return_exceptions=True)
    lost = [r for r in results if isinstance(r, ConcurrencyError)]
    assert len(lost) == 1
    winner = "writer-1" if results[0] is first else "writer-2"
    assert (await store.link_by_anny_id("b-1")).fingerprint == winner


async def test_two_creators_of_one_link_exactly_one_wins(store: AllTables) -> None:
    a = Link(room=ROOM, origin="anny", anny_id="b-2", transaction_id="x")
    b = Link(room=ROOM, origin="anny", anny_id="b-2", transaction_id="y")
    results = await asyncio.gather(store.save_link(a), store.save_link(b), return_exceptions=True)
    assert sum(isinstance(r, ConcurrencyError) for r in results) == 1
    assert (await store.link_by_anny_id("b-2")).transaction_id in {"x", "y"}


async def test_subscriptions_round_trip(store: AllTables) -> None:
    expires = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    await store.save_subscription(Subscription("sub/1", ROOM, expires, "state-secret"))
    await store.save_subscription(Subscription("sub-2", "other@contoso.example", expires, "s2"))
    sub = await store.get_subscription("sub/1")
    assert sub.room == ROOM.lower() and sub.expires_at == expires and sub.client_state == "state-secret"
    assert [s.subscription_id for s in await store.subscriptions_of_room(ROOM)] == ["sub/1"]
    assert len(await store.list_subscriptions()) == 2
    await store.delete_subscription("sub/1")
    assert await store.get_subscription("sub/1") is None


async def test_room_state_marker_is_etag_guarded(store: AllTables) -> None:
    fresh = await store.get_room_state(ROOM)
    assert fresh.etag is None and fresh.delta_link == ""
    fresh.delta_link = "https://graph/delta?token=1"
    await store.save_room_state(fresh)
    one, two = await store.get_room_state(ROOM), await store.get_room_state(ROOM)
    one.run_id = "run-a"
    await store.save_room_state(one)
    two.run_id = "run-b"
    with pytest.raises(ConcurrencyError):
        await store.save_room_state(two)
    assert (await store.get_room_state(ROOM)).run_id == "run-a"
    assert [r.room for r in await store.list_room_states()] == [ROOM.lower()]
    await store.delete_room_state(ROOM)
    assert (await store.get_room_state(ROOM)).etag is None


async def test_integration_status_round_trips_and_races(store: AllTables) -> None:
    status = await store.get_status()
    assert status.state == "inactive"
    status.state = "active"
    status.activated_at = datetime(2026, 11, 24, 7, 0, tzinfo=UTC)
    await store.save_status(status)
    stale = IntegrationStatus(state="deleting")
    with pytest.raises(ConcurrencyError):
        await store.save_status(stale)
    assert (await store.get_status()).activated_at == status.activated_at


async def test_processed_event_ids_are_remembered_then_purged(store: AllTables) -> None:
    assert not await store.is_processed("evt/1")
    await store.mark_processed("evt/1", timedelta(hours=1))
    await store.mark_processed("evt-old", timedelta(seconds=-1))
    assert await store.is_processed("evt/1")
    assert await store.purge_processed() == 1
    assert await store.is_processed("evt/1") and not await store.is_processed("evt-old")


async def test_oversized_values_are_refused_before_azure_would(store: AllTables) -> None:
    with pytest.raises(EntityTooLargeError, match="64 KiB"):
        await store.save_room_state(RoomState(room=ROOM, delta_link="x" * 40_000))
    assert (await store.get_room_state(ROOM)).etag is None


async def test_operations_are_counted(store: AllTables) -> None:
    before = store.operations
    await store.get_status()
    assert store.operations == before + 1


async def test_index_left_behind_by_a_crash_is_not_believed(store: AllTables) -> None:
    link = await store.save_link(Link(room=ROOM, origin="anny", anny_id="b-1", event_id="old"))
    link.event_id = "new"
    await store.save_link(link)  # as if the crash came before the old index was removed
    assert await store.link_by_event(ROOM, "old") is None
    assert (await store.link_by_event(ROOM, "new")).anny_id == "b-1"


async def test_all_links_of_a_room_include_pending_ones(store: AllTables) -> None:
    await store.save_link(Link(room=ROOM, origin="anny", anny_id="b-1", state="pending"))
    await store.save_link(Link(room=ROOM, origin="anny", anny_id="b-2", event_id="e-2"))
    await store.save_link(Link(room=ROOM, origin="outlook", event_id="e-3", anny_id="blk-3"))
    await store.save_link(Link(room="other@contoso.example", origin="anny", anny_id="b-4", event_id="e-4"))
    found = await store.all_links_of_room(ROOM)
    assert sorted(link.anny_id for link in found) == ["b-1", "b-2", "blk-3"]
    assert all(link.etag for link in found)


async def test_a_stale_index_in_one_room_never_pulls_in_another_rooms_link(store: AllTables) -> None:
    link = await store.save_link(Link(room=ROOM, origin="anny", anny_id="b-1", event_id="e-1"))
    link.room, link.event_id = "other@contoso.example", "e-2"
    await store.save_link(link)  # moved rooms; as if the crash came before the old index was removed
    assert await store.all_links_of_room(ROOM) == []
    assert [x.anny_id for x in await store.all_links_of_room("other@contoso.example")] == ["b-1"]


# --- issue 16: fewer Table round trips, with the same guarantees -------------------------------------


async def test_a_guarded_link_write_adds_no_row_once_the_rule_is_being_removed(store: AllTables) -> None:
    await store.add_rule(Rule("res-1", ROOM))
    link = await store.save_link(Link(room=ROOM, origin="outlook", event_id="e-1", state="pending"), guarded=True)
    rule = await store.get_rule("res-1")
    rule.removing = True  # what the rule's removal does before it scans the links
    await store.save_rule(rule)
    await store.mark_room_unmapped(ROOM)
    with pytest.raises(RoomNotMapped):
        await store.save_link(Link(room=ROOM, origin="outlook", event_id="e-2", state="pending"), guarded=True)
    assert await store.link_by_event(ROOM, "e-2") is None  # nothing of the refused write
    # A row that existed before the marker went is replaced by its ETag: the removal's scan, which
    # starts now, finds it; once the scan has deleted it, the replace fails and its writer undoes.
    link.state, link.anny_id = "synced", "blk-1"
    link = await store.save_link(link, guarded=True)
    [scanned] = await store.all_links_of_room(ROOM)
    assert scanned.anny_id == "blk-1"
    await store.delete_link(scanned)
    link.anny_version = "later"
    with pytest.raises(ConcurrencyError):
        await store.save_link(link, guarded=True)
    assert await store.all_links_of_room(ROOM) == []


async def test_a_replace_by_etag_in_the_room_costs_no_transaction(store: AllTables) -> None:
    """Only a row added to the room's partition goes with its marker (a transaction costs about
    2.5 times the CPU of a replace): a blocker's link is added once, then replaced."""
    await store.add_rule(Rule("res-1", ROOM))
    link = await store.save_link(Link(room=ROOM, origin="outlook", event_id="e-1", state="pending"), guarded=True)
    before = {kind: store.tables.operations_by[f"{kind} {store.links._table.name}"]
              for kind in ("transaction", "replace")}
    link.state, link.anny_id = "synced", "blk-1"
    await store.save_link(link, guarded=True)
    after = {kind: store.tables.operations_by[f"{kind} {store.links._table.name}"] for kind in before}
    assert after == {"transaction": before["transaction"], "replace": before["replace"] + 1}


async def test_a_room_mapped_before_marker_rows_gets_its_marker_on_the_first_guarded_write(
        store: AllTables) -> None:
    await store.add_rule(Rule("res-1", ROOM))
    await store.mark_room_unmapped(ROOM)  # as a rule stored by an older version has no marker
    await store.save_link(Link(room=ROOM, origin="outlook", event_id="e-1", state="pending"), guarded=True)
    assert (await store.link_by_event(ROOM, "e-1")) is not None
    rule = await store.get_rule("res-1")
    rule.removing = True
    await store.save_rule(rule)
    await store.mark_room_unmapped(ROOM)
    with pytest.raises(RoomNotMapped):  # a rule being removed is never given its marker back
        await store.save_link(Link(room=ROOM, origin="outlook", event_id="e-2", state="pending"), guarded=True)


async def test_cached_rules_are_read_again_after_a_change_in_this_process(store: AllTables) -> None:
    await store.add_rule(Rule("res-1", ROOM))
    assert not (await store.get_rule("res-1", cached=True)).held
    before = store.operations
    assert (await store.get_rule_for_room(ROOM, cached=True)).anny_resource_id == "res-1"
    await store.get_rule_for_room(ROOM, cached=True)
    assert store.operations == before + 2  # the guard row and the rule, once
    rule = await store.get_rule("res-1")
    rule.held = "too many deletions"
    await store.save_rule(rule)
    assert (await store.get_rule("res-1", cached=True)).held == "too many deletions"
    await store.remove_rule("res-1")
    assert await store.get_rule_for_room(ROOM, cached=True) is None


async def test_links_starting_after_a_moment_are_found_by_a_filtered_query(store: AllTables) -> None:
    berlin = "+01:00"
    for event_id, start in (("early", f"2026-12-01T09:00:00{berlin}"), ("late", "2027-03-01T08:30:00+00:00"),
                            ("late-offset", f"2027-03-01T09:00:00{berlin}")):
        await store.save_link(Link(room=ROOM, origin="outlook", event_id=event_id, anny_id=f"b-{event_id}",
                                   start=start, end=start))
    moment = datetime(2027, 3, 1, 8, 0, tzinfo=UTC)
    found = await store.links_of_room(ROOM, starting_from=moment)
    assert sorted(link.event_id for link in found) == ["late", "late-offset"]  # 09:00+01:00 is 08:00 UTC


async def test_link_rows_written_before_time_keys_existed_get_them(store: AllTables, azurite: Azurite,
                                                                   table_prefix: str) -> None:
    from azure.data.tables.aio import TableClient

    await store.save_link(Link(room=ROOM, origin="outlook", event_id="old", anny_id="b-old",
                               start="2027-05-01T10:00:00+02:00", end="2027-05-01T11:00:00+02:00"))
    async with TableClient.from_connection_string(azurite.connection_string, f"{table_prefix}links") as table:
        row = await table.get_entity("r~" + encode_key(ROOM.lower()), "old")
        legacy = {k: v for k, v in row.items() if k not in ("start_key", "end_key")}
        await table.upsert_entity(legacy, mode=UpdateMode.REPLACE)
    moment = datetime(2027, 4, 1, tzinfo=UTC)
    assert await store.links_of_room(ROOM, starting_from=moment) == []
    assert await store.add_time_keys(ROOM) == 1
    assert [link.event_id for link in await store.links_of_room(ROOM, starting_from=moment)] == ["old"]


async def test_links_of_many_events_are_found_as_one_by_one(store: AllTables) -> None:
    await store.save_link(Link(room=ROOM, origin="anny", anny_id="b-1", event_id=GRAPH_ID))
    for i in range(30):
        await store.save_link(Link(room=ROOM, origin="outlook", event_id=f"ev-{i}", anny_id=f"blk-{i}"))
    wanted = [GRAPH_ID, "unknown", *(f"ev-{i}" for i in range(30))]
    before = store.operations
    found = await store.links_by_events(ROOM, wanted)
    assert store.operations - before <= 4  # 3 queries of 14 keys, and the owner of the index copy
    assert found == {event_id: link for event_id in wanted
                     if (link := await store.link_by_event(ROOM, event_id)) is not None}
    assert len(found) == 31 and found[GRAPH_ID].origin == "anny"
