"""The organisation's anny budget (architecture: anny's rate limits), shared by every instance of the app.

anny allows an organisation L requests per window W: by default 400 reads (GET) and 100
writes (POST, PATCH, PUT, DELETE) per 60 s, for everything that uses its token. anny does
not say whether its window is rolling or fixed (nor where a fixed one starts), so the only
safe promise is the strict one: **in any interval of W seconds, at most L requests**.

The scheme: a sliding log of *slices* in Table Storage, one entity per kind (`budget` table,
`anny`/`reads` and `anny`/`writes`), written with ETags. An instance that needs requests
claims a slice of k tokens by appending `[now, k, until, owner]` to the log, if the slices
still counting leave room; k follows its demand: the requests it has waiting, or
twice its last slice when that ran out within its lease, or what the last slice served when
it did not (one after an idle lease), at most L/20. It spends the slice within `lease` seconds,
without any further Table operation.

While its requests are out, a slice counts against the budget for the worst case: from its
grant until `lease + W + margin` later (the last token may be sent at the end of the lease;
`margin` absorbs network delay and clock skew between instances; at least 1 s, whatever W).
anny counts a request no later than it answers it, so once all of a slice's requests are
answered its instance knows better: each token spent counts until W after its own answer
(rounded up to ANSWER_GRAIN_S, so a slice's answers share a few log entries), and unspent
tokens are given back. The instance writes its finished slices back so with its next claim (no
extra Table operation): every instance sees them end early. Those ends were read on the writer's
clock, so every other instance counts them CLOCK_SKEW_S longer, the most two clocks may differ.
A request still unanswered keeps its slice counting whole until at least W from now (a stalled
event loop cannot slip a late request into a full window). So any W-second interval sees at most L
requests, whatever anny's window is, and at saturation a token holds its place in the window
for W plus its own answer time.

Cost: one Table operation per slice when uncontended (the entity and its ETag are kept
from the last write), three when another instance wrote in between (failed write, read,
write). A single live request claims a slice of one: one Table operation per anny request
when idle; at a steady rate or under load, one per five writes or twenty reads (before slices
followed demand, a steady 20 webhooks a second, one at a time, paid a Table write for each
read). The price: when a burst ends, up to one slice (L/20) granted and not spent until the
next claim gives it back. The log holds at most L entries (≤ 16 KiB). Backfill work may only use
L minus a reserve kept for live changes (2 % by default), so a live change gets its requests
within seconds during a long initial sync.

Requests that find no token wait in line, per priority, first come first served: only the
first in line claims (or sleeps until the log leaves room), so a crowd of waiters does not wake
together and each re-read the log, and a queue's earliest work items finish first.

An anny 429 that arrives anyway (another client of the organisation) pauses every
instance: `paused_until` is written to both logs. With the budget table unreachable, an
instance falls back to a conservative local rate (a tenth of L) and says so in `status`.

Every instance's fallback is shown, not only the answering one's. An instance in fallback
cannot be relied on to reach the table, so it writes its spell (`budget`/`fallback`/<instance>)
where and when it can: one try when it falls back and one at each retry of the table (every
W/4), both in the background and best effort (they get through when only the budget entity
failed, e.g. a timeout or a 503 on one request), and for certain once the table answers again,
with when the spell ended. `status` on any instance lists the spells that are ongoing or ended
within the last day. An instance cut off from storage altogether is seen by the others when it
gets back (or by its own `status` meanwhile): nothing else in the app can reach it either.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import random
import socket
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple

from azure.core.exceptions import AzureError

from sync.errors import ConcurrencyError, StateError
from sync.settings import Settings
from sync.state import BudgetRecord, BudgetTable, FallbackRecord

log = logging.getLogger(__name__)

Kind = Literal["reads", "writes"]
Priority = Literal["live", "backfill"]
KINDS: tuple[Kind, ...] = ("reads", "writes")
LIVE: Priority = "live"
BACKFILL: Priority = "backfill"
WRITE_METHODS = frozenset({"POST", "PATCH", "PUT", "DELETE"})
CLAIM_ATTEMPTS = 5
FALLBACK_SHOWN_S = 24 * 3600  # how long `status` lists a spell on the fallback rate after it ended
SEND_ALLOWANCE_S = 1.0  # the least margin for a token's request to reach anny after its lease
CLOCK_SKEW_S = 0.1  # between instances' clocks (NTP-synchronised): added to the ends another instance wrote
ANSWER_GRAIN_S = 0.02  # a spent token's end is rounded up to this: a slice's answers share a few log entries


def instance_id() -> str:
    """This instance's name: the platform's instance id where the host sets one, else host and process."""
    return (os.environ.get("WEBSITE_INSTANCE_ID") or os.environ.get("CONTAINER_NAME")
            or f"{socket.gethostname()}:{os.getpid()}")[:200]

_priority: ContextVar[Priority] = ContextVar("anny_budget_priority", default=LIVE)


@contextmanager
def priority(level: Priority) -> Iterator[None]:
    """Within this block (and the tasks it starts), anny requests and Graph calls run at `level`."""
    token = _priority.set(level)
    try:
        yield
    finally:
        _priority.reset(token)


def current_priority() -> Priority:
    return _priority.get()


def kind_of(method: str) -> Kind:
    """anny counts GET as a read and every other method as a write."""
    return "writes" if method.upper() in WRITE_METHODS else "reads"


@dataclass(frozen=True)
class Limits:
    """The organisation's anny limits, as configured (anny may raise them on request)."""

    reads: int = 400
    writes: int = 100
    window_s: float = 60.0
    live_reserve: float = 0.02  # share of each limit that backfill work leaves to live changes
    fallback_share: float = 0.1  # share one instance uses on its own while the budget table is unreachable

    @classmethod
    def configured(cls, settings: Settings) -> Limits:
        """The limits the app settings give (ANNY_READ_LIMIT, ANNY_WRITE_LIMIT, …)."""
        return cls(reads=settings.anny_read_limit, writes=settings.anny_write_limit,
                   window_s=float(settings.anny_limit_window_s),
                   live_reserve=settings.anny_live_reserve_percent / 100)

    @property
    def lease_s(self) -> float:
        return self.window_s / 60

    @property
    def margin_s(self) -> float:
        """How late after its lease a token's request may still be counted by anny: the delay between
        the budget handing a token out and anny counting the request (a loaded instance's event loop,
        the connection, the network) and clock skew between instances. These do not shrink with the
        window, so the margin has an absolute floor (a 2 s window once kept 17 ms, and 429s followed)."""
        return max(self.window_s / 120, SEND_ALLOWANCE_S)

    @property
    def horizon_s(self) -> float:
        """How long a granted slice counts against the budget."""
        return self.window_s + self.lease_s + self.margin_s

    def limit(self, kind: Kind) -> int:
        return self.reads if kind == "reads" else self.writes

    def cap(self, kind: Kind, level: Priority) -> int:
        """How much of the window `level` work may fill."""
        limit = self.limit(kind)
        if level == LIVE:
            return limit
        return max(1, limit - max(1, round(limit * self.live_reserve)))

    def slice_max(self, kind: Kind) -> int:
        return max(1, self.limit(kind) // 20)

    def fallback_limit(self, kind: Kind) -> int:
        return max(1, int(self.limit(kind) * self.fallback_share))


class Grant(NamedTuple):
    """A slice in the log: granted `at` to `owner`, `tokens` of them, counting against the budget `until`."""

    at: float
    tokens: int
    until: float
    owner: str = ""


Grants = list[Grant]


def parse_grants(text: str, horizon_s: float) -> Grants:
    """The log's slices; one written without its end (by an older version) counts for `horizon_s`."""
    try:
        return [Grant(float(at), int(count), float(rest[0]) if rest else float(at) + horizon_s,
                      str(rest[1]) if len(rest) > 1 else "")
                for at, count, *rest in json.loads(text or "[]")]
    except (ValueError, TypeError):
        log.warning("budget log unreadable; starting a new one")
        return []


def format_grants(grants: Grants) -> str:
    return json.dumps([[round(g.at, 3), g.tokens, round(g.until, 3), g.owner] for g in grants], separators=(",", ":"))


def wait_for_room(grants: Grants, now: float, cap: int) -> float:
    """Seconds until the log, as it stands, leaves room for one more token under `cap`."""
    used = sum(grant.tokens for grant in grants)
    for grant in sorted(grants, key=lambda g: g.until):
        if used < cap:
            break
        used -= grant.tokens
        if used < cap:
            return max(0.0, grant.until - now)
    return 0.0


@dataclass
class _Pool:
    """A slice this instance holds for one kind and priority: its tokens are spent within the
    lease, and its requests followed until anny has answered them all."""

    tokens: int = 0
    expires: float = 0.0
    granted: int = 0
    at: float = 0.0  # as written in the log
    taken: int = 0
    unanswered: int = 0
    answers: list[float] = field(default_factory=list)  # when each request was answered

    def finished(self, now: float) -> bool:
        """No token left to send, and every request sent answered."""
        return (self.tokens <= 0 or now >= self.expires) and self.unanswered == 0

    def answered(self, now: float) -> None:
        self.unanswered -= 1
        self.answers.append(now)

    def as_spent(self, grant: Grant, window_s: float, now: float) -> Grants:
        """What this slice of ours really counts against the budget, known from its own requests (anny
        counts a request no later than it answers it): a finished slice counts each token it spent
        until a window after that token's answer (nothing when it spent none); one with a request
        still unanswered counts whole, at least a window from now; an unfinished one as granted.

        Each token by its own answer, not the slice by its last: on a busy instance a slice's answers
        are read up to a second apart, and the slowest would hold the others' share of the window
        (measured in an initial sync: 0.73–1.27 s beyond the window per token on average, 0.43–0.83 s
        by their own)."""
        if self.finished(now):
            ends = Counter(math.ceil((answer + window_s) / ANSWER_GRAIN_S) * ANSWER_GRAIN_S
                           for answer in self.answers)
            return [grant._replace(tokens=count, until=round(until, 3)) for until, count in sorted(ends.items())]
        if self.unanswered:
            return [grant._replace(until=max(grant.until, now + window_s))]
        return [grant]

    def next_size(self, now: float, lease_s: float) -> int:
        """The slice this demand wants next: twice this one when it ran out within its lease (the
        demand outgrew it), what it served when it has just expired (the demand fell), and one
        after an idle lease (a lone request)."""
        if self.granted and self.tokens == 0 and now < self.expires:
            return 2 * self.granted
        if now < self.expires + lease_s:
            return self.granted - max(self.tokens, 0)
        return 1

    def take(self, now: float) -> bool:
        if self.tokens > 0 and now < self.expires:
            self.tokens -= 1
            self.taken += 1
            self.unanswered += 1
            return True
        return False


@dataclass
class _Bucket:
    kind: Kind
    pools: dict[Priority, _Pool] = field(default_factory=lambda: {LIVE: _Pool(), BACKFILL: _Pool()})
    waiting: dict[Priority, int] = field(default_factory=lambda: {LIVE: 0, BACKFILL: 0})
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # the line of requests that found no token, per priority (asyncio's Lock wakes in order)
    lines: dict[Priority, asyncio.Lock] = field(
        default_factory=lambda: {LIVE: asyncio.Lock(), BACKFILL: asyncio.Lock()})
    record: BudgetRecord | None = None  # the log as last written by us (with its ETag)
    paused_until: float = 0.0
    local_log: deque[float] = field(default_factory=deque)  # fallback: this instance's own sends
    sent: int = 0
    mine: dict[float, _Pool] = field(default_factory=dict)  # this instance's slices in the log, by `at`

    def take(self, level: Priority, now: float) -> _Pool | None:
        """A token, and the slice it is from: live work may use either pool, backfill only its own."""
        order = (LIVE, BACKFILL) if level == LIVE else (BACKFILL,)
        pool = next((self.pools[p] for p in order if self.pools[p].take(now)), None)
        if pool is not None:
            self.sent += 1
        return pool


class PriorityLimit:
    """At most `slots` calls at once (e.g. Graph's 4 per mailbox); live callers are let in before
    backfill callers that waited longer."""

    def __init__(self, slots: int) -> None:
        self._free = slots
        self._waiting: dict[Priority, deque[asyncio.Future[None]]] = {LIVE: deque(), BACKFILL: deque()}

    async def __aenter__(self) -> None:
        if self._free > 0 and not any(self._waiting.values()):
            self._free -= 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue = self._waiting[current_priority()]
        queue.append(future)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self._release()  # the slot was handed over just as we were cancelled
            else:
                queue.remove(future)
            raise

    async def __aexit__(self, *exc: object) -> None:
        self._release()

    def _release(self) -> None:
        for level in (LIVE, BACKFILL):
            queue = self._waiting[level]
            while queue:
                future = queue.popleft()
                if not future.done():
                    future.set_result(None)  # the slot passes straight to the next caller
                    return
        self._free += 1


@dataclass
class BudgetUsage:
    """What `status` shows about the budget."""

    mode: str
    reads_used: int
    reads_limit: int
    writes_used: int
    writes_limit: int
    window_s: float
    paused_for_s: float
    throttled: dict[str, int]
    fallbacks: list[dict[str, Any]] = field(default_factory=list)  # every instance's recent fallback spells

    def as_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "window_s": self.window_s,
                "reads": f"{self.reads_used}/{self.reads_limit}", "writes": f"{self.writes_used}/{self.writes_limit}",
                "paused_for_s": round(self.paused_for_s, 1), "throttled_429": self.throttled,
                "fallbacks": self.fallbacks}


