"""The Graph path in a fresh interpreter: `import function_app`, the first Graph write, then the
client CPU per write (one at a time and 4 at a time, beside bare httpx POSTs measured the same
ways) and per delta event. Run by bench.outbound against the Graph emulator (which runs in a
process of its own, so its CPU is not counted here); prints a JSON line.
"""

from __future__ import annotations

import time

START = time.perf_counter()

import asyncio  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
from collections.abc import Awaitable, Callable  # noqa: E402
from datetime import UTC, datetime, timedelta  # noqa: E402

import httpx  # noqa: E402

import function_app  # noqa: E402, F401
from sync.graph import MAILBOX_CONCURRENCY, GraphGateway, event_body, parse_event  # noqa: E402
from sync.keys import transaction_id  # noqa: E402
from sync.model import DesiredEvent  # noqa: E402
from sync.settings import Settings  # noqa: E402

WRITES = 100
DELTA_EVENTS = 2000


def desired(index: int) -> DesiredEvent:
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1, minutes=30 * index)
    return DesiredEvent(f"cold-start-{index}", f"Cold start {index}", start, start + timedelta(minutes=30))


async def graph_calls(room: str) -> dict[str, float]:
    gateway = GraphGateway.from_settings(Settings.from_env())
    try:
        started = time.perf_counter()
        await gateway.create_event(room, desired(0), transaction_id("cold-start-0", 0))
        first = time.perf_counter() - started

        async def write(index: int) -> None:
            await gateway.create_event(room, desired(index), transaction_id(f"cold-start-{index}", 0))

        result = {"first_graph_call_s": first,
                  "cpu_ms_per_graph_write_one_at_a_time": await cpu_ms_per_write(write, 1, 1),
                  "cpu_ms_per_graph_write": await cpu_ms_per_write(write, MAILBOX_CONCURRENCY, WRITES + 1)}
    finally:
        await gateway.close()
    return result | await raw_httpx_floor(gateway.url("users", room, "events"))


async def cpu_ms_per_write(write: Callable[[int], Awaitable[None]], in_flight: int, first: int) -> float:
    """Client CPU per write, `in_flight` at a time. One at a time, each write follows 100 ms of
    idling, and on this machine even a bare httpx POST then costs about 2 ms (a cold CPU and event
    loop); under load the app writes up to the mailbox's 4 at a time."""
    cpu = time.process_time()
    for start in range(first, first + WRITES, in_flight):
        await asyncio.gather(*(write(index) for index in range(start, start + in_flight)))
    return (time.process_time() - cpu) * 1000 / WRITES


async def raw_httpx_floor(url: str) -> dict[str, float]:
    """The same writes to `url` as bare httpx POSTs (no SDK, no middleware): the floor the gateway's
    CPU is compared with, measured the same two ways in the same process."""
    settings = Settings.from_env()
    headers = {"Authorization": f"Bearer {settings.graph_static_token}", "Content-Type": "application/json",
               "Accept": "application/json"}
    async with httpx.AsyncClient(headers=headers) as client:
        async def write(index: int) -> None:
            body = event_body(desired(index)) | {"transactionId": f"raw-{index}"}
            json.loads((await client.post(url, content=json.dumps(body).encode())).content)

        await write(0)
        return {"cpu_ms_per_raw_httpx_write_one_at_a_time": await cpu_ms_per_write(write, 1, 1),
                "cpu_ms_per_raw_httpx_write": await cpu_ms_per_write(write, MAILBOX_CONCURRENCY, WRITES + 1)}


def delta_page() -> bytes:
    """A delta page as Graph sends it (the fields of a room calendar's event), plus removals."""
    events = [{"@odata.etag": f'W/"{i}"', "id": f"AAMkAD{i:08d}", "changeKey": f"ck{i}", "subject": f"Meeting {i}",
               "start": {"dateTime": "2026-12-01T09:00:00.0000000", "timeZone": "UTC"},
               "end": {"dateTime": "2026-12-01T09:30:00.0000000", "timeZone": "UTC"},
               "isAllDay": False, "showAs": "busy", "sensitivity": "normal", "isCancelled": False,
               "categories": [], "type": "singleInstance", "isReminderOn": True,
               "createdDateTime": "2026-11-30T07:00:00.1234567Z",
               "attendees": [{"type": "required", "emailAddress": {"name": "A", "address": "a@contoso.example"}}],
               "organizer": {"emailAddress": {"name": "A", "address": "a@contoso.example"}}}
              for i in range(DELTA_EVENTS - DELTA_EVENTS // 10)]
    events += [{"id": f"AAMkAD-gone-{i}", "@removed": {"reason": "deleted"}} for i in range(DELTA_EVENTS // 10)]
    return json.dumps({"value": events, "@odata.deltaLink": "https://graph.microsoft.com/v1.0/delta?token=x"}).encode()


def delta_parsing() -> float:
    body = delta_page()
    started = time.process_time()
    parsed = [parse_event(e) for e in json.loads(body)["value"]]
    assert len(parsed) == DELTA_EVENTS
    return (time.process_time() - started) * 1000 / DELTA_EVENTS


def main() -> None:
    imported = time.perf_counter() - START
    result = {"import_s": imported} | asyncio.run(graph_calls(sys.argv[1]))
    result["cold_start_s"] = imported + result["first_graph_call_s"]
    result["cold_start_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["delta_parse_ms_per_event"] = delta_parsing()
    result["modules_loaded"] = len(sys.modules)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
