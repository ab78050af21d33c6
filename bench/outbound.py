"""`make bench-outbound`: anny → Outlook costs and latency on the real stack; prints one JSON line.

Graph answers with 100 ms emulated latency; the runner polls the queue with host.json's settings.
Latency is measured from the webhook's arrival at the app to the emulator's createdDateTime of
the mirror event, for 200 bookings made at 20 per second, and for 10 made one every 3 s (idle:
the queue listener has backed off between them). CPU is the runner thread's (webhook, queue
worker, Table and Graph clients); each emulator runs in a process of its own (bench.emulators),
so that it takes no CPU (GIL) from the app's process, and Azurite is a process of its own too.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

from bench.common import (
    ROOM,
    app_table_operations,
    emit,
    graph_time,
    local_time,
    map_room,
    percentile,
    quiesce,
    running_stack,
)
from devhost.host import QueueOptions
from devhost.stack import GRAPH_TOKEN, LocalStack
from sync import ingress
from sync.graph import ANNY_PROPERTY_ID
from sync.settings import Settings

CHANGES = 10
LOAD_RATE, LOAD_SECONDS = 20, 10
IDLE_GAP_S, IDLE_SAMPLES = 3.0, 10


async def runner_cpu_s(stack: LocalStack) -> float:
    """CPU time of the runner's thread so far (where the app's handlers and clients run)."""
    async def thread_cpu() -> float:
        return time.thread_time()

    return await stack.host.run(thread_cpu())


def graph_totals(stack: LocalStack) -> tuple[int, int]:
    counts = stack.graph.call_counts()
    reads = sum(v for k, v in counts.items() if k.startswith("GET "))
    return counts.get("total", 0), reads


async def costs(stack: LocalStack, resource: str) -> dict[str, float]:
    stack.graph.reset_counters()
    stack.anny.reset_counters()
    delivered_before = len(stack.anny.deliveries())
    ops_before = app_table_operations(stack)
    cpu_before = await runner_cpu_s(stack)
    bookings = [stack.anny.person_create_booking(resource, local_time(2, 60 * i), local_time(2, 60 * i + 30))
                for i in range(CHANGES)]
    await quiesce(stack)  # so that each move is an effective change of its own
    for i, booking in enumerate(bookings):
        stack.anny.person_move_booking(booking["id"], local_time(3, 60 * i), local_time(3, 60 * i + 45))
    await quiesce(stack)
    changes = 2 * CHANGES
    total, reads = graph_totals(stack)
    webhooks = len(stack.anny.deliveries()) - delivered_before
    result = {
        "graph_requests_per_change": total / changes,
        "graph_reads_per_change": reads / changes,
        "anny_requests_per_webhook": sum(stack.anny.counters().values()) / webhooks,
        "table_ops_per_change": (app_table_operations(stack) - ops_before) / changes,
        "cpu_ms_per_change": (await runner_cpu_s(stack) - cpu_before) * 1000 / changes,
    }
    stack.graph.reset_counters()
    for booking in bookings:
        stack.anny.person_update_booking(booking["id"], note="internal note only")
    await quiesce(stack)
    result["graph_requests_per_noop"] = graph_totals(stack)[0] / CHANGES
    return result


async def latency(stack: LocalStack, resource: str, count: int = LOAD_RATE * LOAD_SECONDS,
                  gap_s: float = 1 / LOAD_RATE, first_day: int = 20, prefix: str = "latency") -> dict[str, float]:
    """Webhook arrival → mirror event created, for `count` bookings made `gap_s` apart."""
    arrivals: dict[str, datetime] = {}
    original = ingress.anny_webhook

    async def timed(req, settings, store):  # type: ignore[no-untyped-def]
        arrived = datetime.now(UTC)
        answer = await original(req, settings, store)
        booking_id = json.loads(answer.response.get_body()).get("booking_id")
        if booking_id:
            arrivals.setdefault(booking_id, arrived)
        return answer

    ingress.anny_webhook = timed  # measurement only: records when each webhook reached the app
    try:
        for i in range(count):
            stack.anny.person_create_booking(resource, local_time(first_day + i // 10, 60 * (i % 10)),
                                             local_time(first_day + i // 10, 60 * (i % 10) + 30))
            await asyncio.sleep(gap_s)
        await quiesce(stack)
    finally:
        ingress.anny_webhook = original
    written = {}
    for event in stack.graph.events(ROOM):
        for prop in event.get("singleValueExtendedProperties") or []:
            if prop["id"].lower() == ANNY_PROPERTY_ID.lower():
                written[prop["value"]] = graph_time(event["createdDateTime"])
    samples = [(written[b] - t).total_seconds() * 1000 for b, t in arrivals.items() if b in written]
    result = {f"{prefix}_ms_p50": percentile(samples, 50), f"{prefix}_ms_p95": percentile(samples, 95),
              f"{prefix}_samples": len(samples)}
    if count > 1 and gap_s < QueueOptions.from_host_json().max_polling_interval:
        # The first webhooks of a burst find the queue listener backed off to maxPollingInterval
        # (the host's behaviour after an idle spell); once it finds messages it polls at once again.
        onset = min(arrivals.values()) + timedelta(seconds=QueueOptions.from_host_json().max_polling_interval + 0.5)
        steady = [(written[b] - t).total_seconds() * 1000 for b, t in arrivals.items() if b in written and t >= onset]
        result |= {f"{prefix}_steady_ms_p50": percentile(steady, 50), f"{prefix}_steady_ms_p95": percentile(steady, 95),
                   f"{prefix}_steady_samples": len(steady)}
    return result


async def graph_round_trip_ms(stack: LocalStack, samples: int = 10) -> float:
    """The emulated Graph's answer time as a client sees it (the bound outbound latency is held to)."""
    import httpx

    times = []
    bearer = {"Authorization": f"Bearer {GRAPH_TOKEN}"}
    async with httpx.AsyncClient(base_url=stack.graph.base_url, headers=bearer) as client:
        for _ in range(samples):
            began = time.perf_counter()
            await client.get(f"/users/{ROOM}/outlook/masterCategories")
            times.append((time.perf_counter() - began) * 1000)
    return percentile(times, 50)