class OrgBudget:
    """The anny budget of the organisation, as seen by one instance (one per event loop).

    `async with budget.spending("writes"): ...` sends one write when the budget allows it.
    """

    def __init__(self, table: BudgetTable, limits: Limits, *, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep, instance: str | None = None) -> None:
        self.table = table
        self.limits = limits
        self.instance = instance or instance_id()
        self.owner = f"{random.getrandbits(16):04x}"  # this budget's slices in the log (short: the log holds L)
        self._clock = clock
        self._sleep = sleep
        self._buckets: dict[Kind, _Bucket] = {kind: _Bucket(kind) for kind in KINDS}
        self.fallback_since: float | None = None
        self._fallback_error = ""
        self._table_retry_at = 0.0
        self._unrecorded: FallbackRecord | None = None  # an ended spell not written to the table yet
        self._telling: asyncio.Task[None] | None = None  # the best-effort write of an ongoing spell

    # -- spending ----------------------------------------------------------------------------------

    @asynccontextmanager
    async def spending(self, kind: Kind, level: Priority | None = None) -> AsyncIterator[None]:
        """One request to anny, sent within the block when the budget allows it. anny counts a
        request no later than it answers it: the block's end tells the budget so, and the slice the
        token came from stops counting a window after its last answer, not after the worst case."""
        pool = await self._acquire(kind, level or current_priority())
        try:
            yield
        finally:
            pool.answered(self._clock())

    async def _acquire(self, kind: Kind, level: Priority) -> _Pool:
        bucket = self._buckets[kind]
        line = bucket.lines[level]
        if not line.locked() and (pool := bucket.take(level, self._clock())):
            return pool
        bucket.waiting[level] += 1
        try:
            async with line:
                return await self._acquire_first_in_line(bucket, level)
        finally:
            bucket.waiting[level] -= 1

    async def _acquire_first_in_line(self, bucket: _Bucket, level: Priority) -> _Pool:
        while True:
            if pool := bucket.take(level, self._clock()):
                return pool
            async with bucket.lock:  # the other priority's first in line may be claiming
                now = self._clock()
                if pool := bucket.take(level, now):
                    return pool
                wait = await self._claim(bucket, level, now)
            if wait > 0:
                await self._sleep(wait + random.uniform(0, self.limits.lease_s / 4))

    async def _claim(self, bucket: _Bucket, level: Priority, now: float) -> float:
        """Claim a slice for `level`; 0 when claimed, else the seconds to wait before trying again."""
        if bucket.paused_until > now:
            return bucket.paused_until - now
        if self.fallback_since is not None and now < self._table_retry_at:
            return self._claim_locally(bucket, level, now)
        try:
            wait = await self._claim_shared(bucket, level, now)
        except (StateError, AzureError, OSError) as exc:
            if isinstance(exc, ConcurrencyError):
                return self.limits.lease_s  # contended: try again shortly
            self._enter_fallback(exc, now)
            return self._claim_locally(bucket, level, now)
        if self.fallback_since is not None:
            log.warning("anny budget table reachable again; shared budget resumed",
                        extra={"fallback_s": round(now - self.fallback_since, 1)})
            self._unrecorded = FallbackRecord(self.instance, self.fallback_since, now, now, self._fallback_error)
            self.fallback_since = None
        if self._unrecorded is not None:
            await self._record_ended_spell()
        return wait

    async def _claim_shared(self, bucket: _Bucket, level: Priority, now: float) -> float:
        limits, kind = self.limits, bucket.kind
        cap = limits.cap(kind, level)
        demand = max(1, bucket.waiting[level], bucket.pools[level].next_size(now, limits.lease_s))
        want = min(demand, limits.slice_max(kind))
        for _ in range(CLAIM_ATTEMPTS):
            record = bucket.record or await self.table.get_budget(kind)
            if record.paused_until > now:
                bucket.record, bucket.paused_until = record, record.paused_until
                return record.paused_until - now
            grants = self._as_spent(bucket, parse_grants(record.grants, limits.horizon_s), now)
            free = cap - sum(grant.tokens for grant in grants)
            if free <= 0:
                bucket.record = record
                seen = [grant._replace(until=self._counts_until(grant)) for grant in grants]
                return max(wait_for_room(seen, now, cap), limits.lease_s / 10)
            granted = min(want, free)
            at = round(now, 3)
            while at in bucket.mine:
                at = round(at + 0.001, 3)
            record.grants = format_grants([*grants, Grant(at, granted, now + limits.horizon_s, self.owner)])
            try:
                bucket.record = await self.table.save_budget(record)
            except ConcurrencyError:
                bucket.record = None  # someone else wrote: read it again
                continue
            # What was left of the last slice had expired.
            bucket.pools[level] = bucket.mine[at] = _Pool(granted, now + limits.lease_s, granted, at=at)
            return 0.0
        raise ConcurrencyError("the budget log kept changing", kind=kind)

    def _as_spent(self, bucket: _Bucket, grants: Grants, now: float) -> Grants:
        """The slices that still count, ours as they were spent (`_Pool.as_spent`); written back with
        the next slice, so that the other instances see them end early too. A slice of ours already
        written back as spent is in the log as one entry per answer time: it is taken once."""
        counting: Grants = []
        taken: set[float] = set()
        for grant in grants:
            pool = bucket.mine.get(grant.at) if grant.owner == self.owner else None
            if pool is None:
                spent = [grant]
            elif grant.at in taken:
                continue
            else:
                taken.add(grant.at)
                spent = pool.as_spent(grant, self.limits.window_s, now)
            counting.extend(entry for entry in spent if self._counts_until(entry) > now)
        still_mine = {grant.at for grant in counting if grant.owner == self.owner}
        bucket.mine = {at: pool for at, pool in bucket.mine.items() if at in still_mine}
        return counting

    def _counts_until(self, grant: Grant) -> float:
        """When a slice in the log stops counting, on this instance's clock: as written for our own,
        CLOCK_SKEW_S later for another instance's (its ends were read on that instance's clock)."""
        return grant.until if grant.owner == self.owner else grant.until + CLOCK_SKEW_S

    def _enter_fallback(self, exc: BaseException, now: float) -> None:
        if self.fallback_since is None:
            self.fallback_since = now
            self._fallback_error = f"{type(exc).__name__}: {exc}"[:300]
            log.warning("anny budget table unreachable; this instance uses a conservative local rate",
                        extra={"error": str(exc)[:300], "reads_per_window": self.limits.fallback_limit("reads"),
                               "writes_per_window": self.limits.fallback_limit("writes")})
        self._table_retry_at = now + self.limits.window_s / 4
        for bucket in self._buckets.values():
            bucket.record = None
        self._tell_others(FallbackRecord(self.instance, self.fallback_since, now, 0.0, self._fallback_error))

    def _tell_others(self, spell: FallbackRecord) -> None:
        """Best effort, in the background (the table may hang as well as fail): this instance is in fallback."""
        if self._telling is not None and not self._telling.done():
            return

        async def tell() -> None:
            try:
                await self.table.save_fallback(spell)
            except (StateError, AzureError, OSError) as exc:
                log.info("could not record the fallback for other instances yet", extra={"error": str(exc)[:200]})

        self._telling = asyncio.get_running_loop().create_task(tell())

    async def _record_ended_spell(self) -> None:
        """The table answers again: write the spell that ended (and forget spells of any instance
        that ended more than a day ago). Failing, it is tried again with the next claim."""
        spell = self._unrecorded
        assert spell is not None
        if self._telling is not None:
            await asyncio.gather(self._telling, return_exceptions=True)  # never overtaken by "ongoing"
        try:
            await self.table.save_fallback(spell)
            self._unrecorded = None
            for old in await self.table.list_fallbacks():
                if max(old.ended, old.last_seen) < spell.ended - FALLBACK_SHOWN_S:
                    await self.table.delete_fallback(old.instance)
        except (StateError, AzureError, OSError) as exc:
            log.info("could not record the ended fallback yet", extra={"error": str(exc)[:200]})

    def _claim_locally(self, bucket: _Bucket, level: Priority, now: float) -> float:
        log_ = bucket.local_log
        while log_ and log_[0] <= now - self.limits.horizon_s:
            log_.popleft()
        if len(log_) >= self.limits.fallback_limit(bucket.kind):
            return max(log_[0] + self.limits.horizon_s - now, self.limits.lease_s / 10)
        log_.append(now)
        bucket.pools[level] = _Pool(1, now + self.limits.lease_s, 1)
        return 0.0

    async def close(self, grace_s: float = 2.0) -> None:
        """Give a background record of the fallback `grace_s` to reach the table, then stop it."""
        if self._telling is not None and not self._telling.done():
            await asyncio.wait([self._telling], timeout=grace_s)
            self._telling.cancel()
            await asyncio.gather(self._telling, return_exceptions=True)

    # -- a 429 that arrived anyway -------------------------------------------------------------------

    async def throttled(self, retry_after_s: float) -> None:
        """anny answered 429: nobody in the organisation sends anything until `retry_after_s` from now."""
        now = self._clock()
        until = now + retry_after_s
        for bucket in self._buckets.values():
            bucket.paused_until = max(bucket.paused_until, until)
            for pool in bucket.pools.values():
                pool.tokens = 0
        try:
            await self.table.count_throttled("anny")
            for kind in KINDS:
                await self._publish_pause(kind, until)
        except (StateError, AzureError, OSError) as exc:
            log.warning("could not share the anny pause with other instances", extra={"error": str(exc)[:300]})

    async def _publish_pause(self, kind: Kind, until: float) -> None:
        for _ in range(CLAIM_ATTEMPTS):
            record = await self.table.get_budget(kind)
            if record.paused_until >= until:
                return
            record.paused_until = until
            try:
                self._buckets[kind].record = await self.table.save_budget(record)
                return
            except ConcurrencyError:
                continue

    # -- what status shows ------------------------------------------------------------------------------

    async def usage(self) -> BudgetUsage:
        now, limits = self._clock(), self.limits
        used: dict[Kind, int] = {}
        paused = 0.0
        throttled: dict[str, int] = {}
        mode = "shared (Table Storage)"
        spells: dict[str, FallbackRecord] = {}
        try:
            for kind in KINDS:
                record = await self.table.get_budget(kind)
                used[kind] = sum(grant.tokens for grant in parse_grants(record.grants, limits.horizon_s)
                                 if grant.at > now - limits.window_s)
                paused = max(paused, record.paused_until - now)
            throttled = await self.table.throttled_counts()
            spells = {spell.instance: spell for spell in await self.table.list_fallbacks()}
        except (StateError, AzureError, OSError) as exc:
            mode = f"budget table unreachable: {str(exc)[:120]}"
        if self.fallback_since is not None:
            mode = (f"local fallback for {now - self.fallback_since:.0f} s "
                    f"(budget table unreachable; {limits.fallback_share:.0%} of the limits)")
            spells[self.instance] = FallbackRecord(self.instance, self.fallback_since, now, 0.0, self._fallback_error)
        elif self._unrecorded is not None:
            spells[self.instance] = self._unrecorded
        if not used:
            used = {kind: sum(1 for at in self._buckets[kind].local_log if at > now - limits.window_s)
                    for kind in KINDS}
        shown = [self._spell_view(spell, now) for spell in sorted(spells.values(), key=lambda s: -s.since)
                 if not spell.ended or spell.ended > now - FALLBACK_SHOWN_S]
        return BudgetUsage(mode, used["reads"], limits.reads, used["writes"], limits.writes, limits.window_s,
                           max(0.0, paused), throttled, shown)

    def _spell_view(self, spell: FallbackRecord, now: float) -> dict[str, Any]:
        """One instance's spell for `status`. An ongoing one not heard of for two table retries may
        have ended unseen (the instance scaled in) or still be cut off: it says when it was last heard of."""
        def iso(epoch: float) -> str:
            return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")

        ongoing = not spell.ended
        quiet = ongoing and now - spell.last_seen > self.limits.window_s / 2 and spell.instance != self.instance
        return {"instance": spell.instance, "this_instance": spell.instance == self.instance,
                "since": iso(spell.since), "until": None if ongoing else iso(spell.ended),
                "state": "not heard of since" if quiet else "ongoing" if ongoing else "ended",
                "last_seen": iso(spell.last_seen), "error": spell.error or None}
