"""`make bench-initial`: the initial sync of many busy rooms against both sides' limits; prints one JSON line.

20 rooms, each with 300 anny bookings and 300 Outlook meetings in the window, against the
emulators with anny's documented limits (enforced by the emulator, the app configured with
the same budget) and Graph's per-mailbox limits (4 concurrent, MailboxConcurrency 429s),
100 ms latency on both. Time is compressed: anny's counts per a 6 s window instead of 60 s.
The bound shrinks with the window, but what does not (anny's answer time, the budget's
allowance for clock skew between instances, the start of the run) weighs ten times more than
at anny's real window: the ratio here is lower than it would be there. Halfway through, live
bookings and live meetings are made, and their latency measured.

The bound is the least time the limits allow for the requests the sync needs: anny writes
(one blocker per meeting: at most L in any window, `bench.common.least_time_s`), anny reads, and
per mailbox the Graph requests at 4 at once and 100 ms each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from azure.storage.queue.aio import QueueClient

from bench.common import (
    ANNY_READS,
    ANNY_WINDOW_S,
    ANNY_WRITES,
    app_table_operations,
    emit,
    graph_time,
    least_time_s,
    percentile,
    running_stack,
)
from bench.instance import disabled_settings, instance_running
from devhost.logs import configure_logging
from devhost.stack import LocalStack
from sync.admin_api import ROUTE_PREFIX, ROUTES
from sync.graph import ANNY_PROPERTY_ID
from sync.work import WORK_QUEUE

BACKFILL_FUNCTION = "sync_backfill"  # function_app's worker of the backfill queue


@dataclass(frozen=True)
class Scale:
    rooms: int = 20
    per_room: int = 300
    reads: int = ANNY_READS
    writes: int = ANNY_WRITES
    window_s: int = ANNY_WINDOW_S
    latency_ms: int = 100
    live: int = 10
    backfill_apart: bool = True  # sync_backfill in an instance of its own, as Flex Consumption runs it

    @property
    def items(self) -> int:
        """What the initial sync brings across: every booking and every meeting."""
        return 2 * self.rooms * self.per_room

    @property
    def settings(self) -> dict[str, str]:
        apart = disabled_settings([BACKFILL_FUNCTION]) if self.backfill_apart else {}
        return {"ANNY_READ_LIMIT": str(self.reads), "ANNY_WRITE_LIMIT": str(self.writes),
                "ANNY_LIMIT_WINDOW_SECONDS": str(self.window_s), **apart}


def room_address(n: int) -> str:
    return f"bench.room{n:02d}@contoso.example"


def slot(day0: datetime, k: int) -> tuple[datetime, datetime]:
    """The k-th half hour of a room's schedule: 8 a day from 08:00 UTC, from tomorrow on."""
    start = day0 + timedelta(days=1 + k // 8, hours=8 + k % 8)
    return start, start + timedelta(minutes=30)


def seed(stack: LocalStack, scale: Scale) -> list[str]:
    """anny resources with bookings, rooms with meetings (seeding sends no webhooks or notifications)."""
    day0 = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    resources = [{"name": f"Bench Room {n:02d}", "slug": f"bench-{n:02d}", "timezone": "UTC"}
                 for n in range(scale.rooms)]
    bookings = []
    for n in range(scale.rooms):
        for k in range(scale.per_room):
            start, end = slot(day0, k)
            bookings.append({"resource": f"bench-{n:02d}", "start": start.isoformat(), "end": end.isoformat(),
                             "service": "Meeting"})
    ids = stack.anny.seed({"resources": resources, "services": [{"name": "Meeting"}], "bookings": bookings})
    events = []
    for n in range(scale.rooms):
        for k in range(scale.per_room):
            start, end = slot(day0 + timedelta(minutes=15), k)  # beside the bookings, not on them
            events.append({"mailbox": room_address(n), "subject": f"Meeting {n}-{k}", "timeZone": "UTC",
                           "start": start.isoformat()[:19], "end": end.isoformat()[:19]})
    stack.graph.seed({"rooms": [{"email": room_address(n), "displayName": f"Bench Room {n:02d}"}
                                for n in range(scale.rooms)], "events": events})
    return [ids["resources"][f"bench-{n:02d}"] for n in range(scale.rooms)]


def blockers(stack: LocalStack) -> list[dict[str, Any]]:
    return [b for b in stack.anny.bookings() if b["is_blocker"] and not b.get("canceled_at")]


def mirror_events(stack: LocalStack, scale: Scale) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for n in range(scale.rooms):
        for event in stack.graph.events(room_address(n)):
            if "anny" in (event.get("categories") or []):
                found.append((room_address(n), event))
    return found


def event_booking_id(event: dict[str, Any]) -> str:
    for prop in event.get("singleValueExtendedProperties") or []:
        if prop["id"].lower() == ANNY_PROPERTY_ID.lower():
            return str(prop["value"])
    return ""


def stamp(value: str) -> float:
    return graph_time(value).timestamp()


async def inject_live(stack: LocalStack, resources: list[str], scale: Scale) -> tuple[list[dict], list[dict]]:
    """Live bookings and meetings, one of each every half second, in different rooms."""
    day0 = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    bookings, meetings = [], []
    for i in range(scale.live):
        start, end = day0 + timedelta(days=1, hours=6), day0 + timedelta(days=1, hours=6, minutes=20)
        made = time.time()
        booking = stack.anny.person_create_booking(resources[i % len(resources)], start.isoformat(), end.isoformat(),
                                                   service="Meeting", description=f"live {i}")
        bookings.append({"id": booking["id"], "room": room_address(i % len(resources)), "made": made})
        made = time.time()
        meeting = stack.graph.person_create_event(room_address((i + 1) % len(resources)), subject=f"Live {i}",
                                                  start=(start + timedelta(hours=1)).isoformat()[:19],
                                                  end=(end + timedelta(hours=1)).isoformat()[:19], timeZone="UTC")
        meetings.append({"subject": f"Live {i}", "id": meeting["id"], "made": made})
        await asyncio.sleep(0.5)
    return bookings, meetings


async def until(condition: Any, timeout: float, what: str, every: float = 0.5) -> float:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"benchmark: timed out waiting for {what}")
        await asyncio.sleep(every)
    return time.monotonic()


