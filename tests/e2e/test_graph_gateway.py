"""The Graph gateway against the Graph emulator: Graph's limits are respected, throttling is survived."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import aiohttp
import httpcore
import httpx
import pytest
from aiohttp import web

from devhost.stack import GRAPH_TOKEN, Emulators
from sandbox.serve import BackgroundServer
from sync.errors import RemoteGone
from sync.graph import GraphGateway
from sync.graph_transport import POOL_IDLE_S, MailboxTransports
from sync.keys import transaction_id
from sync.model import DesiredEvent
from sync.settings import Settings

ROOM = "gateway.room@contoso.example"
REQUIRED = {"ANNY_API_TOKEN": "t", "ANNY_ORGANIZATION_ID": "o", "ANNY_WEBHOOK_SECRET": "s",
            "PUBLIC_BASE_URL": "https://sync.example.org", "AzureWebJobsStorage": "UseDevelopmentStorage=true"}


def gateway_settings(emulators: Emulators) -> Settings:
    return Settings.from_env({**REQUIRED, "GRAPH_BASE_URL": emulators.graph.base_url,
                              "GRAPH_AUTH_MODE": "static_token", "GRAPH_STATIC_TOKEN": GRAPH_TOKEN})


@pytest.fixture
async def gateway(emulators: Emulators) -> AsyncIterator[GraphGateway]:
    emulators.reset()
    emulators.graph.add_room(ROOM, "Gateway Room")
    gateway = GraphGateway.from_settings(gateway_settings(emulators))
    yield gateway
    await gateway.close()


def desired(index: int) -> DesiredEvent:
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1, hours=index)
    return DesiredEvent(f"b-{index}", f"Booking {index}", start, start + timedelta(minutes=30))


async def test_never_more_than_four_requests_per_mailbox_at_once(gateway: GraphGateway,
                                                                 emulators: Emulators) -> None:
    emulators.graph.set_latency(100)  # requests overlap for long enough to hit the limit
    await asyncio.gather(*(gateway.create_event(ROOM, desired(i), transaction_id(f"b-{i}", 0)) for i in range(12)))
    counts = emulators.graph.call_counts()
    assert counts["POST /users/{mailbox}/events"] == 12  # no request was refused with 429 and retried
    assert len(emulators.graph.events(ROOM)) == 12


async def test_throttling_and_unavailability_are_retried_after_retry_after(gateway: GraphGateway,
                                                                            emulators: Emulators) -> None:
    emulators.graph.add_fault(429, route="POST /users/{mailbox}/events", count=1, retry_after=1)
    emulators.graph.add_fault(503, route="POST /users/{mailbox}/events", count=1, retry_after=1)
    written = await gateway.create_event(ROOM, desired(0), transaction_id("b-0", 0))
    assert emulators.graph.call_counts()["POST /users/{mailbox}/events"] == 3
    assert [e["id"] for e in emulators.graph.events(ROOM)] == [written.event_id]


async def test_graph_errors_become_typed_errors_with_context(gateway: GraphGateway, emulators: Emulators) -> None:
    with pytest.raises(RemoteGone) as gone:
        await gateway.update_event(ROOM, "no-such-event", desired(1))
    assert gone.value.context["event_id"] == "no-such-event" and gone.value.context["room"] == ROOM
    await gateway.delete_event(ROOM, "no-such-event")  # deleting what is gone already is fine


async def test_a_subscription_call_that_fails_names_its_room(gateway: GraphGateway) -> None:
    with pytest.raises(RemoteGone) as gone:
        await gateway.renew_subscription(ROOM, "no-such-subscription", datetime.now(UTC) + timedelta(days=2))
    assert gone.value.context["room"] == ROOM and gone.value.context["subscription_id"] == "no-such-subscription"
    await gateway.delete_subscription(ROOM, "no-such-subscription")  # deleting what is gone already is fine


def test_query_names_go_out_as_graph_documents_them(gateway: GraphGateway) -> None:
    """The SDK's decoding handler is not in the chain, so `$select` must not leave as `%24select`;
    values are escaped whole (`:` `+` `,` `/` too)."""
    url = gateway.url("users", ROOM, "calendarView",
                      query={"$select": "id,subject", "startDateTime": "2026-12-01T00:00:00+01:00", "x": "a/b c"})
    assert url == (gateway.base_url + "/users/gateway.room%40contoso.example/calendarView"
                   "?$select=id%2Csubject&startDateTime=2026-12-01T00%3A00%3A00%2B01%3A00&x=a%2Fb%20c")


async def test_many_busy_mailboxes_keep_their_connections(gateway: GraphGateway, emulators: Emulators,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """With one pool for all mailboxes, httpx kept 20 connections: 10 mailboxes writing 4 at a
    time opened a new connection for nearly every request (a TLS handshake each, on Azure)."""
    rooms = [f"pool-{i}@contoso.example" for i in range(10)]
    for room in rooms:
        emulators.graph.add_room(room, room)
    emulators.graph.set_latency(50)
    opened = count_connections_opened(monkeypatch)

    def writes(round_: int) -> list[Awaitable[object]]:
        return [gateway.create_event(room, desired(i), transaction_id(f"{room}-{round_}-{i}", 0))
                for room in rooms for i in range(4)]

    await asyncio.gather(*writes(0))
    assert len(opened) == 40
    await asyncio.gather(*writes(1))
    await asyncio.gather(*writes(2))
    assert len(opened) == 40  # the later rounds reused every one
    assert sum(len(emulators.graph.events(room)) for room in rooms) == 120


async def test_a_mailbox_pool_unused_for_a_minute_is_closed(emulators: Emulators,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    emulators.reset()
    now = [0.0]
    transport = MailboxTransports(8, clock=lambda: now[0])
    opened = count_connections_opened(monkeypatch)
    bearer = {"Authorization": f"Bearer {GRAPH_TOKEN}"}
    async with httpx.AsyncClient(base_url=emulators.graph.base_url, transport=transport, headers=bearer) as client:
        for room in ("a@contoso.example", "b@contoso.example"):
            emulators.graph.add_room(room, room)
            await client.get(f"/users/{room}/outlook/masterCategories")
        now[0] = POOL_IDLE_S - 1
        await client.get("/users/A@contoso.example/outlook/masterCategories")  # same mailbox, any case
        assert transport.mailboxes == ["b@contoso.example", "a@contoso.example"] and len(opened) == 2
        now[0] = POOL_IDLE_S + 1
        await client.get("/subscriptions")
        assert transport.mailboxes == ["a@contoso.example", ""]  # b's pool (and its connection) closed
        assert len(opened) == 3


def count_connections_opened(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every connection httpcore opens from now on (a spy: the connection still opens)."""
    opened: list[object] = []
    original = httpcore.AsyncHTTPConnection.__init__

    def spy(self: httpcore.AsyncHTTPConnection, *args: Any, **kwargs: Any) -> None:
        opened.append(self)
        original(self, *args, **kwargs)

    monkeypatch.setattr(httpcore.AsyncHTTPConnection, "__init__", spy)
    return opened


async def test_graph_requests_go_through_the_environments_proxy(emulators: Emulators,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A tenant behind a proxy sets HTTPS_PROXY / HTTP_PROXY: httpx applies it only to its own
    transport, so the per-mailbox pools must give way to it."""
    emulators.reset()
    emulators.graph.add_room(ROOM, "Gateway Room")
    seen: list[str] = []

    async def forward(request: web.Request) -> web.Response:  # a plain HTTP forward proxy
        seen.append(str(request.url))
        async with aiohttp.ClientSession() as session, session.request(
                request.method, str(request.url), headers=request.headers, data=await request.read()) as answer:
            return web.Response(status=answer.status, body=await answer.read(),
                                content_type=answer.content_type)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forward)
    proxy = BackgroundServer(app).start()
    try:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        gateway = GraphGateway.from_settings(gateway_settings(emulators))
        try:
            await gateway.create_event(ROOM, desired(0), transaction_id("b-0", 0))
        finally:
            await gateway.close()
    finally:
        proxy.stop()
    assert [url.split("?")[0] for url in seen] == [f"{emulators.graph.base_url}/users/{quote(ROOM)}/events"]
    assert len(emulators.graph.events(ROOM)) == 1
