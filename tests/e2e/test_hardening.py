"""Bad input at every HTTP endpoint (issue 12): a clear 4xx, nothing enqueued, nothing stored, never a 500.

One running app (the local runner, Azurite, both emulators) serves the whole module: a mapped,
active room with its real Graph subscription, so verified notifications reach the checks too.
"""

from __future__ import annotations

import asyncio
import email.utils
import itertools
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from devhost.azurite import Azurite
from devhost.stack import WEBHOOK_SECRET, WEBHOOK_SECRET_HEADER, Emulators, LocalStack, start_stack
from sync.settings import StorageSettings
from sync.state import Subscription, SubscriptionsTable
from sync.work import WORK_QUEUE
from tests.e2e.test_backfill import until
from tests.state_tables import AllTables

ROOM = "room.hardening@contoso.example"
_instances = itertools.count(1)


@dataclass(repr=False)
class Live:
    stack: LocalStack
    resource: str
    subscription: Subscription
    client: httpx.Client

    def post(self, route: str, body: bytes | Any = None, *, headers: dict[str, Any] | None = None,
             params: dict[str, str] | None = None) -> httpx.Response:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self.client.post(f"/api/{route}", content=content, params=params,
                                headers={"x-functions-key": self.stack.keys.default, **(headers or {})})

    def webhook(self, body: bytes | Any, **headers: str) -> httpx.Response:
        sent = {WEBHOOK_SECRET_HEADER: WEBHOOK_SECRET, "x-anny-timestamp": str(int(time.time())), **headers}
        return self.post("anny/webhook", body, headers=sent)

    def manage(self, method: str, path: str, body: bytes | Any = None) -> httpx.Response:
        content = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        return self.client.request(method, f"/api/manage/{path}", content=content,
                                   headers={"x-functions-key": self.stack.keys.master})

    def queued(self) -> list[bytes]:
        return self.stack.host.call(self.stack.host.queue_messages(WORK_QUEUE))

    def clear_queue(self) -> None:
        async def clear() -> None:
            await (await self.stack.host.ensure_queue(WORK_QUEUE)).clear_messages()
        self.stack.host.call(clear())

    def store_call(self, method: str, *args: Any) -> Any:
        async def run() -> Any:
            storage = StorageSettings(connection_string=self.stack.azurite.connection_string)
            async with AllTables(storage, self.stack.env["TABLE_PREFIX"]) as store:
                return await getattr(store, method)(*args)
        return self.stack.host.call(run())


@pytest.fixture(scope="module")
def live(azurite: Azurite, emulators: Emulators) -> Iterator[Live]:
    from sync.admin import activate, run_command
    from sync.services import Services
    from sync.settings import Settings
    from sync.worker import Worker

    emulators.reset()
    stack = start_stack(azurite, emulators, f"hardening{next(_instances)}x")  # tables of its own
    resource = stack.anny.add_resource("Room Hardening", timezone="Europe/Berlin")
    stack.graph.add_room(ROOM, "Room Hardening")

    async def set_up() -> Subscription:
        services = await Services.open(Settings.from_env(stack.env))
        try:
            await run_command("rules.add", {"anny_resource": resource["id"], "room": ROOM}, Worker(services))
            await activate(Worker(services))
            [subscription] = await services.subscriptions.list_subscriptions()
            return subscription
        finally:
            await services.close()

    subscription = stack.host.call(set_up())
    client = httpx.Client(base_url=stack.host.url, timeout=60)
    try:
        yield Live(stack, resource["id"], subscription, client)
    finally:
        client.close()
        stack.stop()


@pytest.fixture
def app(live: Live) -> Live:
    live.clear_queue()
    return live


def envelope(booking_id: Any = "1001", **fields: Any) -> dict[str, Any]:
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    return {"event": "bookings.created", "timestamp": now, "event_id": "5f0c8a9e-4a7b-4d2e-9a51-0b8e7f1c2d3a",
            "webhook_id": "wh-1", "triggered_at": now, "data": {"id": booking_id, "type": "bookings"}, **fields}


def notification(sub: Subscription, **fields: Any) -> dict[str, Any]:
    return {"subscriptionId": sub.subscription_id, "clientState": sub.client_state, "changeType": "updated",
            "resource": f"Users/{ROOM}/Events/AAMkAGI=", "tenantId": "84bd8158-6d4d-4958-8b9f-9d6445542f95",
            "resourceData": {"@odata.type": "#Microsoft.Graph.Event", "id": "AAMkAGI="}, **fields}