async def admin_api(stack: LocalStack, command: str, **params: str) -> Any:
    """An admin command through the app's admin API, as the CLI's remote mode sends it: it runs
    inside the app, with the same Graph gateway and anny budget as the queue workers."""
    method, path = ROUTES[command]
    async with httpx.AsyncClient(base_url=f"{stack.host.url}/api/{ROUTE_PREFIX}", timeout=1800,
                                 headers={"x-functions-key": stack.keys.master}) as client:
        answer = await client.request(method, path, json=params or None)
    if answer.status_code >= 400:
        raise RuntimeError(f"admin {command} answered {answer.status_code}: {answer.text[:500]}")
    return answer.json()


BLOCKER_POST = "POST /api/v1/bookings"
EVENT_POST = "POST /users/{mailbox}/events"


def writes_seen(stack: LocalStack) -> tuple[int, int]:
    """Blockers POSTed to anny and events POSTed to Graph so far: two cheap counter reads, so that
    watching the run does not cost the emulators a listing of thousands of items twice a second."""
    return stack.anny.counters().get(BLOCKER_POST, 0), stack.graph.call_counts().get(EVENT_POST, 0)


def complete(stack: LocalStack, scale: Scale) -> bool:
    want = scale.rooms * scale.per_room + scale.live
    return len(blockers(stack)) >= want and len(mirror_events(stack, scale)) >= want


async def until_complete(stack: LocalStack, scale: Scale, timeout: float, poll_s: float) -> float:
    """When every blocker and mirror event exists: watched on the counters, then checked on the listings."""
    want = scale.rooms * scale.per_room + scale.live
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        blockers_posted, events_posted = writes_seen(stack)
        if blockers_posted >= want and events_posted >= want:
            seen = time.monotonic()
            if complete(stack, scale):
                return seen
        await asyncio.sleep(poll_s)
    raise TimeoutError("benchmark: timed out waiting for every item")


def bound(scale: Scale, writes_needed: int, reads: int, graph_calls_per_room: float) -> dict[str, float]:
    """The least time anny's and Graph's limits allow, per resource; the bound is the largest.

    * anny writes: the blockers that must be written, at most L in any W seconds
      (`least_time_s`: ⌊(N − 1) / L⌋ · W).
    * anny reads: the reads made, the same way (a read before each write is the design's
      choice, behaviour: anny → Outlook, so they are counted as needed).
    * Graph: per mailbox at most 4 requests at once, each taking the emulated latency: the
      requests made on the busiest mailbox × latency / 4 (rooms run side by side).
    """
    writes_s = least_time_s(writes_needed, scale.writes, scale.window_s)
    reads_s = least_time_s(reads, scale.reads, scale.window_s)
    graph_s = graph_calls_per_room * scale.latency_ms / 1000 / 4
    return {"bound_s": max(writes_s, reads_s, graph_s), "bound_anny_writes_s": writes_s,
            "bound_anny_reads_s": reads_s, "bound_graph_s": graph_s}


