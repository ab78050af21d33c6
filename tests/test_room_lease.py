"""Room runs never overlap, never lose a signal, and survive their worker's crash (Azurite)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from sync import ingress, room_runs
from sync.inbound import InboundFlow
from sync.model import SyncWindow
from sync.state import Link, RoomState, Subscription
from sync.work import RoomWork, decode, encode, signal_time
from tests.state_tables import AllTables

ROOM = "room@contoso.example"


def flow(store: AllTables) -> InboundFlow:
    return InboundFlow(settings=None, links=store, rules=store, rooms=store, anny=None, graph=None,  # type: ignore[arg-type]
                       outbound=None)


@pytest.fixture(autouse=True)
def no_coalescing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(room_runs, "COALESCE_S", 0)


async def hold_lease(store: AllTables, run_id: str, since: datetime | None = None) -> None:
    await store.save_room_state(RoomState(room=ROOM, running_since=since or datetime.now(UTC), run_id=run_id))


async def test_a_signal_during_a_run_is_kept_for_the_holder(store: AllTables) -> None:
    await hold_lease(store, "run-a")
    result = await flow(store).sync_room(ROOM, run_id="message-b")
    assert result.skipped_busy
    state = await store.get_room_state(ROOM)
    assert state.rerun_requested and state.run_id == "run-a"


async def test_a_message_redelivered_after_its_worker_died_takes_its_lease_back(
        store: AllTables, monkeypatch: pytest.MonkeyPatch) -> None:
    await hold_lease(store, "message-a")
    runs = []

    async def run_once(self, state, result, allow_deletions=False, census=False):  # type: ignore[no-untyped-def]
        runs.append(state.run_id)
        result.runs += 1
        return state

    monkeypatch.setattr(InboundFlow, "_run_once", run_once)
    result = await flow(store).sync_room(ROOM, run_id="message-a")
    assert not result.skipped_busy and runs == ["message-a"]
    assert (await store.get_room_state(ROOM)).running_since is None


async def test_an_expired_lease_of_a_dead_run_is_taken_over(store: AllTables, monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    await hold_lease(store, "dead", since=datetime.now(UTC) - room_runs.LEASE - timedelta(seconds=1))

    async def run_once(self, state, result, allow_deletions=False, census=False):  # type: ignore[no-untyped-def]
        result.runs += 1
        return state

    monkeypatch.setattr(InboundFlow, "_run_once", run_once)
    assert not (await flow(store).sync_room(ROOM, run_id="fresh")).skipped_busy


async def test_signals_that_never_stop_end_in_a_released_lease_and_one_more_signal(
        store: AllTables, monkeypatch: pytest.MonkeyPatch) -> None:
    async def run_once(self, state, result, allow_deletions=False, census=False):  # type: ignore[no-untyped-def]
        result.runs += 1
        await flow(store).sync_room(ROOM, run_id=f"signal-{result.runs}")  # a signal arrives meanwhile
        return await store.get_room_state(ROOM)

    monkeypatch.setattr(InboundFlow, "_run_once", run_once)
    result = await flow(store).sync_room(ROOM, run_id="first")
    assert result.runs == room_runs.MAX_RUNS_PER_SIGNAL and result.rerun_later
    state = await store.get_room_state(ROOM)
    assert state.running_since is None and not state.rerun_requested


def notified(room: str) -> list[RoomWork]:
    """The work items the notification endpoint queues for one notification about `room`."""
    sub = Subscription("sub-1", room, datetime.now(UTC) + timedelta(days=1), "state")
    answer = ingress._room_signals([({"subscriptionId": "sub-1", "changeType": "updated"}, sub)], 0)
    return [work for work in answer.work if isinstance(work, RoomWork)]


async def test_a_notification_for_a_room_whose_run_this_process_holds_queues_nothing_and_the_run_reads_again(
        store: AllTables, monkeypatch: pytest.MonkeyPatch) -> None:
    """A long initial sync's own writes echo back as notifications; a run here takes them without
    a queue message, so they do not fill the queue that live changes wait in."""
    queued: list[list[RoomWork]] = []

    async def run_once(self, state, result, allow_deletions=False, census=False):  # type: ignore[no-untyped-def]
        result.runs += 1
        if result.runs == 1:
            queued.append(notified(ROOM))
        return state

    monkeypatch.setattr(InboundFlow, "_run_once", run_once)
    result = await flow(store).sync_room(ROOM, run_id="first")
    assert queued == [[]] and result.runs == 2  # nothing queued; one more round read the change
    assert [work.room for work in notified(ROOM)] == [ROOM]  # no run here: the signal is queued


async def test_a_failed_run_releases_its_lease(store: AllTables, monkeypatch: pytest.MonkeyPatch) -> None:
    async def run_once(self, state, result, allow_deletions=False, census=False):  # type: ignore[no-untyped-def]
        raise RuntimeError("anny is down")

    monkeypatch.setattr(InboundFlow, "_run_once", run_once)
    with pytest.raises(RuntimeError):
        await flow(store).sync_room(ROOM, run_id="m")
    assert (await store.get_room_state(ROOM)).running_since is None


def test_items_that_ended_before_the_window_are_left_alone_by_the_nightly_baseline() -> None:
    window = SyncWindow(datetime(2026, 11, 24, tzinfo=UTC), datetime(2027, 5, 24, tzinfo=UTC))
    past = Link(room=ROOM, origin="anny", end=datetime(2026, 11, 20, tzinfo=UTC).isoformat())
    current = Link(room=ROOM, origin="anny", end=datetime(2026, 11, 25, tzinfo=UTC).isoformat())
    assert past.ended_before(window.start) and not current.ended_before(window.start)
    far = Link(room=ROOM, origin="outlook", start=datetime(2027, 6, 1, tzinfo=UTC).isoformat())
    assert far.starts_after(window.end) and not current.starts_after(window.end)


async def test_signals_of_this_process_during_a_run_cost_no_table_request_and_one_more_run(
        store: AllTables, monkeypatch: pytest.MonkeyPatch) -> None:
    async def run_once(self, state, result, allow_deletions=False, census=False):  # type: ignore[no-untyped-def]
        result.runs += 1
        if result.runs == 1:
            before = store.operations
            signals = await asyncio.gather(*(flow(store).sync_room(ROOM, run_id=f"signal-{i}") for i in range(10)))
            assert all(signal.skipped_busy for signal in signals) and store.operations == before
        return state

    monkeypatch.setattr(InboundFlow, "_run_once", run_once)
    result = await flow(store).sync_room(ROOM, run_id="first")
    assert result.runs == 2 and not result.rerun_later
    state = await store.get_room_state(ROOM)
    assert state.running_since is None and not state.rerun_requested


async def test_a_batch_of_signals_for_an_idle_room_starts_one_run(store: AllTables,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    async def run_once(self, state, result, allow_deletions=False, census=False):  # type: ignore[no-untyped-def]
        result.runs += 1
        return state

    monkeypatch.setattr(InboundFlow, "_run_once", run_once)
    results = await asyncio.gather(*(flow(store).sync_room(ROOM, run_id=f"message-{i}") for i in range(16)))
    assert sum(not r.skipped_busy for r in results) == 1 and sum(r.runs for r in results) == 1
    assert (await store.get_room_state(ROOM)).running_since is None


async def test_a_queued_signal_that_the_rooms_last_round_read_after_costs_no_round(
        store: AllTables, monkeypatch: pytest.MonkeyPatch) -> None:
    """A long initial sync's echoes queue hundreds of signals per room. One given before the room's
    last successful round began to read is covered by that read: no lease, no delta read. One
    given after it (or within the margin for clock skew), or of unknown time, gets its round."""
    runs: list[str] = []

    async def run_once(self, state, result, allow_deletions=False, census=False):  # type: ignore[no-untyped-def]
        runs.append(state.run_id)
        result.runs += 1
        return state

    monkeypatch.setattr(InboundFlow, "_run_once", run_once)
    signalled = datetime.now(UTC) - timedelta(seconds=30)  # queued behind others meanwhile
    await flow(store).sync_room(ROOM, run_id="a round since")
    state = await store.get_room_state(ROOM)
    assert state.read_from is not None and state.read_from > signalled

    covered = await flow(store).sync_room(ROOM, run_id="old signal", signalled_at=signalled)
    assert not covered.runs and not covered.skipped_busy
    assert (await store.get_room_state(ROOM)).etag == state.etag  # nothing written either

    within_margin = state.read_from - room_runs.COVERED_MARGIN / 2
    await flow(store).sync_room(ROOM, run_id="signal at the read", signalled_at=within_margin)
    await flow(store).sync_room(ROOM, run_id="unknown time")
    assert runs == ["a round since", "signal at the read", "unknown time"]


def test_a_notification_queues_its_rooms_signal_with_the_time_it_came() -> None:
    before = datetime.now(UTC)
    [work] = notified(ROOM)
    at = signal_time(decode(encode(work)))  # as the worker reads it from the queue
    assert at is not None and before <= at <= datetime.now(UTC)
    assert signal_time(RoomWork(ROOM)) is None and signal_time(RoomWork(ROOM, signalled_at="soon")) is None
    assert signal_time(RoomWork(ROOM, signalled_at="2026-12-07T08:00:00")) is None  # no zone: not ours