def assert_refused(answer: httpx.Response, field: str, status: int = 400) -> None:
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert body["field"] == field and body["problem"], body


def deep(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


# --- 500s at the edges ------------------------------------------------------------------------------


@pytest.mark.parametrize("route", ["anny/webhook", "graph/notify", "graph/lifecycle", "manage/rules"])
def test_json_nested_5000_deep_is_400_on_every_endpoint(app: Live, route: str) -> None:
    if route == "anny/webhook":
        answer = app.webhook(deep(5000))
    elif route.startswith("manage"):
        answer = app.manage("POST", "rules", deep(5000))
    else:
        answer = app.post(route, deep(5000))
    assert_refused(answer, "body")
    assert "nested" in answer.json()["problem"]
    assert app.queued() == []


def test_lone_surrogate_and_oversize_ids_are_400_not_500(app: Live) -> None:
    surrogate = b'{"event":"bookings.created","data":{"id":"\\ud800"},"triggered_at":"%s"}' % (
        datetime.now(UTC).isoformat().encode())
    assert_refused(app.webhook(surrogate), "data.id")
    assert_refused(app.webhook(envelope(event_id="\ud800")), "event_id")
    assert_refused(app.webhook(envelope("7" * 5000)), "data.id")
    sub = app.subscription
    for route in ("graph/notify", "graph/lifecycle"):
        assert_refused(app.post(route, {"value": [notification(sub, subscriptionId="\ud800")]}),
                       "value[0].subscriptionId")
        assert_refused(app.post(route, {"value": [notification(sub, subscriptionId="a" * 5000)]}),
                       "value[0].subscriptionId")
    assert app.queued() == []


@pytest.mark.parametrize("event", [["missed"], {"x": 1}, 3])
def test_lifecycle_event_that_is_not_a_string_is_400(app: Live, event: Any) -> None:
    answer = app.post("graph/lifecycle", {"value": [notification(app.subscription, lifecycleEvent=event)]})
    assert_refused(answer, "value[0].lifecycleEvent")
    assert app.queued() == []


def test_refusals_log_one_line_without_the_body(app: Live, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
    marker = "ZZ-body-marker-ZZ"
    app.webhook(envelope(f"../{marker}"))
    refusals = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 1
    assert marker not in refusals[0].getMessage() and marker not in json.dumps(vars(refusals[0]), default=str)


# --- anny ids reach URLs unescaped ---------------------------------------------------------------------


@pytest.mark.parametrize("bad_id", ["../resources", "1001#x", "1001?o=x", "../bookings/1001", True, "/", '"',
                                    "'", "10\r\n01", "1" * 5000, "", None, 1.5, [], {}])
def test_booking_ids_not_in_anny_format_are_refused_before_anything_is_enqueued(app: Live, bad_id: Any) -> None:
    assert_refused(app.webhook(envelope(bad_id)), "data.id")
    assert app.queued() == []


def test_numeric_and_uuid_booking_ids_are_queued(app: Live) -> None:
    for good in (1001, "1001", "0b8e7f1c-2d3a-4a7b-9a51-5f0c8a9e4d2e"):
        answer = app.webhook(envelope(good, event_id=f"evt-{good}"))
        assert answer.status_code == 202, answer.text
    assert len(app.queued()) == 3


def anny_client(app: Live) -> Any:
    from sync.anny import AnnyClient

    env = app.stack.env
    return AnnyClient(env["ANNY_BASE_URL"], env["ANNY_API_TOKEN"], env["ANNY_ORGANIZATION_ID"])


async def test_anny_client_escapes_every_path_segment(app: Live) -> None:
    anny = app.stack.anny
    anny.reset_counters()
    async with anny_client(app) as client:
        for hostile in ("../resources", f"../bookings/{app.resource}", "1#x", "1?o=x"):
            assert await client.get_booking(hostile) is None  # anny answers 404 for the escaped id
    assert set(anny.counters()) == {"GET /api/v1/bookings/{id}"}


async def test_identical_reads_at_once_send_one_request_and_trip_no_identical_request_guard(app: Live) -> None:
    """anny refuses more than 4 identical requests a second. A fresh instance that takes a batch of
    16 work items of one room reads the room's resource for each of them at the same moment."""
    anny = app.stack.anny
    anny.set_rate_limits(reads_per_window=400, writes_per_window=100, rate_window_s=60, identical_per_second=4)
    anny.reset_counters()
    try:
        async with anny_client(app) as client:
            found = await asyncio.gather(*(client.get_resource(app.resource) for _ in range(16)))
            assert {r.time_zone for r in found if r is not None} == {"Europe/Berlin"} and None not in found
            assert await client.get_resource(app.resource) is not None  # later reads send their own
        assert anny.counters() == {"GET /api/v1/resources/{id}": 2}
        assert anny.rate_limits()["counters"].get("429", 0) == 0
    finally:
        anny.set_rate_limits(enabled=False)


@pytest.mark.parametrize("metadata", ["links and meta", "links", "meta"])
async def test_a_long_booking_list_is_read_whole_and_once_whatever_its_pages_say_of_the_next(
        app: Live, metadata: str) -> None:
    """anny documents its page metadata inconsistently: `links.next`, page counters in `meta`, or
    both. With the counters the pages after the first are read side by side; either way every
    booking comes once, and each page is asked for once."""
    from sync.anny import PAGE_SIZE

    anny = app.stack.anny
    slug = f"paging-{metadata.replace(' ', '-')}"
    day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    count = 2 * PAGE_SIZE + 10
    seeded = anny.seed({"resources": [{"name": f"Room {slug}", "slug": slug}], "bookings": [
        {"resource": slug, "start": (day + timedelta(hours=k)).isoformat(),
         "end": (day + timedelta(hours=k, minutes=30)).isoformat()} for k in range(count)]})
    anny.configure(page_metadata=metadata)
    anny.reset_counters()
    try:
        async with anny_client(app) as client:
            listed = await client.list_bookings([seeded["resources"][slug]], day, day + timedelta(days=4))
    finally:
        anny.configure(page_metadata="links and meta")
    assert sorted(b.id for b in listed) == sorted(seeded["bookings"])
    assert anny.counters() == {"GET /api/v1/bookings": 3}


async def test_a_booking_made_while_a_list_is_read_leaves_no_other_booking_listed_twice(app: Live) -> None:
    """anny pages by offset: a booking made while a list is read, sorting before the rest, moves
    every later booking down a place, so the first page's last booking comes again at the top of
    the second. Each booking is listed once: one listed twice was compared twice, and in an
    activation its two creates raced each other and failed the room's run."""
    from sync.anny import PAGE_SIZE

    anny = app.stack.anny
    day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=2)
    seeded = anny.seed({"resources": [{"name": "Room paging-shifted", "slug": "paging-shifted"}], "bookings": [
        {"resource": "paging-shifted", "start": (day + timedelta(hours=k)).isoformat(),
         "end": (day + timedelta(hours=k, minutes=30)).isoformat()} for k in range(2 * PAGE_SIZE + 10)]})
    resource = seeded["resources"]["paging-shifted"]
    anny.set_latency(300)  # anny computes each page after the wait: the new booking lands between pages 1 and 2
    anny.reset_counters()
    try:
        async with anny_client(app) as client:
            listing = asyncio.ensure_future(client.list_bookings([resource], day, day + timedelta(days=4)))
            await until(lambda: anny.counters().get("GET /api/v1/bookings", 0) >= 2, 10,
                        "page 2 asked for (page 1 answered)")
            anny.person_create_booking(resource, (day - timedelta(minutes=30)).isoformat(),
                                       (day - timedelta(minutes=10)).isoformat())
            listed = await listing
    finally:
        anny.set_latency(0)
    ids = [b.id for b in listed]
    assert sorted(ids) == sorted(seeded["bookings"])


async def test_a_booking_removed_while_a_list_is_read_leaves_no_other_booking_out(app: Live) -> None:
    """The other half of offset pages: a booking removed from a page read already moves every later
    booking up a place, so the second page's first booking moves onto the first page and no page
    shows it. The pages' totals then disagree, and the list is read once more: every booking
    that is there is listed (an activation would otherwise leave it unmirrored until the night)."""
    from sync.anny import PAGE_SIZE

    anny = app.stack.anny
    day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=3)
    seeded = anny.seed({"resources": [{"name": "Room paging-removed", "slug": "paging-removed"}], "bookings": [
        {"resource": "paging-removed", "start": (day + timedelta(hours=k)).isoformat(),
         "end": (day + timedelta(hours=k, minutes=30)).isoformat()} for k in range(2 * PAGE_SIZE + 10)]})
    first, *rest = seeded["bookings"]
    anny.set_latency(300)  # anny computes each page after the wait: the removal lands between pages 1 and 2
    anny.reset_counters()
    try:
        async with anny_client(app) as client:
            listing = asyncio.ensure_future(client.list_bookings(
                [seeded["resources"]["paging-removed"]], day, day + timedelta(days=4)))
            await until(lambda: anny.counters().get("GET /api/v1/bookings", 0) >= 2, 10,
                        "page 2 asked for (page 1 answered)")
            anny.person_delete_booking(first)
            listed = await listing
    finally:
        anny.set_latency(0)
    ids = [b.id for b in listed]
    assert len(ids) == len(set(ids))
    assert set(rest) <= set(ids)  # the removed one may be listed as page 1 showed it: a run reads before writing