async def run(scale: Scale) -> dict[str, Any]:
    with running_stack(graph_latency_ms=scale.latency_ms, anny_latency_ms=scale.latency_ms, emulators_apart=True,
                       **scale.settings) as stack:
        if not scale.backfill_apart:
            return await run_on(stack, scale, poll_s=0.2) | {"instances": 1}
        with instance_running(stack, [BACKFILL_FUNCTION]) as backfill:
            result = await run_on(stack, scale, poll_s=0.2)
        # the other instance's cost, added to this one's (run_on)
        result["process_cpu_ms_per_item"] += backfill.cpu_s * 1000 / scale.items
        result["table_ops_per_item"] += backfill.table_ops / scale.items
        return result | {"instances": 2, "backfill_instance_cpu_s": backfill.cpu_s}


async def run_on(stack: LocalStack, scale: Scale, poll_s: float = 0.5) -> dict[str, Any]:
    """The benchmark on a running stack whose queues are polled and whose settings are `scale.settings`."""
    stack.anny.set_rate_limits(reads_per_window=scale.reads, writes_per_window=scale.writes,
                               rate_window_s=scale.window_s, rate_window="rolling")
    resources = seed(stack, scale)
    for n, resource in enumerate(resources):
        await admin_api(stack, "rules.add", anny_resource=resource, room=room_address(n))
    stack.subscribe_anny_webhooks()
    stack.anny.reset_counters()
    stack.graph.reset_counters()
    items = scale.items

    started, cpu_started, table_started = time.monotonic(), time.process_time(), app_table_operations(stack)
    timeline: list[Tick] = []
    watching = asyncio.create_task(watch(stack, started, timeline))
    activation = asyncio.create_task(admin_api(stack, "activate"))  # returns once the inline part is done
    half = scale.rooms * scale.per_room // 2
    await until(lambda: writes_seen(stack)[0] >= half or activation.done(), 900, "half of the blockers", poll_s)
    live_bookings, live_meetings = await inject_live(stack, resources, scale)
    await activation
    finished = await until_complete(stack, scale, 900, poll_s)
    wall = finished - started
    watching.cancel()
    # The app and the runner share this process; with the emulators apart, its CPU is theirs.
    app_cost = {"process_cpu_ms_per_item": (time.process_time() - cpu_started) * 1000 / items,
                "table_ops_per_item": (app_table_operations(stack) - table_started) / items}
    await asyncio.sleep(2)  # late echoes: anything still in flight must not add duplicates
    return measure(stack, scale, wall, items, live_bookings, live_meetings,
                   await stack.poison_messages()) | app_cost | pace(timeline, scale)


Tick = tuple[float, int, int, int, float]  # seconds, blockers and events posted, live queue depth, app loop lag (ms)


async def watch(stack: LocalStack, started: float, timeline: list[Tick]) -> None:
    """Once a second: blockers and events POSTed so far (when the writes started and how full each
    window was), the live queue's depth and how late the app's event loop runs a callback: what a
    live change made at that moment would wait behind."""
    live_queue = QueueClient.from_connection_string(stack.env["AzureWebJobsStorage"], WORK_QUEUE)
    try:
        while True:
            depth = (await live_queue.get_queue_properties()).approximate_message_count or 0
            timeline.append((time.monotonic() - started, *writes_seen(stack), depth, await app_loop_lag_ms(stack)))
            await asyncio.sleep(1.0)
    finally:
        await live_queue.close()


async def app_loop_lag_ms(stack: LocalStack) -> float:
    """How long the app's event loop (the runner's) takes to run a callback handed to it now."""
    async def noop() -> None:
        return None

    began = time.monotonic()
    await stack.host.run(noop())
    return round((time.monotonic() - began) * 1000, 1)


def pace(timeline: list[Tick], scale: Scale) -> dict[str, Any]:
    """Where the wall time went against the write bound: the wait before the first blocker, and
    the blockers written per window W while the writes ran (the limit allows `scale.writes`);
    the live queue's deepest and the app loop's latest moment."""
    first = next((t for t, posted, *_ in timeline if posted > 0), None)
    per_window = []
    for t0, earlier, *_ in timeline:
        later = next((posted for t1, posted, *_ in timeline if t1 >= t0 + scale.window_s), None)
        if first is not None and t0 >= first and later is not None and later < scale.rooms * scale.per_room:
            per_window.append(later - earlier)
    return {"timeline": timeline, "first_blocker_s": first,
            "live_queue_max": max((tick[3] for tick in timeline), default=None),
            "app_loop_lag_ms_max": max((tick[4] for tick in timeline), default=None),
            "blockers_per_window_p50": percentile(per_window, 50) if per_window else None,
            "blockers_per_window_min": min(per_window) if per_window else None}


