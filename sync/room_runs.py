"""A room's runs (behaviour: Outlook → anny): never two at once, and no signal lost.

A run holds a lease on the room's state row (an ETag-guarded marker whose id is the queue
message's, so a message redelivered after its worker died takes its own lease back). A signal
that finds the room busy sets `rerun_requested`, and the running worker runs once more before it
lets go: a burst of notifications costs a few delta rounds, and none is lost. A signal reaching
the process that holds the lease only sets a flag in memory (no Table request). A queued signal
older than the start of the room's last successful round (`read_from`, with a margin for clock
skew between instances) is covered by that round's read and ends with the one Table read: a
long initial sync's echoes queue hundreds of signals per room, which would otherwise each cost
a lease and a delta read while live changes wait behind them. What one round does is the
caller's (`sync.inbound.InboundFlow`).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sync.errors import ConcurrencyError
from sync.keys import normalise_mailbox
from sync.state import RoomsTable, RoomState

LEASE = timedelta(minutes=15)  # longer than functionTimeout (10 min): a lease this old belongs to a dead run
MAX_RUNS_PER_SIGNAL = 10
COALESCE_S = 0.25  # a burst's notifications arrive over a second or so; one read covers many
COVERED_MARGIN = timedelta(seconds=1)  # a round read this much after a signal covers it (clock skew)


@dataclass
class RunningHere:
    """A room run of this process: signals of this process for the room only set `signalled`."""

    run_id: str
    signalled: bool = False
    holding: bool = False  # the lease is taken (not still being acquired)


_running_here: dict[str, RunningHere] = {}  # room → the run of this process that holds its lease


def signal_run_here(room: str) -> bool:
    """A change signalled for `room` (a Graph notification), taken by a run of this process that
    holds the room's lease: it reads once more before it lets go, so the signal needs no work
    item and no Table request. False when no run here holds the room: queue the signal."""
    here = _running_here.get(normalise_mailbox(room))
    if here is None or not here.holding:
        return False
    here.signalled = True
    return True


@dataclass
class LeaseOutcome:
    rounds: int = 0
    skipped_busy: bool = False  # another run holds the room; it runs once more for this signal
    covered: bool = False  # the room's last round began to read after this signal: nothing to do
    rerun_later: bool = False  # still signalled after MAX_RUNS_PER_SIGNAL rounds: queue one more signal


@dataclass
class RoomLease:
    rooms: RoomsTable

    async def run(self, room: str, one_round: Callable[[RoomState], Awaitable[RoomState]],
                  run_id: str = "", signalled_at: datetime | None = None) -> LeaseOutcome:
        """Run `one_round` until no signal arrived meanwhile; return at once if another run holds the
        room, or if its last round began to read after `signalled_at` (when the signal was given)."""
        outcome = LeaseOutcome()
        run_id = run_id or uuid.uuid4().hex
        key = normalise_mailbox(room)
        here = _running_here.get(key)
        if here is not None and here.run_id != run_id:
            here.signalled = True  # a run of this process holds the room: it runs once more, no Table request
            outcome.skipped_busy = True
            return outcome
        here = _running_here[key] = RunningHere(run_id)  # signals meanwhile wait for this acquisition
        state: RoomState | None = None
        try:
            state = await self._acquire(room, run_id, signalled_at, outcome)
        finally:
            if state is None and _running_here.get(key) is here:
                del _running_here[key]  # busy elsewhere: the rerun asked for there covers them too
        if state is None:
            outcome.skipped_busy = not outcome.covered
            return outcome
        here.holding = True
        try:
            while True:
                state = await self._absorb_signals(state, run_id, here)
                state = await one_round(state)
                outcome.rounds += 1
                last = outcome.rounds >= MAX_RUNS_PER_SIGNAL
                state, again = await self._finish_or_continue(state, run_id, here, release=last)
                if again and last:
                    outcome.rerun_later = True  # the lease is released; the worker queues one more signal
                if not again or last:
                    return outcome
        except BaseException:
            await self._release_after_failure(room, run_id)
            raise
        finally:
            if _running_here.get(state.room) is here:
                del _running_here[state.room]

    async def _acquire(self, room: str, run_id: str, signalled_at: datetime | None,
                       outcome: LeaseOutcome) -> RoomState | None:
        while True:
            state = await self.rooms.get_room_state(room)
            if signalled_at is not None and state.read_from is not None \
                    and state.read_from >= signalled_at + COVERED_MARGIN:
                outcome.covered = True
                return None
            now = datetime.now(UTC)
            held = state.running_since is not None and now - state.running_since < LEASE
            busy = held and state.run_id != run_id
            if busy and state.rerun_requested:
                return None  # one more run is asked for already: it reads after this signal's change
            if busy:
                state.rerun_requested = True
            else:
                state.running_since, state.run_id, state.rerun_requested = now, run_id, False
            try:
                state = await self.rooms.save_room_state(state)
            except ConcurrencyError:
                continue
            return None if busy else state

    async def _absorb_signals(self, state: RoomState, run_id: str, here: RunningHere) -> RoomState:
        """Let a burst of notifications gather, then read: signals until now are covered by this read.

        Also renews the lease for the run that follows.
        """
        await asyncio.sleep(COALESCE_S)
        _running_here[state.room], here.signalled = here, False
        while True:
            fresh = await self.rooms.get_room_state(state.room)
            if fresh.run_id != run_id:
                raise ConcurrencyError("room lease was taken over", room=state.room)
            fresh.rerun_requested, fresh.running_since = False, datetime.now(UTC)
            try:
                return await self.rooms.save_room_state(fresh)
            except ConcurrencyError:
                continue

    async def _finish_or_continue(self, state: RoomState, run_id: str, here: RunningHere,
                                  release: bool) -> tuple[RoomState, bool]:
        """Release the lease, unless a signal asked for one more run (then keep it, unless `release`).

        A signal of this process counts as one of the table; once the release is decided, later
        signals go through the table (and make the release's ETag-guarded write fail: read again).
        """
        while True:
            if state.run_id != run_id:
                raise ConcurrencyError("room lease was taken over", room=state.room)
            again = state.rerun_requested or here.signalled
            state.rerun_requested = False
            state.read_from = state.running_since  # set when this round's signals were absorbed
            if release or not again:
                if _running_here.get(state.room) is here:
                    del _running_here[state.room]
                state.running_since, state.run_id = None, ""
            else:
                _running_here[state.room] = here
            try:
                return await self.rooms.save_room_state(state), again
            except ConcurrencyError:
                fresh = await self.rooms.get_room_state(state.room)
                fresh.delta_link, fresh.window_start, fresh.window_end, fresh.covered_end = (
                    state.delta_link, state.window_start, state.window_end, state.covered_end)
                fresh.last_run_at, fresh.time_keys, fresh.read_from = (
                    state.last_run_at, state.time_keys, state.read_from)
                state = fresh

    async def _release_after_failure(self, room: str, run_id: str) -> None:
        def release(state: RoomState) -> bool:
            if state.run_id != run_id:
                return False  # not ours (any more)
            state.running_since, state.run_id = None, ""
            return True

        await self.rooms.update_room_state(room, release)