async def test_anny_client_refuses_dot_segments(app: Live) -> None:
    from sync.errors import InputError

    async with anny_client(app) as client:
        for dots in ("..", ".", ""):
            with pytest.raises(InputError):
                await client.get_booking(dots)


async def test_graph_gateway_refuses_dot_segments(app: Live) -> None:
    from sync.errors import InputError
    from sync.graph import GraphGateway
    from sync.settings import Settings

    gateway = GraphGateway.from_settings(Settings.from_env(app.stack.env))
    try:
        for dots in ("..", "."):
            with pytest.raises(InputError):
                await gateway.delete_event(ROOM, dots)
            with pytest.raises(InputError):
                await gateway.delete_event(dots, "AAMkAGI=")
    finally:
        await gateway.close()


def test_graph_ids_in_notifications_are_checked(app: Live) -> None:
    sub = app.subscription
    bad_event = notification(sub, resourceData={"id": "x\r\ny"})
    assert_refused(app.post("graph/notify", {"value": [bad_event]}), "value[0].resourceData.id")
    assert_refused(app.post("graph/notify", {"value": [notification(sub, subscriptionId="../x")]}),
                   "value[0].subscriptionId")
    assert_refused(app.post("graph/notify", {"value": ["x"]}), "value[0]")
    assert app.queued() == []
    good = app.post("graph/notify", {"value": [notification(sub)]})
    assert good.status_code == 202 and good.json()["rooms"] == 1 and len(app.queued()) == 1


