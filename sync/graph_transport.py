"""The HTTP transport under the Graph client: a small connection pool per mailbox.

httpcore's pool (1.0.9) walks all its connections, and for each one counts the idle ones again,
on every request (https://github.com/encode/httpcore/pull/1035). One pool for every mailbox
therefore costs O(n²) per request in the connections kept: with 20 rooms writing 4 at a time,
13 ms of CPU per request with 80 connections kept, against 1.0–1.1 ms here. Keeping only httpx's
default 20 is no way out either: the same code compares *all* connections with the keep-alive
limit, so above 20 in use nearly every request opened a new connection (380 of 400), a TLS
handshake each on Azure. Outlook allows 4 requests at once per mailbox, so a pool per mailbox
stays small, and keeps its connections.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

import httpx

POOL_IDLE_S = 60.0  # a mailbox's pool unused this long is closed (its connections with it)


def mailbox_of(path: str) -> str:
    """The mailbox a Graph path addresses (`…/users/{mailbox}/…`), or '' for the rest
    (subscriptions, places): those share one pool."""
    segments = path.split("/")
    for index, segment in enumerate(segments[:-1]):
        if segment == "users":
            return segments[index + 1].lower()
    return ""


class MailboxTransports(httpx.AsyncBaseTransport):
    """Routes each request to its mailbox's own httpx transport, made on first use and closed
    after `POOL_IDLE_S` without a request, so a tenant with many rooms does not keep a pool open
    for each of them."""

    def __init__(self, per_mailbox: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._limits = httpx.Limits(max_connections=per_mailbox, max_keepalive_connections=per_mailbox)
        self._pools: OrderedDict[str, tuple[httpx.AsyncHTTPTransport, float]] = OrderedDict()  # least recent first
        self._clock = clock

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        now, mailbox = self._clock(), mailbox_of(request.url.path)
        found = self._pools.pop(mailbox, None)
        pool = found[0] if found else httpx.AsyncHTTPTransport(limits=self._limits)
        self._pools[mailbox] = (pool, now)
        await self._close_idle(now)
        return await pool.handle_async_request(request)

    async def _close_idle(self, now: float) -> None:
        while self._pools:
            mailbox, (pool, used) = next(iter(self._pools.items()))
            if now - used < POOL_IDLE_S:
                return
            del self._pools[mailbox]
            await pool.aclose()

    @property
    def mailboxes(self) -> list[str]:
        """The mailboxes with a pool open, least recently used first."""
        return list(self._pools)

    async def aclose(self) -> None:
        pools, self._pools = list(self._pools.values()), OrderedDict()
        for pool, _ in pools:
            await pool.aclose()
