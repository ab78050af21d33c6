"""`make bench-inbound`: Outlook → anny costs and latency on the real stack; prints one JSON line.

Both emulators answer with 100 ms latency; the runner polls the queue with host.json's settings.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import httpx

from bench.common import ROOM, app_table_operations, emit, graph_time, map_room, percentile, quiesce, running_stack
from devhost.stack import LocalStack
from sync.inbound import blocker_note

BURST = 100
NOTIFY_SAMPLES = 300


def person_meeting(stack: LocalStack, index: int) -> dict:
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=2, hours=index)
    return stack.graph.person_create_event(ROOM, subject=f"Meeting {index}", time_zone="UTC",
                                           start=start.isoformat()[:19],
                                           end=(start + timedelta(minutes=30)).isoformat()[:19])


def blocker_writes(stack: LocalStack) -> int:
    return sum(v for k, v in stack.anny.counters().items()
               if k.split()[0] in ("POST", "PATCH", "DELETE") and "/bookings" in k)


async def burst(stack: LocalStack) -> dict[str, float]:
    """100 meetings created within one second: delta requests, blocker writes, change → blocker latency."""
    stack.graph.reset_counters()
    stack.anny.reset_counters()
    ops_before = app_table_operations(stack)
    started = time.perf_counter()
    events = []
    for index in range(BURST):
        events.append(person_meeting(stack, index))
        await asyncio.sleep(max(0.0, (index + 1) / BURST - (time.perf_counter() - started)))
    await quiesce(stack)
    delta = stack.graph.call_counts().get("GET /users/{mailbox}/calendarView/delta", 0)
    created = {b["note"]: datetime.fromisoformat(b["created_at"].replace("Z", "+00:00"))
               for b in stack.anny.bookings() if b["is_blocker"]}
    samples = []
    for event in events:
        blocked = created.get(blocker_note(ROOM, event["id"]))
        if blocked is not None:
            samples.append((blocked - graph_time(event["createdDateTime"])).total_seconds() * 1000)
    return {"delta_requests_per_burst_100": delta, "blocker_writes_per_change": blocker_writes(stack) / BURST,
            "table_ops_per_change": (app_table_operations(stack) - ops_before) / BURST,
            "blockers_created": len(samples), "latency_ms_p50": percentile(samples, 50),
            "latency_ms_p95": percentile(samples, 95)}


async def notify_answer_times(stack: LocalStack) -> dict[str, float]:
    """How fast graph_notify answers a valid notification (authenticated, verified, queued)."""
    [sub] = stack.graph.subscriptions()
    body = {"value": [{"subscriptionId": sub["id"], "clientState": await _client_state(stack, sub["id"]),
                       "changeType": "updated", "resource": f"Users/{ROOM}/Events/x", "tenantId": "t",
                       "resourceData": {"@odata.type": "#Microsoft.Graph.Event", "id": "x"}}]}
    samples = []
    async with httpx.AsyncClient(base_url=stack.host.url) as client:
        for _ in range(NOTIFY_SAMPLES):
            began = time.perf_counter()
            answer = await client.post("/api/graph/notify", params={"code": stack.keys.default}, json=body)
            samples.append((time.perf_counter() - began) * 1000)
            assert answer.status_code == 202
    await quiesce(stack)
    return {"notify_answer_ms_p50": percentile(samples, 50), "notify_answer_ms_p99": percentile(samples, 99)}


async def _client_state(stack: LocalStack, subscription_id: str) -> str:
    from sync.settings import StorageSettings
    from sync.state import SubscriptionsTable, Tables

    storage = StorageSettings(connection_string=stack.azurite.connection_string)
    async with Tables(storage, stack.env["TABLE_PREFIX"]) as tables:
        sub = await SubscriptionsTable(tables).get_subscription(subscription_id)
    assert sub is not None
    return sub.client_state


async def main() -> None:
    with running_stack(graph_latency_ms=100, anny_latency_ms=100) as stack:
        await map_room(stack, subscribe_graph=True)
        person_meeting(stack, 200)  # warm-up: first delta round, SDK loaded
        await quiesce(stack)
        result = await burst(stack)
        result |= await notify_answer_times(stack)
    emit(result)


if __name__ == "__main__":
    asyncio.run(main())