# --- amplification and the body limit -------------------------------------------------------------------


def unknown_notifications(count: int) -> list[dict[str, Any]]:
    return [{"subscriptionId": f"{n:08d}-0000-4000-8000-000000000000", "clientState": "guess",
             "changeType": "updated", "resource": "Users/x/Events/y"} for n in range(count)]


def test_work_per_notification_request_is_bounded(app: Live, monkeypatch: pytest.MonkeyPatch) -> None:
    reads = {"point": 0, "list": 0}
    get, listing = SubscriptionsTable.get_subscription, SubscriptionsTable.list_subscriptions

    async def counted_get(self: SubscriptionsTable, subscription_id: str) -> Subscription | None:
        reads["point"] += 1
        return await get(self, subscription_id)

    async def counted_list(self: SubscriptionsTable) -> list[Subscription]:
        reads["list"] += 1
        return await listing(self)

    monkeypatch.setattr(SubscriptionsTable, "get_subscription", counted_get)
    monkeypatch.setattr(SubscriptionsTable, "list_subscriptions", counted_list)
    items = [*unknown_notifications(1500), notification(app.subscription)]  # under the old 256 KiB limit
    answer = app.post("graph/notify", {"value": items})
    assert answer.status_code == 202, answer.text
    assert reads["point"] + reads["list"] <= 10  # not one table read per unknown id
    assert answer.json() == {"rooms": 1, "received": 1501, "dropped": 1500, "queued": 1}
    again = app.post("graph/notify", {"value": unknown_notifications(1500)})
    assert again.json()["dropped"] == 1500


def test_a_large_realistic_graph_batch_is_accepted(app: Live) -> None:
    one = notification(app.subscription, subscriptionExpirationDateTime="2026-12-06T11:00:00.0000000Z")
    one["resourceData"]["@odata.id"] = one["resource"]
    one["resourceData"]["@odata.etag"] = 'W/"DwAAABYAAADkrWGo7bouTKlsgTZMr9KwAAAUWRHf"'
    padding = "AAMkAGI2TG93AAA=" * 40  # Graph's ids are long: about 1 KB per notification
    batch = {"value": [{**one, "resource": f"Users/{ROOM}/Events/{padding}{n}"} for n in range(600)]}
    body = json.dumps(batch).encode()
    assert len(body) > 512 * 1024
    answer = app.post("graph/notify", body)
    assert answer.status_code == 202 and answer.json()["rooms"] == 1
    assert len(app.queued()) == 1


