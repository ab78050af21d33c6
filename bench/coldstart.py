"""The Graph path in a fresh interpreter: `import function_app`, the first Graph write, then the
client CPU per write and per delta event. Run by bench.outbound / bench.graph against the Graph
emulator (which runs in the parent process, so its CPU is not counted here); prints a JSON line.
"""

from __future__ import annotations

import time

START = time.perf_counter()

import asyncio  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
from datetime import UTC, datetime, timedelta  # noqa: E402

import function_app  # noqa: E402, F401
from sync.graph import GraphGateway, parse_event  # noqa: E402
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
        cpu = time.process_time()
        for index in range(1, WRITES + 1):
            await gateway.create_event(room, desired(index), transaction_id(f"cold-start-{index}", 0))
        cpu_ms = (time.process_time() - cpu) * 1000 / WRITES
    finally:
        await gateway.close()
    return {"first_graph_call_s": first, "cpu_ms_per_graph_write": cpu_ms}


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
