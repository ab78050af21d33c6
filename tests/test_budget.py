"""The organisation's anny budget, shared by instances through Azurite (no mock of Storage)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from sync.budget import BACKFILL, LIVE, Limits, OrgBudget, wait_for_room
from sync.settings import StorageSettings
from sync.state import StateStore


def most_in_any_window(stamps: list[float], window_s: float) -> int:
    stamps = sorted(stamps)
    best, first = 0, 0
    for last, stamp in enumerate(stamps):
        while stamp - stamps[first] >= window_s:
            first += 1
        best = max(best, last - first + 1)
    return best


@pytest.fixture
async def two_instances(storage: StorageSettings, table_prefix: str) -> AsyncIterator[tuple[StateStore, StateStore]]:
    async with StateStore(storage, table_prefix) as one, StateStore(storage, table_prefix) as two:
        yield one, two


async def spend(budget: OrgBudget, kind: str, count: int, stamps: list[float], level: str = LIVE) -> None:
    async def one() -> None:
        await budget.acquire(kind, level)  # type: ignore[arg-type]
        stamps.append(time.time())

    await asyncio.gather(*(one() for _ in range(count)))


async def test_two_instances_together_never_exceed_the_limit_in_any_window(two_instances):
    limits = Limits(reads=40, writes=10, window_s=1.0)
    first, second = (OrgBudget(store, limits) for store in two_instances)
    writes: list[float] = []
    reads: list[float] = []
    await asyncio.gather(spend(first, "writes", 18, writes), spend(second, "writes", 17, writes),
                         spend(first, "reads", 45, reads), spend(second, "reads", 45, reads))
    assert len(writes) == 35 and len(reads) == 90
    assert most_in_any_window(writes, limits.window_s) <= limits.writes
    assert most_in_any_window(reads, limits.window_s) <= limits.reads


async def test_backfill_leaves_the_reserve_to_live_changes(two_instances):
    limits = Limits(reads=40, writes=20, window_s=60.0, live_reserve=0.25)  # nothing ages out meanwhile
    backfill_budget, live_budget = (OrgBudget(store, limits) for store in two_instances)
    order: list[str] = []
    share_used = asyncio.Event()

    async def backfill() -> None:
        await backfill_budget.acquire("writes", BACKFILL)
        order.append("backfill")
        if len(order) == limits.cap("writes", BACKFILL):
            share_used.set()

    tasks = [asyncio.create_task(backfill()) for _ in range(20)]
    await share_used.wait()
    await live_budget.acquire("writes", LIVE)  # the backfill has used its share of the window
    order.append("live")
    await asyncio.sleep(0.2)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert order == ["backfill"] * 15 + ["live"]  # the reserve was there; backfill waits for the window


async def test_a_429_pauses_every_instance_until_retry_after(two_instances):
    limits = Limits(reads=40, writes=10, window_s=1.0)
    first, second = (OrgBudget(store, limits) for store in two_instances)
    await first.acquire("reads")
    paused_at = time.time()
    await first.throttled(0.6)
    await second.acquire("reads")
    assert time.time() >= paused_at + 0.6
    assert (await second.usage()).throttled == {"anny": 1}


async def test_unreachable_budget_table_falls_back_to_a_local_rate_and_says_so(azurite, table_prefix):
    dead = StorageSettings(connection_string=azurite.connection_string.replace(
        f":{azurite.table_port}", ":9"))  # nothing listens there
    limits = Limits(reads=40, writes=20, window_s=1.0, fallback_share=0.1)
    store = StateStore(dead, table_prefix, retry_total=0)
    await store.open(create_tables=False)
    try:
        budget = OrgBudget(store, limits)
        stamps: list[float] = []
        await spend(budget, "writes", 3, stamps)
        assert most_in_any_window(stamps, limits.window_s) <= limits.fallback_limit("writes") == 2
        usage = await budget.usage()
        assert usage.mode.startswith("local fallback") and "unreachable" in usage.mode
    finally:
        await store.close()


def test_wait_for_room_frees_the_oldest_slices_first():
    grants = [(10.0, 4), (11.0, 4), (12.0, 2)]
    assert wait_for_room(grants, now=12.5, horizon_s=5.0, cap=10) == pytest.approx(2.5)  # 10.0 + 5 - 12.5
    assert wait_for_room(grants, now=12.5, horizon_s=5.0, cap=11) == 0.0
    assert wait_for_room(grants, now=12.5, horizon_s=5.0, cap=3) == pytest.approx(3.5)  # two slices must go