# --- replays --------------------------------------------------------------------------------------------


def test_stale_or_future_deliveries_are_refused_with_401(app: Live) -> None:
    old = datetime.now(UTC) - timedelta(hours=25)
    assert app.webhook(envelope(), **{"x-anny-timestamp": str(int(old.timestamp()))}).status_code == 401
    future = datetime.now(UTC) + timedelta(hours=25)
    assert app.webhook(envelope(), **{"x-anny-timestamp": str(int(future.timestamp()))}).status_code == 401
    stale_body = envelope(triggered_at=old.isoformat())
    headers = {WEBHOOK_SECRET_HEADER: WEBHOOK_SECRET}
    assert app.post("anny/webhook", stale_body, headers=headers).status_code == 401
    assert app.queued() == []


def test_a_retry_hours_later_is_still_accepted(app: Live) -> None:
    earlier = datetime.now(UTC) - timedelta(hours=6)
    answer = app.webhook(envelope(triggered_at=earlier.isoformat()),
                         **{"x-anny-timestamp": str(int(earlier.timestamp()))})
    assert answer.status_code == 202 and len(app.queued()) == 1


def test_a_timestamp_header_in_another_format_never_refuses_an_authentic_delivery(app: Live) -> None:
    """anny names the header, not its format: an HTTP date is read, and a header no format fits
    gives way to the envelope's own stamps (still checked for age); none readable is a 400."""
    http_date = email.utils.format_datetime(datetime.now(UTC), usegmt=True)
    assert app.webhook(envelope(event_id=str(uuid.uuid4())), **{"x-anny-timestamp": http_date}).status_code == 202
    assert app.webhook(envelope(event_id=str(uuid.uuid4())), **{"x-anny-timestamp": "yesterday"}).status_code == 202
    old = (datetime.now(UTC) - timedelta(hours=25)).isoformat()
    stale = envelope(event_id=str(uuid.uuid4()), triggered_at=old, timestamp=old)
    assert app.webhook(stale, **{"x-anny-timestamp": "yesterday"}).status_code == 401
    assert len(app.queued()) == 2
    unstamped = envelope(event_id=str(uuid.uuid4()))
    unreadable = {k: v for k, v in unstamped.items() if k not in ("triggered_at", "timestamp")}
    assert_refused(app.webhook(unreadable, **{"x-anny-timestamp": "yesterday"}), "x-anny-timestamp")
    assert len(app.queued()) == 2


# --- admin API input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "field"), [
    ({"anny_resource": "\ud800", "room": ROOM}, "anny_resource"),
    ({"anny_resource": "a/b", "room": ROOM}, "anny_resource"),
    ({"anny_resource": "9" * 5000, "room": ROOM}, "anny_resource"),
    ({"anny_resource": "42", "room": "\ud800@contoso.example"}, "room"),
    ({"anny_resource": "42", "room": "r" * 300 + "@contoso.example"}, "room"),
    ({"anny_resource": "42", "room": ROOM, "time_zone": "\ud800"}, "time_zone"),
    ({"anny_resource": ["42"], "room": ROOM}, "anny_resource"),
    ([1, 2], "body"),
])
def test_admin_api_refuses_malformed_input_and_stores_nothing(app: Live, body: Any, field: str) -> None:
    before = app.store_call("list_rules")
    assert_refused(app.manage("POST", "rules", body), field)
    assert app.store_call("list_rules") == before


def test_admin_api_malformed_json_is_400(app: Live) -> None:
    assert_refused(app.manage("POST", "rules", b"{nope"), "body")
    assert_refused(app.manage("POST", "rules", b"\xff\xfe"), "body")


def test_a_stored_rule_with_a_slash_in_its_id_can_still_be_removed_locally(app: Live) -> None:
    from sync.admin import run_command
    from sync.services import Services
    from sync.settings import Settings
    from sync.state import Rule
    from sync.worker import Worker

    legacy = Rule("legacy/7", "room.legacy@contoso.example")
    app.store_call("add_rule", legacy)
    assert app.manage("DELETE", "rules/legacy/7").status_code == 404  # the path cannot carry it

    async def remove() -> None:
        services = await Services.open(Settings.from_env(app.stack.env))
        try:
            await run_command("rules.remove", {"anny_resource": "legacy/7"}, Worker(services))
        finally:
            await services.close()

    app.stack.host.call(remove())
    assert [r.anny_resource_id for r in app.store_call("list_rules")] == [app.resource]
