"""`make bench-initial`: the initial sync of many busy rooms against both sides' limits; prints one JSON line.

20 rooms, each with 300 anny bookings and 300 Outlook meetings in the window, against the
emulators with anny's documented limits (enforced by the emulator, the app configured with
the same budget) and Graph's per-mailbox limits (4 concurrent, MailboxConcurrency 429s),
100 ms latency on both. Time is compressed: anny's counts per a 6 s window instead of 60 s
(the ratio to the bound does not depend on the scale). Halfway through, live bookings and
live meetings are made, and their latency measured.

The bound is the least time the limits allow for the requests the sync needs: anny writes
(one blocker per meeting: at most L in any window, the first window free), anny reads, and
per mailbox the Graph requests at 4 at once and 100 ms each.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from bench.common import emit, graph_time, percentile, running_stack
from devhost.stack import LocalStack
from sync.admin_api import ROUTE_PREFIX, ROUTES
from sync.graph import ANNY_PROPERTY_ID


@dataclass(frozen=True)
class Scale:
    rooms: int = 20
    per_room: int = 300
    reads: int = 400
    writes: int = 100
    window_s: int = 6
    latency_ms: int = 100
    live: int = 10

    @property
    def settings(self) -> dict[str, str]:
        return {"ANNY_READ_LIMIT": str(self.reads), "ANNY_WRITE_LIMIT": str(self.writes),
                "ANNY_LIMIT_WINDOW_SECONDS": str(self.window_s)}


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


def graph_bound_s(stack: LocalStack, scale: Scale) -> float:
    per_mailbox = stack.graph.call_counts()
    busiest = max((v for k, v in per_mailbox.items() if "{mailbox}" in k), default=0)  # summed over mailboxes
    return busiest / scale.rooms * scale.latency_ms / 1000 / 4


async def run(scale: Scale) -> dict[str, Any]:
    with running_stack(graph_latency_ms=scale.latency_ms, anny_latency_ms=scale.latency_ms, **scale.settings) as stack:
        return await run_on(stack, scale)


async def run_on(stack: LocalStack, scale: Scale) -> dict[str, Any]:
    """The benchmark on a running stack whose queues are polled and whose settings are `scale.settings`."""
    stack.anny.set_rate_limits(reads_per_window=scale.reads, writes_per_window=scale.writes,
                               rate_window_s=scale.window_s)
    resources = seed(stack, scale)
    for n, resource in enumerate(resources):
        await admin_api(stack, "rules.add", anny_resource=resource, room=room_address(n))
    stack.subscribe_anny_webhooks()
    stack.anny.reset_counters()
    stack.graph.reset_counters()
    items = 2 * scale.rooms * scale.per_room

    started = time.monotonic()
    activation = asyncio.create_task(admin_api(stack, "activate"))  # returns once the inline part is done
    half = scale.rooms * scale.per_room // 2
    await until(lambda: len(blockers(stack)) >= half or activation.done(), 900, "half of the blockers")
    live_bookings, live_meetings = await inject_live(stack, resources, scale)
    await activation
    want_blockers = scale.rooms * scale.per_room + scale.live
    want_events = scale.rooms * scale.per_room + scale.live
    await until(lambda: len(blockers(stack)) >= want_blockers and len(mirror_events(stack, scale)) >= want_events,
                900, "every item")
    wall = time.monotonic() - started
    await asyncio.sleep(2)  # late echoes: anything still in flight must not add duplicates
    return measure(stack, scale, wall, items, live_bookings, live_meetings,
                   await stack.poison_messages())


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
    writes_bound = max(0.0, (anny_writes - scale.writes) / scale.writes) * scale.window_s
    reads_bound = max(0.0, (anny_reads - scale.reads) / scale.reads) * scale.window_s
    bound = max(writes_bound, reads_bound, graph_bound_s(stack, scale))
    return {
        "rooms": scale.rooms, "items": items + 2 * scale.live,
        "anny_limits": f"{scale.reads} reads, {scale.writes} writes per {scale.window_s} s",
        "wall_s": wall, "bound_s": bound, "bound_over_wall": bound / wall,
        "anny_429": stack.anny.throttled_count(),
        "graph_429": sum(stack.graph.throttled_counts().values()),
        "anny_reads": anny_reads, "anny_writes": anny_writes,
        "anny_reads_per_item": anny_reads / (items + 2 * scale.live),
        "lost": lost, "duplicated": duplicated,
        "live_booking_ms_p95": percentile(booking_ms, 95), "live_meeting_ms_p95": percentile(meeting_ms, 95),
        "live_measured": len(booking_ms) + len(meeting_ms),
        "poisoned": len(poisoned),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rooms", type=int, default=int(os.environ.get("BENCH_ROOMS", Scale.rooms)))
    parser.add_argument("--per-room", type=int, default=int(os.environ.get("BENCH_PER_ROOM", Scale.per_room)))
    parser.add_argument("--window-s", type=int, default=Scale.window_s)
    args = parser.parse_args()
    emit(asyncio.run(run(Scale(rooms=args.rooms, per_room=args.per_room, window_s=args.window_s))))


if __name__ == "__main__":
    main()
