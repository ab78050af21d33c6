"""A big room: a room calendar with many meetings (1k, 5k). Prints one JSON line per size.

Both emulators answer with 100 ms latency, and anny allows ANNY_WRITES writes per ANNY_WINDOW_S seconds
(as `make bench-initial`). Measured on the runner's own loop, as its queue worker would run
them, with the clock set to the first of next month: the baseline (the room run, then the
backfill items it queued until every meeting is blocked in anny), the next day's run (the sync
window has moved on by a day), that day's nightly comparison of the whole window (a calendarView
read beside the delta round), the next month's run (the delta window rolls: the room is read
again), and one changed meeting. The later runs start once the backfill is done: a baseline
during a backfill is backfill work too and waits its turn for anny's budget.

Bounds: reading the room once (pages of DELTA_PAGE_SIZE at the emulated latency), and for the
baseline also writing a blocker per meeting at anny's write limit.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import time
from datetime import UTC, date, datetime, timedelta

from bench.common import ANNY_WINDOW_S, ANNY_WRITES, ROOM, emit, least_time_s, map_room, quiesce, running_stack
from devhost.stack import LocalStack
from sync.inbound import RoomRunResult
from sync.model import SyncWindow, add_months
from sync.services import get_services
from sync.settings import Settings
from sync.worker import Worker

LATENCY_MS = 100


class Clock:
    """The app's sync window as it will be `days` from now (the runner shares this process)."""

    def __init__(self) -> None:
        self.days = 0
        self._now = SyncWindow.now.__func__  # type: ignore[attr-defined]
        SyncWindow.now = classmethod(  # type: ignore[method-assign, assignment]
            lambda cls, now, months, zone: self._now(cls, now + timedelta(days=self.days), months, zone))

    def set(self, day: date) -> None:
        self.days = (day - datetime.now(UTC).date()).days


def seed_meetings(stack: LocalStack, count: int, after: date) -> list[dict]:
    """`count` half-hour meetings spread over 150 days after `after`, 07:00–17:00 UTC."""
    first = datetime.combine(after, datetime.min.time(), UTC).replace(hour=7) + timedelta(days=1)
    events = []
    for index in range(count):
        start = first + timedelta(days=index % 150, minutes=30 * (index // 150 % 20))
        events.append({"mailbox": ROOM, "subject": f"Meeting {index}", "timeZone": "UTC",
                       "start": start.isoformat()[:19], "end": (start + timedelta(minutes=25)).isoformat()[:19]})
    return stack.graph.seed({"events": events})["events"]


async def room_run(stack: LocalStack, census: bool = False) -> tuple[float, RoomRunResult]:
    """One room run to its end (follow-up runs included), on the runner's loop; its wall time.
    `census`: the nightly run's, which compares the whole window as well."""
    async def run() -> tuple[float, RoomRunResult]:
        worker = Worker(await get_services())
        began = time.perf_counter()
        result = await worker.inbound.sync_room(ROOM, census=census)
        while result.rerun_later:
            result = await worker.inbound.sync_room(ROOM)
        return time.perf_counter() - began, result

    return await stack.host.run(run())


def graph_reads(stack: LocalStack) -> int:
    return sum(v for k, v in stack.graph.call_counts().items() if k.startswith("GET "))


async def measure(size: int, clock: Clock) -> dict[str, float]:
    first = add_months(datetime.now(UTC).date().replace(day=1), 1)
    clock.set(first)
    with running_stack(graph_latency_ms=LATENCY_MS, anny_latency_ms=LATENCY_MS, ANNY_WRITE_LIMIT=str(ANNY_WRITES),
                       ANNY_LIMIT_WINDOW_SECONDS=str(ANNY_WINDOW_S)) as stack:
        await map_room(stack, subscribe_graph=False)
        meetings = seed_meetings(stack, size, first)
        began = time.perf_counter()
        run_s, _ = await room_run(stack)
        await quiesce(stack, seconds=3600)  # the backfill items write the blockers
        baseline_s = time.perf_counter() - began
        blockers = sum(1 for b in stack.anny.bookings() if b["is_blocker"])
        clock.set(first + timedelta(days=1))
        stack.graph.reset_counters()
        daily_s, _ = await room_run(stack)
        daily_reads = graph_reads(stack)
        stack.graph.reset_counters()
        census_s, _ = await room_run(stack, census=True)
        census_reads = graph_reads(stack)
        clock.set(add_months(first, 1))
        monthly_s, _ = await room_run(stack)
        stack.graph.person_update_event(ROOM, meetings[-1]["id"], subject="Moved meeting")
        change_s, _ = await room_run(stack)
        pages = math.ceil(size / Settings.from_env(stack.env).delta_page_size)
    return {"events": size, "blockers": blockers, "baseline_s": baseline_s, "baseline_room_run_s": run_s,
            "daily_s": daily_s, "daily_graph_reads": daily_reads, "nightly_census_s": census_s,
            "nightly_census_graph_reads": census_reads, "monthly_s": monthly_s, "per_change_s": change_s,
            "read_bound_s": pages * LATENCY_MS / 1000, "write_bound_s": least_time_s(size, ANNY_WRITES, ANNY_WINDOW_S),
            "anny_write_limit": f"{ANNY_WRITES} per {ANNY_WINDOW_S} s"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1000,5000")
    clock = Clock()
    for size in (int(s) for s in parser.parse_args().sizes.split(",")):
        emit(asyncio.run(measure(size, clock)))


if __name__ == "__main__":
    main()