def measure(stack: LocalStack, scale: Scale, wall: float, items: int, live_bookings: list[dict],
            live_meetings: list[dict], poisoned: list[bytes]) -> dict[str, Any]:
    found_blockers = Counter(b["title"] for b in blockers(stack))
    wanted_blockers = {f"Meeting {n}-{k}" for n in range(scale.rooms) for k in range(scale.per_room)}
    wanted_blockers |= {m["subject"] for m in live_meetings}
    events = mirror_events(stack, scale)
    found_events = Counter(event_booking_id(e) for _, e in events)
    wanted_events = {b["id"] for b in stack.anny.bookings() if not b["is_blocker"] and not b.get("canceled_at")}
    lost = len(wanted_blockers - set(found_blockers)) + len(wanted_events - set(found_events))
    twins = {k: c for found in (found_blockers, found_events) for k, c in found.items() if c > 1}
    strays = (set(found_blockers) - wanted_blockers) | (set(found_events) - wanted_events)
    if twins or strays:
        print(f"duplicated: {twins}, not wanted: {sorted(strays)[:20]}", file=sys.stderr)
    duplicated = sum(c - 1 for found in (found_blockers, found_events) for c in found.values() if c > 1)
    duplicated += len(set(found_blockers) - wanted_blockers) + len(set(found_events) - wanted_events)

    created = {event_booking_id(e): stamp(e["createdDateTime"]) for _, e in events}
    booking_ms = [(created[b["id"]] - b["made"]) * 1000 for b in live_bookings if b["id"] in created]
    blocker_made = {b["title"]: stamp(b["created_at"]) for b in blockers(stack)}
    meeting_ms = [(blocker_made[m["subject"]] - m["made"]) * 1000 for m in live_meetings
                  if m["subject"] in blocker_made]

    counts = stack.anny.counters()
    anny_reads = sum(v for k, v in counts.items() if k.startswith("GET "))
    anny_writes = sum(v for k, v in counts.items() if not k.startswith("GET "))
    graph_calls = stack.graph.call_counts()
    per_room = sum(v for k, v in graph_calls.items() if "{mailbox}" in k) / scale.rooms  # rooms alike
    limits = bound(scale, scale.rooms * scale.per_room + scale.live, anny_reads, per_room)
    return {
        "rooms": scale.rooms, "items": items + 2 * scale.live,
        "anny_limits": f"{scale.reads} reads, {scale.writes} writes per {scale.window_s} s",
        "wall_s": wall, **limits, "bound_over_wall": limits["bound_s"] / wall,
        "anny_429": stack.anny.throttled_count(),
        "anny_429_by": {reason: n for reason, n in stack.anny.rate_limits()["counters"].items() if reason != "429"},
        "graph_429": sum(stack.graph.throttled_counts().values()),
        "anny_reads": anny_reads, "anny_writes": anny_writes,
        "anny_reads_per_item": anny_reads / (items + 2 * scale.live), "anny_calls": counts,
        "lost": lost, "duplicated": duplicated,
        "live_booking_ms_p95": percentile(booking_ms, 95), "live_meeting_ms_p95": percentile(meeting_ms, 95),
        "live_measured": len(booking_ms) + len(meeting_ms),
        "poisoned": len(poisoned),
        "loadavg": list(os.getloadavg()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rooms", type=int, default=int(os.environ.get("BENCH_ROOMS", Scale.rooms)))
    parser.add_argument("--per-room", type=int, default=int(os.environ.get("BENCH_PER_ROOM", Scale.per_room)))
    parser.add_argument("--window-s", type=int, default=Scale.window_s)
    parser.add_argument("--one-instance", action="store_true",
                        help="every function in the benchmark's process (one instance); by default sync_backfill "
                             "runs in a second one, as Flex Consumption scales it on instances of its own")
    parser.add_argument("--log", action="store_true", help="the app's log lines on stderr")
    parser.add_argument("--timeline", help="write, once a second, the seconds, blockers and events posted, live "
                                           "queue depth and app loop lag (ms) to this file (JSON)")
    args = parser.parse_args()
    if args.log:
        configure_logging(verbose=False)
    result = asyncio.run(run(Scale(rooms=args.rooms, per_room=args.per_room, window_s=args.window_s,
                                   backfill_apart=not args.one_instance)))
    timeline = result.pop("timeline")
    if args.timeline:
        with open(args.timeline, "w") as out:
            json.dump(timeline, out)
    emit(result)


if __name__ == "__main__":
    main()
