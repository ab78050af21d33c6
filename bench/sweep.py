"""`make bench-sweep`: what the catch-up sweep and the nightly run cost on the real stack; one JSON line.

Ten mapped rooms, five bookings and five meetings each, both emulators answering in 100 ms. A
quiet sweep (nothing changed), a sweep after a webhook and a notification were lost in every
room, and a quiet nightly run: anny reads and writes, Graph requests, and wall time of each. The
counts include what the app's queue worker does meanwhile (e.g. reading the webhooks of the
blockers a sweep wrote).
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

from bench.common import emit, local_time, quiesce, running_stack
from devhost.stack import LocalStack
from sync.admin import activate, run_command
from sync.services import Services
from sync.settings import Settings, StorageSettings
from sync.state import IntegrationStatus, StatusTable, Tables
from sync.worker import Worker

ROOMS = 10
ITEMS = 5


def rooms(stack: LocalStack) -> list[tuple[str, str]]:
    mapped = []
    stack.anny.add_service("Meeting")
    for index in range(ROOMS):
        resource = stack.anny.add_resource(f"Room {index}", timezone="Europe/Berlin")
        room = f"bench.room{index}@contoso.example"
        stack.graph.add_room(room, f"Room {index}")
        mapped.append((resource["id"], room))
    return mapped


def meeting(stack: LocalStack, room: str, day: int) -> None:
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=day, hours=3)
    stack.graph.person_create_event(room, subject=f"Meeting {day}", time_zone="UTC", start=start.isoformat()[:19],
                                    end=(start + timedelta(minutes=30)).isoformat()[:19])


async def admin(stack: LocalStack, command: str, **params: str) -> None:
    services = await Services.open(Settings.from_env(stack.env))
    try:
        if command == "activate":
            await activate(Worker(services))
        else:
            await run_command(command, params, Worker(services))
    finally:
        await services.close()


async def due_again(stack: LocalStack) -> None:
    def reset(status: IntegrationStatus) -> None:
        status.last_sweep_at, status.nightly_day, status.nightly_claimed_at = None, "", None

    storage = StorageSettings(connection_string=stack.azurite.connection_string)
    async with Tables(storage, stack.env["TABLE_PREFIX"]) as tables:
        await StatusTable(tables).update_status(reset)


async def measured(stack: LocalStack, timer: str, label: str) -> dict[str, float]:
    await due_again(stack)
    stack.graph.reset_counters()
    stack.anny.reset_counters()
    began = time.perf_counter()
    await stack.host.run(stack.host.fire_timer(timer))
    elapsed = time.perf_counter() - began
    anny = stack.anny.counters()
    storage = StorageSettings(connection_string=stack.azurite.connection_string)
    async with Tables(storage, stack.env["TABLE_PREFIX"]) as tables:
        repaired = sum((await StatusTable(tables).list_runs())[0].repaired.values())
    return {f"{label}_repaired": repaired,
            f"{label}_anny_reads": sum(v for k, v in anny.items() if k.startswith("GET")),
            f"{label}_anny_writes": sum(v for k, v in anny.items() if k.split()[0] in ("POST", "PATCH", "DELETE")),
            f"{label}_graph_requests": stack.graph.call_counts().get("total", 0),
            f"{label}_seconds": elapsed}


async def main() -> None:
    with running_stack(graph_latency_ms=100, anny_latency_ms=100) as stack:
        mapped = rooms(stack)
        for resource, room in mapped:
            await admin(stack, "rules.add", anny_resource=resource, room=room)
            for day in range(2, 2 + ITEMS):
                stack.anny.person_create_booking(resource, local_time(day, 0), local_time(day, 30))
                meeting(stack, room, day)
        stack.subscribe_anny_webhooks()
        await admin(stack, "activate")
        await quiesce(stack)
        result = await measured(stack, "sweep", "first_sweep")  # also reads the blockers activation wrote
        await quiesce(stack)
        result |= await measured(stack, "sweep", "quiet_sweep")
        stack.anny.set_webhook_faults(drop_next=ROOMS)
        stack.graph.set_notification_faults(drop_next=ROOMS)
        for resource, room in mapped:
            stack.anny.person_create_booking(resource, local_time(20, 0), local_time(20, 30))
            meeting(stack, room, 21)
            await asyncio.sleep(0.3)  # one notification POST per room, so that each one is lost
        await stack.anny.settle()
        await stack.graph.wait_deliveries()
        result |= await measured(stack, "sweep", "repairing_sweep")
        await quiesce(stack)
        result |= await measured(stack, "nightly", "quiet_nightly")
        result["rooms"] = ROOMS
    emit(result)


if __name__ == "__main__":
    asyncio.run(main())
