"""`make bench-ingress`: how fast the notification endpoint answers at its maximum body size; one JSON line.

Graph drops endpoints that answer slower than 3 s. Two bodies of the largest accepted size
(NOTIFICATION_MAX_BODY_BYTES) are posted repeatedly: one full of invented subscription ids (the
amplification attack of issue 12), one a realistic Graph batch for the mapped room.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx

from bench.common import ROOM, emit, map_room, percentile, running_stack
from devhost.stack import LocalStack
from sync.settings import Settings, StorageSettings
from sync.state import Subscription, SubscriptionsTable, Tables

SAMPLES = 20


def _filled(item: Any, limit: int) -> bytes:
    """A `{"value": [...]}` body of copies of `item(n)`, as close to `limit` bytes as possible."""
    one = len(json.dumps(item(0))) + 2
    count = (limit - 16) // one
    while True:
        body = json.dumps({"value": [item(n) for n in range(count)]}).encode()
        if len(body) <= limit:
            return body
        count -= max(1, (len(body) - limit) // one + 1)


def _unknown(n: int) -> dict[str, Any]:
    return {"subscriptionId": f"{n:08d}-0000-4000-8000-000000000000", "clientState": "guess",
            "changeType": "updated", "resource": "Users/x/Events/y", "tenantId": "t"}


def _realistic(sub: Subscription) -> Any:
    def item(n: int) -> dict[str, Any]:
        event_id = f"AAMkAGI2TG93AAA{n:08d}" + "A" * 120 + "="
        path = f"Users/{ROOM}/Events/{event_id}"
        return {"subscriptionId": sub.subscription_id, "clientState": sub.client_state,
                "subscriptionExpirationDateTime": "2026-12-06T11:00:00.0000000Z", "changeType": "updated",
                "resource": path, "tenantId": "84bd8158-6d4d-4958-8b9f-9d6445542f95",
                "resourceData": {"@odata.type": "#Microsoft.Graph.Event", "@odata.id": path,
                                 "@odata.etag": 'W/"DwAAABYAAADkrWGo7bouTKlsgTZMr9KwAAAUWRHf"', "id": event_id}}
    return item


async def _timed(stack: LocalStack, body: bytes) -> tuple[list[float], dict[str, Any]]:
    times, answer = [], {}
    async with httpx.AsyncClient(base_url=stack.host.url, timeout=60) as client:
        for _ in range(SAMPLES):
            started = time.perf_counter()
            response = await client.post("/api/graph/notify", content=body, params={"code": stack.keys.default})
            times.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 202, response.text
            answer = response.json()
    return times, answer


async def main() -> None:
    with running_stack() as stack:
        await map_room(stack, subscribe_graph=True)
        storage = StorageSettings(connection_string=stack.azurite.connection_string)
        async with Tables(storage, stack.env["TABLE_PREFIX"]) as tables:
            [sub] = await SubscriptionsTable(tables).list_subscriptions()
        limit = Settings.from_env(stack.env).notification_max_body_bytes
        result: dict[str, Any] = {"benchmark": "ingress", "max_body_bytes": limit}
        for name, body in (("unknown_ids", _filled(_unknown, limit)), ("realistic", _filled(_realistic(sub), limit))):
            times, answer = await _timed(stack, body)
            result.update({f"{name}_body_bytes": len(body), f"{name}_notifications": answer["received"],
                           f"{name}_dropped": answer["dropped"], f"{name}_p50_ms": percentile(times, 50),
                           f"{name}_max_ms": max(times)})
        emit(result)


if __name__ == "__main__":
    asyncio.run(main())
