"""The organisation's anny budget, shared by instances through Azurite (no mock of Storage)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from azure.core.exceptions import ServiceResponseError

from sync.budget import (
    ANSWER_GRAIN_S,
    BACKFILL,
    CLOCK_SKEW_S,
    LIVE,
    Grant,
    Limits,
    OrgBudget,
    parse_grants,
    wait_for_room,
)
from sync.settings import StorageSettings
from tests.state_tables import AllTables


def most_in_any_window(stamps: list[float], window_s: float) -> int:
    stamps = sorted(stamps)
    best, first = 0, 0
    for last, stamp in enumerate(stamps):
        while stamp - stamps[first] >= window_s:
            first += 1
        best = max(best, last - first + 1)
    return best


@pytest.fixture
async def two_instances(storage: StorageSettings, table_prefix: str) -> AsyncIterator[tuple[AllTables, AllTables]]:
    async with AllTables(storage, table_prefix) as one, AllTables(storage, table_prefix) as two:
        yield one, two


async def spend(budget: OrgBudget, kind: str, count: int, stamps: list[float], level: str = LIVE) -> None:
    async def one() -> None:
        async with budget.spending(kind, level):  # type: ignore[arg-type]
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
        async with backfill_budget.spending("writes", BACKFILL):
            order.append("backfill")
        if len(order) == limits.cap("writes", BACKFILL):
            share_used.set()

    tasks = [asyncio.create_task(backfill()) for _ in range(20)]
    await share_used.wait()
    async with live_budget.spending("writes", LIVE):  # the backfill has used its share of the window
        order.append("live")
    await asyncio.sleep(0.2)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert order == ["backfill"] * 15 + ["live"]  # the reserve was there; backfill waits for the window


async def test_a_429_pauses_every_instance_until_retry_after(two_instances):
    limits = Limits(reads=40, writes=10, window_s=1.0)
    first, second = (OrgBudget(store, limits) for store in two_instances)
    await spend(first, "reads", 1, [])
    paused_at = time.time()
    await first.throttled(0.6)
    await spend(second, "reads", 1, [])
    assert time.time() >= paused_at + 0.6
    assert (await second.usage()).throttled == {"anny": 1}


async def test_unreachable_budget_table_falls_back_to_a_local_rate_and_says_so(azurite, table_prefix):
    dead = StorageSettings(connection_string=azurite.connection_string.replace(
        f":{azurite.table_port}", ":9"))  # nothing listens there
    limits = Limits(reads=40, writes=20, window_s=1.0, fallback_share=0.1)
    store = AllTables(dead, table_prefix, retry_total=0)
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


class CuttableLink:
    """A TCP relay in front of Azurite's table endpoint that the test can cut and restore: the
    network fault an instance meets when it cannot reach the budget table (Storage itself is real)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.up = True
        self._open: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return self._server.sockets[0].getsockname()[1]

    def cut(self) -> None:
        self.up = False
        for writer in list(self._open):
            writer.close()

    async def stop(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.up:
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._open |= {writer, up_writer}

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                sink.close()
                self._open.discard(sink)

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


@pytest.fixture
async def cuttable(azurite, table_prefix: str) -> AsyncIterator[tuple[CuttableLink, AllTables, AllTables]]:
    """Two instances' stores: the first reaches the tables through a link the test can cut."""
    link = CuttableLink(azurite.table_port)
    port = await link.start()
    relayed = StorageSettings(connection_string=azurite.connection_string.replace(
        f":{azurite.table_port}", f":{port}"))
    direct = StorageSettings(connection_string=azurite.connection_string)
    try:
        async with AllTables(direct, table_prefix) as second:
            first = AllTables(relayed, table_prefix, retry_total=0)
            await first.open(create_tables=False)
            try:
                yield link, first, second
            finally:
                await first.close()
    finally:
        await link.stop()


async def test_another_instances_fallback_is_shown_once_it_reaches_the_table_again(cuttable):
    link, first_store, second_store = cuttable
    limits = Limits(reads=40, writes=20, window_s=1.0)
    cut_off = OrgBudget(first_store, limits, instance="instance-a")
    answering = OrgBudget(second_store, limits, instance="instance-b")
    link.cut()
    await spend(cut_off, "writes", 1, [])
    mine = (await cut_off.usage()).fallbacks
    assert [(f["instance"], f["state"], f["this_instance"]) for f in mine] == [("instance-a", "ongoing", True)]
    assert (await answering.usage()).fallbacks == []  # nothing of instance-a can reach the table yet
    link.up = True
    await asyncio.sleep(limits.window_s / 4)  # when a fallen-back instance tries the table again
    await spend(cut_off, "writes", 1, [])
    assert cut_off.fallback_since is None
    seen = (await answering.usage()).fallbacks
    assert [(f["instance"], f["state"], f["this_instance"]) for f in seen] == [("instance-a", "ended", False)]
    assert seen[0]["since"] <= seen[0]["until"] and "Error" in seen[0]["error"]
    await cut_off.close()


async def test_an_instance_in_fallback_is_shown_by_the_others_while_it_lasts(two_instances, monkeypatch):
    first_store, second_store = two_instances
    limits = Limits(reads=40, writes=20, window_s=60.0)
    in_fallback = OrgBudget(first_store, limits, instance="instance-a")
    answering = OrgBudget(second_store, limits, instance="instance-b")

    async def timed_out(kind: str) -> None:  # fault injection: only the budget entity fails (a
        raise ServiceResponseError("read timed out")  # TCP cut would take the whole account away)

    monkeypatch.setattr(first_store, "get_budget", timed_out)
    await spend(in_fallback, "reads", 1, [])
    await in_fallback.close()  # lets its background record reach the table
    seen = (await answering.usage()).fallbacks
    assert [(f["instance"], f["state"], f["until"]) for f in seen] == [("instance-a", "ongoing", None)]
    assert "read timed out" in seen[0]["error"]
    assert (await answering.usage()).mode == "shared (Table Storage)"  # the answering instance is fine


async def test_a_steady_stream_of_single_requests_claims_slices_not_one_table_write_each(two_instances):
    store, _ = two_instances
    limits = Limits(reads=400, writes=100, window_s=60.0)  # slices of up to 20 reads, a lease of 1 s
    budget = OrgBudget(store, limits)
    before = store.operations
    for _ in range(40):  # one webhook's read at a time, as a steady 20/s would send them
        await spend(budget, "reads", 1, [])
        await asyncio.sleep(0.005)
    assert store.operations - before <= 7  # slices of 1, 2, 4, 8, 16, 20 (was 40: one per read)
    await asyncio.sleep(limits.lease_s * 2.2)  # idle: the next lone request claims a slice of one
    await spend(budget, "reads", 1, [])
    grants = parse_grants((await store.get_budget("reads")).grants, limits.horizon_s)
    assert grants[-1].tokens == 1 and sum(g.tokens for g in grants) <= 40 + limits.slice_max("reads") + 1


def test_wait_for_room_frees_the_slices_that_end_first():
    grants = [Grant(10.0, 4, 15.0), Grant(11.0, 4, 16.0), Grant(12.0, 2, 14.0)]
    assert wait_for_room(grants, now=12.5, cap=10) == pytest.approx(1.5)  # the last slice ends first
    assert wait_for_room(grants, now=12.5, cap=11) == 0.0
    assert wait_for_room(grants, now=12.5, cap=5) == pytest.approx(2.5)  # two slices must go: 14.0, then 15.0


def test_a_log_written_before_slices_carried_their_end_counts_each_for_the_default_horizon():
    assert parse_grants("[[10.0,4],[11.0,2,13.5,\"ab12\"]]", horizon_s=7.0) == [
        Grant(10.0, 4, 17.0), Grant(11.0, 2, 13.5, "ab12")]


async def test_requests_that_reach_anny_late_on_a_slow_instance_still_fit_any_window(two_instances):
    """A loaded instance spends a token and its request reaches anny only later (the event loop
    stalls, the connection is slow); the next slice, spent promptly, must not land in the same window.
    Before the send allowance was absolute, a 2 s window kept 17 ms for this: 8 of 4 reads in 2 s."""
    store, _ = two_instances
    limits = Limits(reads=4, writes=2, window_s=2.0)
    budget = OrgBudget(store, limits)
    arrivals: list[float] = []
    spent = 0

    async def one() -> None:
        nonlocal spent
        async with budget.spending("reads"):
            spent += 1
            if spent <= limits.reads:  # the first window's requests are the slow ones
                await asyncio.sleep(0.5)
            arrivals.append(time.time())

    await asyncio.gather(*(one() for _ in range(2 * limits.reads)))
    assert most_in_any_window(arrivals, limits.window_s) <= limits.reads


async def test_a_slice_stops_counting_a_window_after_its_last_answer_and_only_for_the_tokens_spent(two_instances):
    """The worst case (a token sent at the end of its lease, counted a margin later) is what a
    slice counts for while its requests are out; once anny has answered them all, they were
    counted by then. Tokens granted and never spent count for nothing."""
    one, two = two_instances
    limits = Limits(reads=40, writes=10, window_s=2.0)  # slices of up to 2 writes; the default margin is 1 s
    budget = OrgBudget(one, limits)
    await spend(budget, "writes", 3, [])  # slices of 1 and 2: answered at once
    await asyncio.sleep(limits.lease_s * 1.5)
    answered = time.time()
    await spend(budget, "writes", 1, [])  # the next claim writes the finished slices back as spent
    seen = OrgBudget(two, limits)  # another instance reads them so
    grants = parse_grants((await two.get_budget("writes")).grants, limits.horizon_s)
    finished = grants[:-1]
    assert sum(g.tokens for g in finished) == 3
    assert all(g.until <= answered + limits.window_s + 0.2 < g.at + limits.horizon_s for g in finished)
    assert (await seen.usage()).writes_used == 4


async def test_each_token_spent_counts_until_a_window_after_its_own_answer(two_instances):
    """On a busy instance the answers of one slice are read far apart: the slowest must not hold
    the others' places in the window (before, the whole slice counted until its last answer)."""
    one, two = two_instances
    limits = Limits(reads=400, writes=100, window_s=60.0)  # a lease of 1 s, slices of up to 20 reads
    budget = OrgBudget(one, limits)
    await spend(budget, "reads", 1, [])  # a slice of one, spent within its lease: the next is of two
    answers: list[float] = []

    async def read(answer_after_s: float) -> None:
        async with budget.spending("reads"):
            await asyncio.sleep(answer_after_s)
        answers.append(time.time())

    await asyncio.gather(read(0.0), read(0.4))  # both from the slice of two
    await spend(budget, "reads", 1, [])  # the next claim writes the finished slice back
    grants = parse_grants((await two.get_budget("reads")).grants, limits.horizon_s)
    pair = sorted((g for g in grants if g.at == grants[1].at), key=lambda g: g.until)
    assert [g.tokens for g in pair] == [1, 1]
    for grant, answered in zip(pair, sorted(answers), strict=True):
        assert answered + limits.window_s <= grant.until <= answered + limits.window_s + 0.2


async def test_tokens_granted_and_not_spent_are_given_back_with_the_next_slice(two_instances):
    store, _ = two_instances
    limits = Limits(reads=400, writes=100, window_s=2.0)
    budget = OrgBudget(store, limits)
    await spend(budget, "reads", 8, [])  # its slices grow with the demand
    await spend(budget, "reads", 1, [])  # a slice of twice the last: most of it left unspent
    await asyncio.sleep(limits.lease_s * 1.5)
    await spend(budget, "reads", 1, [])
    grants = parse_grants((await store.get_budget("reads")).grants, limits.horizon_s)
    assert sum(g.tokens for g in grants) == 10  # what was spent, not what was granted


async def test_requests_waiting_for_the_budget_are_served_in_the_order_they_came(two_instances):
    """A queue's work items wait for the budget side by side. Served in the order they asked, the
    earliest items finish first and the host hands out new ones while the rest still wait; served
    at random, every item ended at about the same moment and the budget idled until new ones asked.
    Only the first in line claims and sleeps: a crowd woken together once each re-read the log."""
    store, _ = two_instances
    limits = Limits(reads=40, writes=4, window_s=0.5)
    budget = OrgBudget(store, limits)
    served: list[int] = []

    async def one(n: int) -> None:
        async with budget.spending("writes", BACKFILL):
            served.append(n)

    asking = []
    for n in range(16):
        asking.append(asyncio.create_task(one(n)))
        await asyncio.sleep(0)  # each asks before the next
    await asyncio.gather(*asking)
    assert served == list(range(16))


class SharedClock:
    """One clock for both instances, moved on by their sleeps: when a token is granted is exact."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


async def spent_writes_in_the_log(store: AllTables, limits: Limits, clock: SharedClock) -> tuple[OrgBudget, float]:
    """An instance spends the whole window (one write now, one after its lease, both answered at
    once) and writes the first back as spent with its second claim; returns it and the first answer."""
    budget = OrgBudget(store, limits, clock=clock, sleep=clock.sleep)
    answered = clock.now
    await spend(budget, "writes", 1, [])
    clock.now += limits.lease_s * 2
    await spend(budget, "writes", 1, [])
    return budget, answered


async def granted_at(budget: OrgBudget, clock: SharedClock) -> float:
    async with budget.spending("writes"):
        return clock.now


async def test_an_instance_sends_again_one_window_after_its_own_answer(two_instances):
    """Its own answers were read on its own clock: no allowance for another clock's skew is due
    (one was, and at saturation every token held its place 0.1 s beyond the window)."""
    store, _ = two_instances
    limits = Limits(reads=40, writes=2, window_s=10.0)  # slices of one write
    clock = SharedClock(1_000.0)
    budget, answered = await spent_writes_in_the_log(store, limits, clock)
    clock.now = answered + limits.window_s + ANSWER_GRAIN_S
    assert await granted_at(budget, clock) == answered + limits.window_s + ANSWER_GRAIN_S


async def test_another_instance_counts_those_answers_a_clock_skew_longer(two_instances):
    one, two = two_instances
    limits = Limits(reads=40, writes=2, window_s=10.0)
    clock = SharedClock(1_000.0)
    _, answered = await spent_writes_in_the_log(one, limits, clock)
    clock.now = answered + limits.window_s + ANSWER_GRAIN_S
    assert await granted_at(OrgBudget(two, limits, clock=clock, sleep=clock.sleep), clock) >= (
        answered + limits.window_s + CLOCK_SKEW_S)
