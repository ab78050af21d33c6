"""A big room: a room calendar with many meetings (1k, 5k). Prints one JSON line per size.

Both emulators answer with 100 ms latency. Measured on the runner's own loop, as its queue
worker would run them: the baseline (every meeting read and blocked in anny), the daily run
(the sync window has moved on by a day), and one changed meeting afterwards. The bound is the
Graph time of reading the room once: pages of DELTA_PAGE_SIZE at the emulated latency.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import time
from datetime import UTC, datetime, timedelta

from bench.common import ROOM, emit, map_room, running_stack
from devhost.stack import LocalStack
from sync.inbound import RoomRunResult
from sync.services import get_services
from sync.settings import Settings
from sync.worker import Worker

LATENCY_MS = 100


def seed_meetings(stack: LocalStack, count: int) -> list[dict]:
    """`count` half-hour meetings spread over the next 150 days, 07:00–17:00 UTC."""
    first = datetime.now(UTC).replace(hour=7, minute=0, second=0, microsecond=0) + timedelta(days=1)
    events = []
    for index in range(count):
        start = first + timedelta(days=index % 150, minutes=30 * (index // 150 % 20))
        events.append({"mailbox": ROOM, "subject": f"Meeting {index}", "timeZone": "UTC",
                       "start": start.isoformat()[:19], "end": (start + timedelta(minutes=25)).isoformat()[:19]})
    return stack.graph.seed({"events": events})["events"]


async def room_run(stack: LocalStack) -> tuple[float, RoomRunResult]:
    """One room run to its end (follow-up runs included), on the runner's loop; its wall time."""
    async def run() -> tuple[float, RoomRunResult]:
        worker = Worker(await get_services())
        began = time.perf_counter()
        result = await worker.inbound.sync_room(ROOM)
        while result.rerun_later:
            result = await worker.inbound.sync_room(ROOM)
        return time.perf_counter() - began, result

    return await stack.host.run(run())


async def roll_window_back_a_day(stack: LocalStack) -> None:
    """What the next day does to the room: the window the delta token was made for is not today's."""
    async def roll() -> None:
        store = (await get_services()).store

        def back(state) -> None:  # type: ignore[no-untyped-def]
            state.window_start = (datetime.fromisoformat(state.window_start) - timedelta(days=1)).isoformat()
            state.window_end = (datetime.fromisoformat(state.window_end) - timedelta(days=1)).isoformat()

        await store.update_room_state(ROOM, back)

    await stack.host.run(roll())


async def measure(size: int) -> dict[str, float]:
    with running_stack(graph_latency_ms=LATENCY_MS, anny_latency_ms=LATENCY_MS) as stack:
        await map_room(stack, subscribe_graph=False)
        meetings = seed_meetings(stack, size)
        baseline_s, _ = await room_run(stack)
        blockers = sum(1 for b in stack.anny.bookings() if b["is_blocker"])
        await roll_window_back_a_day(stack)
        stack.graph.reset_counters()
        daily_s, _ = await room_run(stack)
        daily_reads = stack.graph.call_counts().get("GET /users/{mailbox}/calendarView/delta", 0)
        stack.graph.person_update_event(ROOM, meetings[size // 2]["id"], subject="Moved meeting")
        change_s, _ = await room_run(stack)
        pages = math.ceil(size / Settings.from_env(stack.env).delta_page_size)
    return {"events": size, "blockers": blockers, "baseline_s": baseline_s, "daily_s": daily_s,
            "daily_delta_requests": daily_reads, "per_change_s": change_s,
            "read_bound_s": pages * LATENCY_MS / 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1000,5000")
    for size in (int(s) for s in parser.parse_args().sizes.split(",")):
        emit(asyncio.run(measure(size)))


if __name__ == "__main__":
    main()