def cold_start(stack: LocalStack) -> dict[str, float]:
    """Import, first Graph call and client CPU per write, in a fresh interpreter (bench.coldstart)."""
    done = subprocess.run([sys.executable, "-m", "bench.coldstart", ROOM], capture_output=True, text=True,
                          env={**os.environ, **stack.env}, timeout=120, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


async def main() -> None:
    with running_stack(graph_latency_ms=100, emulators_apart=True) as stack:
        resource = await map_room(stack, subscribe_graph=False)
        stack.anny.person_create_booking(resource, local_time(1, 0), local_time(1, 30))  # warm-up
        await quiesce(stack)
        result = await costs(stack, resource)
        result |= await latency(stack, resource)
        burst_ended = time.monotonic()
        result |= await latency(stack, resource, IDLE_SAMPLES, IDLE_GAP_S, first_day=60, prefix="idle_latency")
        # Where one instance runs every function (Premium, Dedicated; not Flex Consumption, the
        # template's plan), the webhook's queue write wakes the worker's listener at once: what
        # the app's own path costs without the queue hop's floor. Its burst waits until the first
        # one's anny reads have left anny's window (two bursts' reads exceed it: the budget would pace them).
        await asyncio.sleep(max(0.0, burst_ended + Settings.from_env().anny_limit_window_s + 1 - time.monotonic()))
        stack.host.queue_options.shared_instance = True
        result |= await latency(stack, resource, first_day=100, prefix="shared_instance_latency")
        result["graph_round_trip_ms"] = await graph_round_trip_ms(stack)
        result |= cold_start(stack)
    emit(result)


if __name__ == "__main__":
    asyncio.run(main())
