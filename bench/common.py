"""Shared set-up of the benchmarks: the real stack (Azurite, emulators, runner polling the queue)."""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from bench.emulators import RemoteEmulators
from devhost.azurite import start_azurite
from devhost.host import LocalFunctionsHost, QueueOptions
from devhost.stack import Emulators, LocalStack, start_stack
from sync.admin import activate, run_command
from sync.services import Services, _by_loop
from sync.settings import Settings, StorageSettings
from sync.state import StatusTable, Tables
from sync.worker import Worker

BERLIN = ZoneInfo("Europe/Berlin")
ROOM = "bench.room@contoso.example"
# anny's limits as the benchmarks set them: its counts, per a window of 6 s instead of 60 s
ANNY_READS, ANNY_WRITES, ANNY_WINDOW_S = 400, 100, 6


@contextmanager
def running_stack(graph_latency_ms: float = 0, anny_latency_ms: int = 0, *, emulators_apart: bool = False,
                  **settings: str) -> Iterator[LocalStack]:
    """Azurite, both emulators and the app under the runner. `emulators_apart`: each emulator in a
    process of its own (bench.emulators), so that their CPU is not taken from the app's process."""
    azurite = start_azurite()
    emulators: Emulators | RemoteEmulators = RemoteEmulators.start() if emulators_apart else Emulators.start()
    emulators.graph.set_latency(graph_latency_ms)
    emulators.anny.set_latency(anny_latency_ms)
    # The runner polls the queues as the Functions host does (host.json values, no test shortcuts).
    stack = start_stack(azurite, emulators, "bench", poll_queues=True,  # type: ignore[arg-type]  # same shape
                        queues=QueueOptions.from_host_json(), **settings)
    try:
        yield stack
    finally:
        stack.stop()
        emulators.stop()
        azurite.stop()


async def map_room(stack: LocalStack, subscribe_graph: bool) -> str:
    """One mapped room; returns the anny resource id."""
    resource = stack.anny.add_resource("Bench Room", timezone="Europe/Berlin")
    stack.anny.add_service("Meeting")
    stack.graph.add_room(ROOM, "Bench Room")
    storage = StorageSettings(connection_string=stack.azurite.connection_string)
    services = await Services.open(Settings.from_env(stack.env))
    try:
        await run_command("rules.add", {"anny_resource": resource["id"], "room": ROOM}, Worker(services))
    finally:
        await services.close()
    stack.subscribe_anny_webhooks()
    if subscribe_graph:
        services = await Services.open(Settings.from_env(stack.env))
        try:
            await activate(Worker(services))
        finally:
            await services.close()
    else:
        # Active, but without Graph subscriptions: the anny → Outlook path measured on its own
        # (what the echoes of our writes cost is the inbound benchmark's and the e2e tests' part).
        async with Tables(storage, stack.env["TABLE_PREFIX"]) as tables:
            store = StatusTable(tables)
            status = await store.get_status()
            status.state = "active"
            await store.save_status(status)
    return resource["id"]


def local_time(days: int, minutes: int) -> str:
    base = datetime.combine(datetime.now(BERLIN).date() + timedelta(days=days), datetime.min.time())
    return (base + timedelta(hours=7, minutes=minutes)).isoformat()


def app_table_operations(stack: LocalStack) -> int:
    """Table requests made so far by the app inside the runner."""
    return host_table_operations(stack.host)


def host_table_operations(host: LocalFunctionsHost) -> int:
    """Table requests made so far by the app inside this runner (an instance of the app)."""
    services = _by_loop.get(host.server.loop)
    return services.tables.operations if services else 0


async def quiesce(stack: LocalStack, seconds: float = 60) -> None:
    """Wait until deliveries are done and the queue is empty (the runner polls by itself)."""
    deadline = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < deadline:
        await stack.anny.settle()
        await stack.graph.wait_deliveries()
        await stack.drain(seconds)
        await asyncio.sleep(0.5)
        props = await stack.host.run(_queue_depth(stack))
        if props == 0:
            return
    raise TimeoutError("the stack did not quiesce")


async def _queue_depth(stack: LocalStack) -> int:
    client = await stack.host.ensure_queue("sync-work")
    return (await client.get_queue_properties()).approximate_message_count


def graph_time(value: str) -> datetime:
    return datetime.fromisoformat(value.rstrip("Z")[:26]).replace(tzinfo=UTC)


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    return statistics.quantiles(ordered, n=100, method="inclusive")[int(pct) - 1]


def least_time_s(requests: int, limit: int, window_s: float) -> float:
    """The least time from the first to the last of `requests` requests when at most `limit` may
    fall in any `window_s` seconds (anny's limits, a rolling window: the strictest reading).

    Requests i and i + limit can never be less than a window apart (else that window held
    limit + 1 of them), so the last comes at least ⌊(requests − 1) / limit⌋ windows after the
    first; sending each as early as that allows reaches it. (The benchmarks once took
    (requests − limit) / limit windows, less than any client can reach unless requests is a
    multiple of limit: 12.6 s instead of 18 s for 310 writes at 100 per 6 s; and the big room
    requests / limit windows, more: 60 s instead of 54 s for 1,000.)"""
    return (max(requests, 1) - 1) // limit * window_s


def emit(result: dict) -> None:
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}))
    sys.stdout.flush()

