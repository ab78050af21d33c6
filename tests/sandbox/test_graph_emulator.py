"""The Graph emulator (sandbox/graph) driven by the real msgraph-sdk async client.

One emulator serves the whole module; every test starts from `reset()` plus two rooms.
Every SDK answer is parsed into typed models, and `unknown_fields` checks that nothing
landed in `additional_data` except what Graph really sends there.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from aiohttp import web
from kiota_abstractions.authentication import (
    AccessTokenProvider,
    AllowedHostsValidator,
    BaseBearerTokenAuthenticationProvider,
)
from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph import GraphRequestAdapter, GraphServiceClient
from msgraph.generated.models.category_color import CategoryColor
from msgraph.generated.models.date_time_time_zone import DateTimeTimeZone
from msgraph.generated.models.event import Event
from msgraph.generated.models.event_type import EventType
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.models.outlook_category import OutlookCategory
from msgraph.generated.models.single_value_legacy_extended_property import SingleValueLegacyExtendedProperty
from msgraph.generated.models.subscription import Subscription
from msgraph.generated.places.graph_room.graph_room_request_builder import GraphRoomRequestBuilder
from msgraph.generated.users.item.calendar_view.calendar_view_request_builder import CalendarViewRequestBuilder
from msgraph.generated.users.item.calendar_view.delta.delta_request_builder import DeltaRequestBuilder
from msgraph.generated.users.item.events.events_request_builder import EventsRequestBuilder
from msgraph.generated.users.item.events.item.event_item_request_builder import EventItemRequestBuilder
from msgraph_core import GraphClientFactory

from sandbox.graph import Fault, GraphEmulator, recurrence, running_graph_emulator, start_graph_emulator
from sandbox.graph.ids import parse_occurrence_id
from sandbox.serve import free_port

ROOM = "room1@contoso.com"
ROOM2 = "room2@contoso.com"
PROP_ID = "String {66f5a359-4659-4830-9070-00047ec6ac6e} Name AnnyBookingId"
ALLOWED_EXTRA = {"@odata.etag", "@odata.context"}
WEU = "W. Europe Standard Time"


# fixtures ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def graph_server() -> Iterator[GraphEmulator]:
    emulator, server = start_graph_emulator(
        notification_batch_interval=0.02, notification_retry_delay=0.05, validation_timeout=1.0
    )
    try:
        yield emulator
    finally:
        server.stop()


@pytest.fixture
def graph(graph_server: GraphEmulator) -> GraphEmulator:
    graph_server.reset()
    graph_server.add_room(ROOM, "Room 1", capacity=8, building="HQ")
    graph_server.add_room(ROOM2, "Room 2", capacity=4)
    return graph_server


class _Token(AccessTokenProvider):
    """Any non-empty bearer token is accepted by the emulator."""

    token = "test-token"

    async def get_authorization_token(self, uri: str, additional_authentication_context: Any = None) -> str:
        return self.token

    def get_allowed_hosts_validator(self) -> AllowedHostsValidator:
        return AllowedHostsValidator([])


def sdk_client(base_url: str, anonymous: bool = False) -> GraphServiceClient:
    provider = _Token()
    if anonymous:
        provider.token = ""
    http = GraphClientFactory.create_with_default_middleware(client=httpx.AsyncClient(base_url=base_url))
    adapter = GraphRequestAdapter(BaseBearerTokenAuthenticationProvider(provider), http)
    return GraphServiceClient(request_adapter=adapter)


@pytest.fixture
def graph_client(graph: GraphEmulator) -> GraphServiceClient:
    assert graph.base_url
    return sdk_client(graph.base_url)


@pytest.fixture
async def graph_http(graph: GraphEmulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=str(graph.server.url), headers={"Authorization": "Bearer t"}) as client:
        yield client


class Receiver:
    """A notification endpoint: answers validation (mode: echo | html | wrong | slow), records
    notifications, and can fail the next N notification POSTs with 500."""

    def __init__(self) -> None:
        self.mode = "echo"
        self.fail_next = 0
        self.validations: list[tuple[str, dict]] = []
        self.posts: list[tuple[str, dict, dict]] = []  # (path, query, body) of 2xx-answered POSTs
        self.on_post: list[Any] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        token = request.query.get("validationToken")
        if token is not None:
            self.validations.append((request.path, dict(request.query)))
            if self.mode == "slow":
                await asyncio.sleep(1.5)  # longer than validation_timeout
            content_type = "text/html" if self.mode == "html" else "text/plain"
            return web.Response(text=token if self.mode != "wrong" else "nope", content_type=content_type)
        body = await request.json()
        if self.fail_next > 0:
            self.fail_next -= 1
            return web.Response(status=500)
        self.posts.append((request.path, dict(request.query), body))
        for hook in self.on_post:
            hook(body)
        return web.Response(status=202)

    def items(self, path: str = "/notify") -> list[dict]:
        return [item for p, _, body in self.posts if p == path for item in body["value"]]


@pytest.fixture
async def graph_receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/{tail:.*}", receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    receiver.url = f"http://127.0.0.1:{port}"
    try:
        yield receiver
    finally:
        await runner.cleanup()


# helpers ----------------------------------------------------------------------------------
def unknown_fields(model: Any, allowed: set[str] = ALLOWED_EXTRA) -> set[str]:
    """additional_data keys anywhere in a parsed model that Graph's schema does not know."""
    found = set(getattr(model, "additional_data", None) or {}) - allowed
    for value in vars(model).values():
        for item in value if isinstance(value, list) else [value]:
            if hasattr(item, "additional_data") and item is not model:
                found |= unknown_fields(item, allowed)
    return found


def quote_id(text: str) -> str:
    """Percent-encode an id for a URL path (ids carry `/`, `+` and `=`)."""
    return quote(text, safe="")


def when(text: str, tz: str = "UTC") -> DateTimeTimeZone:
    return DateTimeTimeZone(date_time=text, time_zone=tz)


def shown(value: DateTimeTimeZone | None) -> tuple[str | None, str | None]:
    assert value is not None
    return value.date_time, value.time_zone


def event_model(subject: str = "Booking", start: str = "2026-11-24T09:00:00", end: str = "2026-11-24T10:00:00",
                tz: str = "UTC", **extra: Any) -> Event:
    return Event(subject=subject, start=when(start, tz), end=when(end, tz), **extra)


def config(query: Any = None, *prefer: str) -> RequestConfiguration:
    found = RequestConfiguration(query_parameters=query)
    for value in prefer:
        found.headers.add("Prefer", value)
    return found


async def odata_error(awaitable: Any) -> ODataError:
    with pytest.raises(ODataError) as caught:
        await awaitable
    return caught.value


async def delta_round(client: GraphServiceClient, link: str | None, page_size: int = 100,
                      window: tuple[str, str] = ("2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z")
                      ) -> tuple[list[Event], str, int]:
    """Follow a delta round to its deltaLink: (items, deltaLink, pages)."""
    builder = client.users.by_user_id(ROOM).calendar_view.delta
    query = None if link else DeltaRequestBuilder.DeltaRequestBuilderGetQueryParameters(
        start_date_time=window[0], end_date_time=window[1])
    prefer = (f"odata.maxpagesize={page_size}", 'outlook.timezone="UTC"')
    page = await (builder.with_url(link) if link else builder).get(config(query, *prefer))
    items, pages = list(page.value or []), 1
    while page.odata_next_link:
        page = await builder.with_url(page.odata_next_link).get(config(None, *prefer))
        items += page.value or []
        pages += 1
    assert page.odata_delta_link
    return items, page.odata_delta_link, pages


# rooms ------------------------------------------------------------------------------------
async def test_places_lists_rooms_in_pages_of_100_and_honours_top(graph: GraphEmulator,
                                                                 graph_client: GraphServiceClient) -> None:
    for n in range(3, 102):
        graph.add_room(f"room{n:03d}@contoso.com", f"Room {n}")
    first = await graph_client.places.graph_room.get()
    assert first is not None and first.value is not None
    assert len(first.value) == 100 and first.odata_next_link
    rest = await graph_client.places.graph_room.with_url(first.odata_next_link).get()
    assert rest is not None and rest.value is not None and len(rest.value) == 1 and not rest.odata_next_link

    query = GraphRoomRequestBuilder.GraphRoomRequestBuilderGetQueryParameters(top=40)
    pages, link, rooms = 0, None, []
    while True:
        builder = graph_client.places.graph_room
        page = await (builder.with_url(link).get() if link else builder.get(config(query)))
        assert page is not None and page.value is not None
        rooms += page.value
        pages, link = pages + 1, page.odata_next_link
        if not link:
            break
    assert pages == 3 and len({room.email_address for room in rooms}) == 101
    room1 = next(room for room in rooms if room.email_address == ROOM)
    assert (room1.display_name, room1.capacity, room1.building) == ("Room 1", 8, "HQ") and room1.id
    assert unknown_fields(first) == set() and all(unknown_fields(room) == set() for room in rooms)


# events -----------------------------------------------------------------------------------
async def test_event_crud_like_graph(graph: GraphEmulator, graph_client: GraphServiceClient) -> None:
    events = graph_client.users.by_user_id("Room1@Contoso.com").events
    created = await events.post(event_model(tz=WEU, categories=["anny"], show_as=None))
    assert created is not None and created.id and created.change_key
    assert all(char in created.id for char in "/+=")
    assert created.type == EventType.SingleInstance and created.series_master_id is None
    assert shown(created.start) == ("2026-11-24T09:00:00.0000000", WEU)
    assert created.additional_data["@odata.etag"] == f'W/"{created.change_key}"'
    assert created.categories == ["anny"] and created.is_cancelled is False and created.i_cal_u_id
    assert created.created_date_time and created.last_modified_date_time
    assert unknown_fields(created) == set()

    got = await graph_client.users.by_user_id(ROOM).calendar.events.by_event_id(created.id).get()
    assert got is not None and got.id == created.id and got.change_key == created.change_key

    changed = await events.by_event_id(created.id).patch(Event(subject="Renamed"))
    assert changed is not None and changed.subject == "Renamed" and changed.change_key != created.change_key
    assert shown(changed.start) == shown(created.start) and changed.categories == ["anny"]
    assert changed.last_modified_date_time >= created.last_modified_date_time
    assert graph.events(ROOM)[0]["subject"] == "Renamed"

    await events.by_event_id(created.id).delete()
    missing = await odata_error(events.by_event_id(created.id).get())
    assert missing.response_status_code == 404 and missing.error.code == "ErrorItemNotFound"
    again = await odata_error(events.by_event_id(created.id).delete())
    assert again.response_status_code == 404
    assert graph.events(ROOM) == []


async def test_event_body_is_validated_like_graph(graph_client: GraphServiceClient,
                                                  graph_http: httpx.AsyncClient) -> None:
    events = graph_client.users.by_user_id(ROOM).events
    bad_zone = await odata_error(events.post(event_model(tz="Mars/Olympus")))
    assert bad_zone.response_status_code == 400 and bad_zone.error.code == "TimeZoneNotSupportedException"
    answer = await graph_http.post(f"/v1.0/users/{ROOM}/events", json={"subject": "x", "colour": "red"})
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "RequestBodyRead"
    not_midnight = event_model(is_all_day=True)
    assert (await odata_error(events.post(not_midnight))).error.code == "ErrorPropertyValidationFailure"
    unknown_user = await odata_error(graph_client.users.by_user_id("nobody@contoso.com").events.get())
    assert unknown_user.response_status_code == 404 and unknown_user.error.code == "ErrorInvalidUser"


async def test_transaction_id_makes_a_repeated_post_return_the_first_event(
        graph: GraphEmulator, graph_client: GraphServiceClient, graph_http: httpx.AsyncClient) -> None:
    events = graph_client.users.by_user_id(ROOM).events
    first = await events.post(event_model(transaction_id="anny-42-g1"))
    second = await events.post(event_model(subject="retried", transaction_id="anny-42-g1"))
    assert first is not None and second is not None
    assert second.id == first.id and second.subject == "Booking" and second.transaction_id == "anny-42-g1"
    raw = await graph_http.post(f"/v1.0/users/{ROOM}/events", json={
        "subject": "x", "transactionId": "anny-42-g1",
        "start": {"dateTime": "2026-11-24T09:00:00", "timeZone": "UTC"},
        "end": {"dateTime": "2026-11-24T10:00:00", "timeZone": "UTC"}})
    assert raw.status_code == 201 and raw.json()["id"] == first.id
    other_room = await graph_client.users.by_user_id(ROOM2).events.post(event_model(transaction_id="anny-42-g1"))
    assert other_room is not None and other_room.id != first.id
    assert len(graph.events(ROOM)) == 1 and graph.events(ROOM)[0]["transactionId"] == "anny-42-g1"
    assert graph.call_counts()["POST /users/{mailbox}/events"] == 4


async def test_extended_property_is_expanded_and_filtered(graph: GraphEmulator,
                                                          graph_client: GraphServiceClient) -> None:
    events = graph_client.users.by_user_id(ROOM).events
    prop = SingleValueLegacyExtendedProperty(id=PROP_ID, value="booking-7")
    mine = await events.post(event_model(single_value_extended_properties=[prop]))
    await events.post(event_model(subject="someone else's"))
    assert mine is not None and mine.single_value_extended_properties is None

    plain = await events.by_event_id(mine.id).get()
    assert plain is not None and plain.single_value_extended_properties is None
    expand = [f"singleValueExtendedProperties($filter=id eq '{PROP_ID}')"]
    query = EventItemRequestBuilder.EventItemRequestBuilderGetQueryParameters(expand=expand)
    expanded = await events.by_event_id(mine.id).get(config(query))
    assert expanded is not None and expanded.single_value_extended_properties is not None
    assert [(p.id, p.value) for p in expanded.single_value_extended_properties] == [(PROP_ID, "booking-7")]
    assert unknown_fields(expanded) == set()

    def where(value: str) -> EventsRequestBuilder.EventsRequestBuilderGetQueryParameters:
        clause = f"singleValueExtendedProperties/Any(ep: ep/id eq '{PROP_ID}' and ep/value eq '{value}')"
        return EventsRequestBuilder.EventsRequestBuilderGetQueryParameters(filter=clause, expand=expand)

    found = await events.get(config(where("booking-7")))
    assert found is not None and [e.id for e in found.value or []] == [mine.id]
    assert found.value[0].single_value_extended_properties[0].value == "booking-7"
    nothing = await events.get(config(where("booking-8")))
    assert nothing is not None and nothing.value == []
    raw = graph.events(ROOM)
    assert {p["value"] for e in raw for p in e["singleValueExtendedProperties"]} == {"booking-7"}


async def test_events_list_pages_by_ten_and_holds_masters_not_occurrences(
        graph: GraphEmulator, graph_client: GraphServiceClient) -> None:
    for n in range(11):
        graph.person_create_event(ROOM, subject=f"single {n}", start=f"2026-11-{n + 2:02d}T08:00:00",
                                  end=f"2026-11-{n + 2:02d}T09:00:00")
    graph.person_create_event(ROOM, subject="series", start="2026-11-02T12:00:00", end="2026-11-02T13:00:00",
                              recurrence=recurrence("daily", "2026-11-02", count=5))
    first = await graph_client.users.by_user_id(ROOM).events.get()
    assert first is not None and len(first.value or []) == 10 and first.odata_next_link
    rest = await graph_client.users.by_user_id(ROOM).events.with_url(first.odata_next_link).get()
    assert rest is not None and len(rest.value or []) == 2 and rest.odata_next_link is None
    types = [e.type for e in (first.value or []) + (rest.value or [])]
    assert types.count(EventType.SeriesMaster) == 1 and types.count(EventType.SingleInstance) == 11


# recurrence -------------------------------------------------------------------------------
async def test_calendar_view_expands_series_with_exception_and_cancelled_occurrences(
        graph: GraphEmulator, graph_client: GraphServiceClient) -> None:
    series = graph.person_create_event(
        ROOM, subject="Weekly sync", organizer="alice@contoso.com", time_zone=WEU,
        start="2026-10-19T09:00:00", end="2026-10-19T10:00:00",
        recurrence=recurrence("weekly", "2026-10-19", days_of_week=["monday", "wednesday"], count=6))
    graph.person_update_occurrence(ROOM, series["id"], date(2026, 10, 21), subject="Moved",
                                   start="2026-10-21T15:00:00", end="2026-10-21T16:00:00", time_zone=WEU)
    graph.person_cancel_occurrence(ROOM, series["id"], date(2026, 10, 26))
    graph.person_cancel_occurrence(ROOM, series["id"], "2026-10-28T09:00:00", remove=False)
    graph.person_create_event(ROOM, subject="single", start="2026-10-20T12:00:00", end="2026-10-20T13:00:00")

    query = CalendarViewRequestBuilder.CalendarViewRequestBuilderGetQueryParameters(
        start_date_time="2026-10-01T00:00:00Z", end_date_time="2026-12-01T00:00:00Z", top=50)
    view = await graph_client.users.by_user_id(ROOM).calendar_view.get(config(query, 'outlook.timezone="UTC"'))
    assert view is not None and view.value is not None
    occurrences = [e for e in view.value if e.series_master_id]
    assert EventType.SeriesMaster not in {e.type for e in view.value}
    assert len(view.value) == 6 and len(occurrences) == 5
    assert len({e.id for e in view.value}) == 6 and len({e.i_cal_u_id for e in occurrences}) == 5
    starts = [e.start.date_time[:16] for e in occurrences]
    # DST ends on 25 Oct 2026 in Europe/Berlin: 09:00 local is 07:00 UTC before, 08:00 UTC after
    assert starts == ["2026-10-19T07:00", "2026-10-21T13:00", "2026-10-28T08:00", "2026-11-02T08:00",
                      "2026-11-04T08:00"]
    moved, cancelled = occurrences[1], occurrences[2]
    assert (moved.type, moved.subject) == (EventType.Exception, "Moved")
    assert cancelled.type == EventType.Exception and cancelled.is_cancelled is True
    assert all(e.series_master_id == series["id"] and e.recurrence is None for e in occurrences)
    assert occurrences[0].type == EventType.Occurrence and occurrences[0].organizer.email_address.address == (
        "alice@contoso.com")
    assert all(parse_occurrence_id(e.id) for e in occurrences)
    assert all(unknown_fields(e) == set() for e in view.value)
    again = graph.calendar_view(ROOM, "2026-10-01T00:00:00Z", "2026-12-01T00:00:00Z")
    assert [e["id"] for e in again] == [e.id for e in view.value]

    instances = await graph_client.users.by_user_id(ROOM).events.by_event_id(series["id"]).instances.get(
        config(query))
    assert instances is not None and [e.id for e in instances.value or []] == [e.id for e in occurrences]


@pytest.mark.parametrize(("rule", "start", "expected"), [
    (recurrence("daily", "2026-03-01", interval=2, end_date="2026-03-09"), "2026-03-01",
     ["03-01", "03-03", "03-05", "03-07", "03-09"]),
    (recurrence("weekly", "2026-03-02", interval=2, days_of_week=["monday", "friday"], count=5), "2026-03-02",
     ["03-02", "03-06", "03-16", "03-20", "03-30"]),
    (recurrence("absoluteMonthly", "2026-01-31", day_of_month=31, count=3), "2026-01-31",
     ["01-31", "02-28", "03-31"]),
    (recurrence("relativeMonthly", "2026-01-01", days_of_week=["friday"], index="last", count=3), "2026-01-30",
     ["01-30", "02-27", "03-27"]),
    (recurrence("relativeMonthly", "2026-01-01", days_of_week=["tuesday"], index="second"), "2026-01-13",
     ["01-13", "02-10", "03-10", "04-14"]),
    (recurrence("absoluteYearly", "2026-02-10", day_of_month=10, month=2), "2026-02-10", ["02-10"]),
])
def test_recurrence_patterns_and_ranges(graph: GraphEmulator, rule: dict, start: str, expected: list[str]) -> None:
    graph.person_create_event(ROOM, start=f"{start}T10:00:00", end=f"{start}T10:30:00", recurrence=rule)
    view = graph.calendar_view(ROOM, "2026-01-01T00:00:00Z", "2026-04-20T00:00:00Z")
    assert [e["start"]["dateTime"][5:10] for e in view] == expected
    assert all(e["type"] == "occurrence" for e in view)


def test_all_day_series_and_editing_the_whole_series(graph: GraphEmulator) -> None:
    series = graph.person_create_event(ROOM, subject="Offsite", is_all_day=True, time_zone=WEU,
                                       start=date(2026, 11, 2), end=date(2026, 11, 3),
                                       recurrence=recurrence("daily", "2026-11-02", count=3))
    graph.person_update_occurrence(ROOM, series["id"], date(2026, 11, 3), subject="Offsite day 2")
    view = graph.calendar_view(ROOM, "2026-11-01T00:00:00Z", "2026-11-10T00:00:00Z", time_zone="UTC")
    assert [(e["start"]["dateTime"], e["end"]["dateTime"], e["isAllDay"]) for e in view] == [
        (f"2026-11-0{d}T00:00:00.0000000", f"2026-11-0{d + 1}T00:00:00.0000000", True) for d in (2, 3, 4)]
    assert view[1]["subject"] == "Offsite day 2"
    graph.person_update_event(ROOM, series["id"], subject="Retreat")
    assert [e["subject"] for e in graph.calendar_view(ROOM, "2026-11-01T00:00:00Z", "2026-11-10T00:00:00Z")] == [
        "Retreat", "Offsite day 2", "Retreat"]
    graph.person_update_event(ROOM, series["id"], recurrence=recurrence("daily", "2026-11-02", count=2))
    assert [e["type"] for e in graph.calendar_view(ROOM, "2026-11-01T00:00:00Z", "2026-11-10T00:00:00Z")] == [
        "occurrence", "occurrence"]  # a new pattern drops the exceptions, as Outlook does


# delta ------------------------------------------------------------------------------------
async def test_delta_pages_then_returns_only_changes_and_removals(
        graph: GraphEmulator, graph_client: GraphServiceClient) -> None:
    events = graph_client.users.by_user_id(ROOM).events
    prop = SingleValueLegacyExtendedProperty(id=PROP_ID, value="b1")
    made = [await events.post(event_model(f"e{n}", f"2026-11-{n + 2:02d}T09:00:00", f"2026-11-{n + 2:02d}T10:00:00",
                                          single_value_extended_properties=[prop])) for n in range(5)]
    ids = [e.id for e in made if e]
    items, link, pages = await delta_round(graph_client, None, page_size=2)
    assert pages == 3 and sorted(e.id for e in items) == sorted(ids)
    assert all(e.single_value_extended_properties is None and e.start.time_zone == "UTC" for e in items)
    assert all(unknown_fields(e) == set() for e in items)

    unchanged, link, _ = await delta_round(graph_client, link)
    assert unchanged == []

    await events.by_event_id(ids[0]).patch(Event(subject="changed"))
    await events.by_event_id(ids[1]).delete()
    await events.by_event_id(ids[2]).patch(Event(start=when("2027-01-05T09:00:00"), end=when("2027-01-05T10:00:00")))
    added = await events.post(event_model("new", "2026-11-20T09:00:00", "2026-11-20T10:00:00"))
    outside = await events.post(event_model("outside", "2027-02-01T09:00:00", "2027-02-01T10:00:00"))
    graph.person_cancel_event(ROOM, ids[3])
    changes, link, _ = await delta_round(graph_client, link, page_size=2)
    removed = {e.id for e in changes if "@removed" in e.additional_data}
    updated = {e.id: e for e in changes if "@removed" not in e.additional_data}
    assert removed == {ids[1], ids[2]} and set(updated) == {ids[0], ids[3], added.id}
    assert outside.id not in updated
    assert updated[ids[0]].subject == "changed" and updated[ids[3]].is_cancelled is True
    assert all(e.additional_data["@removed"] == {"reason": "deleted"} for e in changes if e.id in removed)
    assert all(unknown_fields(e, ALLOWED_EXTRA | {"@removed"}) == set() for e in changes)

    graph.expire_delta_tokens(ROOM)
    gone = await odata_error(graph_client.users.by_user_id(ROOM).calendar_view.delta.with_url(link).get())
    assert gone.response_status_code == 410 and gone.error.code == "syncStateNotFound"
    assert graph.call_counts()["GET /users/{mailbox}/calendarView/delta"] == 8  # 3 + 1 + 3 pages, then the 410


async def test_delta_reports_series_occurrences_and_window_rules(graph: GraphEmulator,
                                                                 graph_client: GraphServiceClient) -> None:
    series = graph.person_create_event(ROOM, start="2026-11-02T09:00:00", end="2026-11-02T10:00:00",
                                       recurrence=recurrence("daily", "2026-11-02", count=4))
    items, link, _ = await delta_round(graph_client, None)
    assert len(items) == 4 and {e.type for e in items} == {EventType.Occurrence}
    graph.person_update_occurrence(ROOM, series["id"], date(2026, 11, 3), subject="special")
    graph.person_delete_occurrence(ROOM, series["id"], date(2026, 11, 4))
    changes, link, _ = await delta_round(graph_client, link)
    assert [(e.subject, e.type) for e in changes if "@removed" not in e.additional_data] == [
        ("special", EventType.Exception)]
    assert [e.id for e in changes if "@removed" in e.additional_data] == [items[2].id]

    too_long = DeltaRequestBuilder.DeltaRequestBuilderGetQueryParameters(
        start_date_time="2026-01-01T00:00:00Z", end_date_time="2031-01-02T00:00:00Z")
    refused = await odata_error(graph_client.users.by_user_id(ROOM).calendar_view.delta.get(config(too_long)))
    assert refused.response_status_code == 400
    unknown = link.replace("deltatoken=", "deltatoken=x")
    assert (await odata_error(graph_client.users.by_user_id(ROOM).calendar_view.delta.with_url(unknown).get())
            ).response_status_code == 410


async def test_delta_can_drop_a_deletion_for_good_as_graph_sometimes_does(graph: GraphEmulator,
                                                                           graph_client: GraphServiceClient) -> None:
    kept = graph.person_create_event(ROOM, start="2026-11-02T09:00:00", end="2026-11-02T10:00:00")
    dropped = graph.person_create_event(ROOM, start="2026-11-03T09:00:00", end="2026-11-03T10:00:00")
    _, link, _ = await delta_round(graph_client, None)
    graph.set_delta_faults(omit_removals=1)
    graph.person_delete_event(ROOM, dropped["id"])
    changes, link, _ = await delta_round(graph_client, link)
    assert changes == []  # the deletion is not reported ...
    graph.person_delete_event(ROOM, kept["id"])
    changes, link, _ = await delta_round(graph_client, link)
    assert [e.id for e in changes if "@removed" in e.additional_data] == [kept["id"]]  # ... nor ever after


# time zones -------------------------------------------------------------------------------
async def test_times_render_in_event_zone_or_preferred_zone(graph_client: GraphServiceClient) -> None:
    events = graph_client.users.by_user_id(ROOM).events
    created = await events.post(event_model(start="2026-07-01T09:00:00", end="2026-07-01T10:30:00",
                                            tz="Pacific Standard Time"))
    assert created is not None
    item = events.by_event_id(created.id)
    own = await item.get()
    utc = await item.get(config(None, 'outlook.timezone="UTC"'))
    berlin = await item.get(config(None, 'outlook.timezone="Europe/Berlin"'))
    assert shown(own.start) == ("2026-07-01T09:00:00.0000000", "Pacific Standard Time")
    assert own.original_start_time_zone == "Pacific Standard Time"
    assert [shown(utc.start), shown(utc.end)] == [("2026-07-01T16:00:00.0000000", "UTC"),
                                                  ("2026-07-01T17:30:00.0000000", "UTC")]
    assert shown(berlin.start) == ("2026-07-01T18:00:00.0000000", "Europe/Berlin")
    all_day = await events.post(Event(subject="holiday", is_all_day=True, start=when("2026-07-03T00:00:00", WEU),
                                      end=when("2026-07-04T00:00:00", WEU)))
    day = await events.by_event_id(all_day.id).get(config(None, 'outlook.timezone="UTC"'))
    assert [shown(day.start), shown(day.end)] == [("2026-07-03T00:00:00.0000000", "UTC"),
                                                  ("2026-07-04T00:00:00.0000000", "UTC")]


# categories -------------------------------------------------------------------------------
async def test_master_categories_are_unique_by_name(graph: GraphEmulator, graph_client: GraphServiceClient,
                                                    graph_http: httpx.AsyncClient) -> None:
    categories = graph_client.users.by_user_id(ROOM).outlook.master_categories
    assert (await categories.get()).value == []
    created = await categories.post(OutlookCategory(display_name="anny", color=CategoryColor.Preset22))
    assert created is not None and created.id and created.color.value == "preset22"
    duplicate = await odata_error(categories.post(OutlookCategory(display_name="ANNY", color=CategoryColor.Preset1)))
    assert duplicate.response_status_code == 409 and duplicate.error.code == "ErrorFolderExists"
    listed = await categories.get()
    assert [(c.display_name, c.color.value) for c in listed.value] == [("anny", "preset22")]
    assert unknown_fields(listed) == set() and graph.categories(ROOM2) == []
    bad_colour = await graph_http.post(f"/v1.0/users/{ROOM}/outlook/masterCategories",
                                       json={"displayName": "other", "color": "purple"})
    assert bad_colour.status_code == 400


# subscriptions ----------------------------------------------------------------------------
def subscription(receiver: Receiver, minutes: int = 60, resource: str = f"users/{ROOM}/events",
                 lifecycle: bool = True, client_state: str = "s3cret") -> Subscription:
    return Subscription(
        change_type="created,updated,deleted",
        notification_url=f"{receiver.url}/notify?code=fnkey",
        lifecycle_notification_url=f"{receiver.url}/lifecycle?code=fnkey" if lifecycle else None,
        resource=resource,
        expiration_date_time=datetime.now(UTC) + timedelta(minutes=minutes),
        client_state=client_state,
    )


async def test_subscription_validation_handshake_then_create(graph: GraphEmulator, graph_receiver: Receiver,
                                                             graph_client: GraphServiceClient) -> None:
    created = await graph_client.subscriptions.post(subscription(graph_receiver, resource=f"/Users/{ROOM}/Events"))
    assert created is not None and created.id and created.client_state == "s3cret"
    assert unknown_fields(created) == set()
    paths = [path for path, _ in graph_receiver.validations]
    assert paths == ["/notify", "/lifecycle"]
    tokens = [query["validationToken"] for _, query in graph_receiver.validations]
    assert all(query["code"] == "fnkey" for _, query in graph_receiver.validations)
    assert len(set(tokens)) == 2 and all(" " in token for token in tokens)  # must be URL-decoded to echo
    listed = await graph_client.subscriptions.get()
    assert [s.id for s in listed.value] == [created.id]
    one = await graph_client.subscriptions.by_subscription_id(created.id).get()
    assert one.resource == f"/Users/{ROOM}/Events" and one.expiration_date_time == created.expiration_date_time


@pytest.mark.parametrize("mode", ["wrong", "html", "slow"])
async def test_subscription_refused_when_validation_fails(graph: GraphEmulator, graph_receiver: Receiver,
                                                          graph_client: GraphServiceClient, mode: str) -> None:
    graph_receiver.mode = mode
    refused = await odata_error(graph_client.subscriptions.post(subscription(graph_receiver)))
    assert refused.response_status_code == 400 and "validation" in refused.error.message.lower()
    assert graph.subscriptions() == []


async def test_subscription_limits_duplicates_renew_reauthorize_delete(
        graph: GraphEmulator, graph_receiver: Receiver, graph_client: GraphServiceClient) -> None:
    too_long = await odata_error(graph_client.subscriptions.post(subscription(graph_receiver, minutes=10_081)))
    assert too_long.response_status_code == 400 and "10080 minutes" in too_long.error.message
    long_state = subscription(graph_receiver, client_state="x" * 129)
    assert (await odata_error(graph_client.subscriptions.post(long_state))).response_status_code == 400
    bad_resource = subscription(graph_receiver, resource=f"users/{ROOM}/messages")
    assert (await odata_error(graph_client.subscriptions.post(bad_resource))).response_status_code == 400

    created = await graph_client.subscriptions.post(subscription(graph_receiver, minutes=10_079))
    assert created is not None
    duplicate = await odata_error(graph_client.subscriptions.post(subscription(graph_receiver)))
    assert duplicate.response_status_code == 409
    other_room = await graph_client.subscriptions.post(subscription(graph_receiver, resource=f"users/{ROOM2}/events"))
    assert other_room is not None

    item = graph_client.subscriptions.by_subscription_id(created.id)
    later = datetime.now(UTC) + timedelta(days=6)
    renewed = await item.patch(Subscription(expiration_date_time=later))
    assert renewed is not None and abs((renewed.expiration_date_time - later).total_seconds()) < 1
    beyond = await odata_error(item.patch(Subscription(expiration_date_time=later + timedelta(days=2))))
    assert beyond.response_status_code == 400
    await item.reauthorize.post()
    await item.delete()
    assert (await odata_error(item.get())).response_status_code == 404
    assert [s["id"] for s in graph.subscriptions()] == [other_room.id]


async def test_changes_are_notified_with_client_state_and_retried(
        graph: GraphEmulator, graph_receiver: Receiver, graph_client: GraphServiceClient) -> None:
    sub = await graph_client.subscriptions.post(subscription(graph_receiver))
    graph_receiver.fail_next = 1
    created = await graph_client.users.by_user_id(ROOM).events.post(event_model())
    person = graph.person_create_event(ROOM, subject="by hand", start="2026-11-25T09:00:00",
                                       end="2026-11-25T10:00:00")
    await graph_client.users.by_user_id(ROOM).events.by_event_id(created.id).delete()
    await graph_client.users.by_user_id(ROOM2).events.post(event_model())  # not subscribed
    await graph.wait_deliveries()

    items = graph_receiver.items()
    user_id = next(s for s in graph.state.mailboxes.values() if s.address == ROOM).user_id
    assert {(i["changeType"], i["resourceData"]["id"]) for i in items} == {
        ("created", created.id), ("created", person["id"]), ("deleted", created.id)}
    assert all(i["clientState"] == "s3cret" and i["subscriptionId"] == sub.id for i in items)
    assert all(i["tenantId"] == graph.config.tenant_id for i in items)
    first = next(i for i in items if i["changeType"] == "created" and i["resourceData"]["id"] == created.id)
    assert first["resource"] == f"Users/{user_id}/Events/{created.id}"
    assert first["resourceData"] == {"@odata.type": "#Microsoft.Graph.Event", "@odata.id": first["resource"],
                                     "@odata.etag": f'W/"{created.change_key}"', "id": created.id}
    assert all(query == {"code": "fnkey"} for _, query, _ in graph_receiver.posts)
    statuses = [d["status"] for d in graph.deliveries("change")]
    assert statuses[0] == 500 and statuses.count(500) == 1 and set(statuses[1:]) == {202}
    failed = graph.deliveries("change")[0]
    # the retry comes after a backoff, so later batches may be delivered before it
    assert [d["attempt"] for d in graph.deliveries("change") if d["body"] == failed["body"]] == [1, 2]


async def test_notifications_are_collected_into_one_post_per_url(
        graph: GraphEmulator, graph_receiver: Receiver, graph_client: GraphServiceClient) -> None:
    await graph_client.subscriptions.post(subscription(graph_receiver))
    await graph_client.subscriptions.post(subscription(graph_receiver, resource=f"users/{ROOM2}/events"))
    graph.set_notification_delivery(batch_interval=0.5)
    for room in (ROOM, ROOM2, ROOM):
        graph.person_create_event(room, start="2026-11-25T09:00:00", end="2026-11-25T10:00:00")
    await graph.wait_deliveries()
    assert [len(body["value"]) for _, _, body in graph_receiver.posts] == [3]
    assert len({item["subscriptionId"] for item in graph_receiver.items()}) == 2


async def test_lifecycle_events_and_expiry(graph: GraphEmulator, graph_receiver: Receiver,
                                           graph_client: GraphServiceClient) -> None:
    sub = await graph_client.subscriptions.post(subscription(graph_receiver))
    graph.fire_lifecycle(sub.id, "reauthorizationRequired")
    graph.fire_lifecycle(sub.id, "missed")
    graph.fire_lifecycle(sub.id, "subscriptionRemoved")
    await graph.wait_deliveries()
    lifecycle = graph_receiver.items("/lifecycle")
    assert [i["lifecycleEvent"] for i in lifecycle] == ["reauthorizationRequired", "missed", "subscriptionRemoved"]
    assert all(i["subscriptionId"] == sub.id and i["clientState"] == "s3cret" for i in lifecycle)
    assert graph.subscriptions() == []

    second = await graph_client.subscriptions.post(subscription(graph_receiver))
    graph.expire_subscription(second.id)
    graph.person_create_event(ROOM, start="2026-11-25T09:00:00", end="2026-11-25T10:00:00")
    await graph.wait_deliveries()
    assert graph_receiver.items() == []
    expired = await odata_error(graph_client.subscriptions.by_subscription_id(second.id).get())
    assert expired.response_status_code == 404


async def test_notification_faults_drop_duplicate_reorder(graph: GraphEmulator, graph_receiver: Receiver,
                                                          graph_client: GraphServiceClient) -> None:
    await graph_client.subscriptions.post(subscription(graph_receiver))

    def subjects() -> list[str]:
        return [graph.event(ROOM, i["resourceData"]["id"])["subject"] for i in graph_receiver.items()]

    graph.set_notification_faults(drop_next=1)
    graph.person_create_event(ROOM, subject="lost", start="2026-11-25T09:00:00", end="2026-11-25T10:00:00")
    graph.person_create_event(ROOM, subject="kept", start="2026-11-26T09:00:00", end="2026-11-26T10:00:00")
    await graph.wait_deliveries()
    assert subjects() == ["kept"]

    graph_receiver.posts.clear()
    graph.set_notification_faults(duplicate=3)
    graph.person_create_event(ROOM, subject="thrice", start="2026-11-27T09:00:00", end="2026-11-27T10:00:00")
    await graph.wait_deliveries()
    assert subjects() == ["thrice"] * 3

    graph_receiver.posts.clear()
    graph.set_notification_faults(duplicate=1, reorder_next=3)
    for n in range(3):
        graph.person_create_event(ROOM, subject=f"r{n}", start="2026-11-28T09:00:00", end="2026-11-28T10:00:00")
    await graph.wait_deliveries()
    assert subjects() == ["r2", "r1", "r0"]


async def test_notify_before_response_delivers_the_echo_before_the_write_returns(
        graph: GraphEmulator, graph_receiver: Receiver, graph_client: GraphServiceClient) -> None:
    await graph_client.subscriptions.post(subscription(graph_receiver))
    graph.set_notification_faults(before_response=True)
    returned: list[str] = []
    seen_before_return: list[bool] = []
    graph_receiver.on_post.append(lambda body: seen_before_return.append(not returned))
    created = await graph_client.users.by_user_id(ROOM).events.post(event_model())
    returned.append(created.id)
    assert seen_before_return == [True]
    assert graph_receiver.items()[0]["resourceData"]["id"] == created.id


# $batch -----------------------------------------------------------------------------------
async def test_batch_runs_requests_and_honours_depends_on(graph: GraphEmulator, graph_client: GraphServiceClient,
                                                          graph_http: httpx.AsyncClient) -> None:
    # msgraph-core 1.5.2's batch module imports `deprecated`, which it does not declare (not
    # installed here), so batches go over plain HTTP.
    made = await graph_client.users.by_user_id(ROOM).events.post(event_model())
    gets = [{"id": "a", "method": "GET", "url": f"/users/{ROOM}/events/{quote_id(made.id)}"},
            {"id": "b", "method": "GET", "url": "places/microsoft.graph.room",
             "headers": {"Prefer": 'outlook.timezone="UTC"'}}]
    answer = (await graph_http.post("/v1.0/$batch", json={"requests": gets})).json()["responses"]
    assert [(r["id"], r["status"]) for r in answer] == [("a", 200), ("b", 200)]
    assert answer[0]["body"]["id"] == made.id and len(answer[1]["body"]["value"]) == 2

    start = {"dateTime": "2026-11-24T09:00:00", "timeZone": "UTC"}
    create = {"method": "POST", "url": f"/users/{ROOM}/events", "headers": {"Content-Type": "application/json"},
              "body": {"subject": "b", "start": start, "end": start}}
    missing = {"method": "GET", "url": f"/users/{ROOM}/events/nope"}
    requests = [{"id": "1", **missing}, {"id": "2", "dependsOn": ["1"], **create},
                {"id": "3", "dependsOn": ["2"], **create}]
    result = (await graph_http.post("/v1.0/$batch", json={"requests": requests})).json()["responses"]
    assert [(r["id"], r["status"]) for r in result] == [("1", 404), ("2", 424), ("3", 424)]
    # the SDK writes "depends_on", which Graph ignores: the dependent request still runs
    ignored = [{"id": "1", **missing}, {"id": "2", "depends_on": ["1"], **create}]
    result = (await graph_http.post("/v1.0/$batch", json={"requests": ignored})).json()["responses"]
    assert sorted(r["status"] for r in result) == [201, 404]
    too_many = [{"id": str(n), **missing} for n in range(21)]
    assert (await graph_http.post("/v1.0/$batch", json={"requests": too_many})).status_code == 400
    counts = graph.call_counts()
    assert counts["POST /$batch"] == 4 and counts["GET /users/{mailbox}/events/{id}"] == 3


# throttling and faults --------------------------------------------------------------------
async def test_mailbox_concurrency_429_is_retried_by_the_sdk(graph: GraphEmulator,
                                                             graph_client: GraphServiceClient) -> None:
    graph.set_throttling(concurrency=1)
    graph.set_latency(200, route="GET /users/{mailbox}/events")
    events = graph_client.users.by_user_id(ROOM).events
    results = await asyncio.gather(events.get(), events.get(), graph_client.users.by_user_id(ROOM2).events.get())
    assert all(r is not None and r.value == [] for r in results)
    counts = graph.call_counts()
    assert counts["GET /users/{mailbox}/events"] == 4  # one 429 (MailboxConcurrency) and its retry


async def test_request_budget_429_has_retry_after(graph: GraphEmulator, graph_http: httpx.AsyncClient) -> None:
    graph.set_throttling(budget=2, window_seconds=600)
    for _ in range(2):
        assert (await graph_http.get(f"/v1.0/users/{ROOM}/events")).status_code == 200
    refused = await graph_http.get(f"/v1.0/users/{ROOM}/events")
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "ApplicationThrottled"
    assert 590 <= int(refused.headers["Retry-After"]) <= 600
    assert (await graph_http.get(f"/v1.0/users/{ROOM2}/events")).status_code == 200  # other mailboxes unaffected
    graph.advance_clock(601)
    assert (await graph_http.get(f"/v1.0/users/{ROOM}/events")).status_code == 200


async def test_injected_503_is_retried_and_504_after_write_is_idempotent(
        graph: GraphEmulator, graph_client: GraphServiceClient, graph_http: httpx.AsyncClient) -> None:
    graph.add_fault(503, "POST /users/{mailbox}/events", count=1)
    created = await graph_client.users.by_user_id(ROOM).events.post(event_model())
    assert created is not None and len(graph.events(ROOM)) == 1
    assert graph.call_counts()["POST /users/{mailbox}/events"] == 2

    graph.add_fault(504, "POST /users/{mailbox}/events", count=1, after_write=True, retry_after=None)
    body = {"subject": "x", "transactionId": "t-504", "start": {"dateTime": "2026-11-24T11:00:00", "timeZone": "UTC"},
            "end": {"dateTime": "2026-11-24T12:00:00", "timeZone": "UTC"}}
    timed_out = await graph_http.post(f"/v1.0/users/{ROOM}/events", json=body)
    assert timed_out.status_code == 504 and "Retry-After" not in timed_out.headers
    retried = await graph_http.post(f"/v1.0/users/{ROOM}/events", json=body)
    assert retried.status_code == 201 and len(graph.events(ROOM)) == 2
    assert [f["hits"] for f in graph.list_faults()] == [1, 1]


def test_rate_faults_repeat_with_the_same_seed(graph: GraphEmulator) -> None:
    def pattern(seed: int) -> list[bool]:
        fault = Fault(status=503, rate=0.5, seed=seed)
        return [fault.applies("GET /x", None) for _ in range(40)]

    assert pattern(7) == pattern(7) and pattern(7) != pattern(8) and 5 < sum(pattern(7)) < 35


async def test_auth_paths_and_encoded_ids(graph: GraphEmulator, graph_http: httpx.AsyncClient) -> None:
    anonymous = await httpx.AsyncClient(base_url=str(graph.server.url)).get(f"/v1.0/users/{ROOM}/events")
    assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "InvalidAuthenticationToken"
    no_token = await odata_error(sdk_client(graph.base_url, anonymous=True).users.by_user_id(ROOM).events.get())
    assert no_token.response_status_code == 401

    assert (await graph_http.get("/v1.0//subscriptions")).status_code == 200
    assert (await graph_http.get("/subscriptions")).status_code == 200
    window = "startDateTime=2026-11-01T00:00:00Z&endDateTime=2026-12-01T00:00:00Z"
    for path in ("calendarView/delta()", "calendar/calendarView/delta", "calendarview/delta"):
        assert (await graph_http.get(f"/v1.0/users/{ROOM}/{path}?{window}")).status_code == 200
    made = graph.person_create_event(ROOM, start="2026-11-24T09:00:00", end="2026-11-24T10:00:00")
    encoded = httpx.URL(str(graph.server.url)).copy_with(raw_path=f"/v1.0/users/{ROOM}/events/{quote_id(made['id'])}"
                                                         .encode())
    assert (await graph_http.get(encoded)).json()["id"] == made["id"]
    unknown = await graph_http.get("/v1.0/users/x/somethingElse")
    assert unknown.status_code == 400 and unknown.json()["error"]["code"] == "BadRequest"


# control API and standalone mode ----------------------------------------------------------
async def test_control_api_over_http(graph: GraphEmulator) -> None:
    async with httpx.AsyncClient(base_url=f"{graph.server.url}/_control") as control:
        assert (await control.post("/reset")).status_code == 200
        seeded = await control.post("/seed", json={
            "rooms": [{"email": "hall@contoso.com", "displayName": "Hall", "capacity": 50}],
            "events": [{"mailbox": "hall@contoso.com", "subject": "Party", "start": "2026-11-24T18:00:00",
                        "end": "2026-11-24T23:00:00", "timeZone": WEU, "organizer": "bob@contoso.com",
                        "sensitivity": "private", "showAs": "free"}]})
        event = seeded.json()["events"][0]
        assert (event["sensitivity"], event["showAs"], event["organizer"]["emailAddress"]["address"]) == (
            "private", "free", "bob@contoso.com")
        path = f"/mailboxes/hall@contoso.com/events/{quote_id(event['id'])}"
        assert (await control.patch(path, json={"subject": "Gala"})).json()["subject"] == "Gala"
        assert (await control.post(path + "/cancel", json={})).status_code == 200
        listed = (await control.get("/mailboxes/hall@contoso.com/events")).json()
        assert listed[0]["isCancelled"] is True and listed[0]["subject"] == "Gala"
        fault = (await control.post("/faults", json={"status": 503, "route": "GET *", "count": 1})).json()
        assert fault["count"] == 1
        anonymous = await control.get("/counters")
        assert anonymous.status_code == 200 and anonymous.json()["total"] == 0
        refused = await control.post("/faults", json={"status": 418, "count": 1})
        assert refused.status_code == 400
        assert (await control.delete(path)).status_code == 200
        assert (await control.get("/mailboxes/hall@contoso.com/events")).json() == []

        series = (await control.post("/mailboxes/hall@contoso.com/events", json={
            "subject": "Yoga", "start": "2026-11-02T09:00:00", "end": "2026-11-02T10:00:00",
            "recurrence": recurrence("daily", "2026-11-02", count=3)})).json()
        occurrences = f"/mailboxes/hall@contoso.com/events/{quote_id(series['id'])}/occurrences"
        edited = await control.patch(f"{occurrences}/2026-11-03", json={"subject": "Yin yoga"})
        assert (edited.json()["type"], edited.json()["subject"]) == ("exception", "Yin yoga")
        assert (await control.delete(f"{occurrences}/2026-11-04")).status_code == 200
        view = (await control.get("/mailboxes/hall@contoso.com/calendarView",
                                  params={"start": "2026-11-01T00:00:00Z", "end": "2026-11-10T00:00:00Z"})).json()
        assert [e["subject"] for e in view] == ["Yoga", "Yin yoga"]
        missing = await control.get("/mailboxes/nobody@contoso.com/events")
        assert missing.status_code == 404


def test_context_manager_starts_and_stops_a_server() -> None:
    with running_graph_emulator() as (emulator, server):
        assert emulator.base_url == f"{server.url}/v1.0"
        answer = httpx.get(f"{emulator.base_url}/subscriptions", headers={"Authorization": "Bearer t"})
        assert answer.status_code == 200 and answer.json()["value"] == []
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{server.url}/_control/counters")


def test_standalone_module_serves_a_seed_file(tmp_path: Path) -> None:
    seed = tmp_path / "seed.json"
    seed.write_text(json.dumps({"rooms": [{"email": "solo@contoso.com", "displayName": "Solo"}]}))
    port = free_port()
    root = Path(__file__).resolve().parents[2]
    command = [sys.executable, "-m", "sandbox.graph", "--port", str(port), "--seed", str(seed)]
    process = subprocess.Popen(command, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/v1.0/places/microsoft.graph.room",
                                   headers={"Authorization": "Bearer t"})
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and process.poll() is None
                time.sleep(0.1)
        assert [room["emailAddress"] for room in answer.json()["value"]] == ["solo@contoso.com"]
        counts = httpx.get(f"http://127.0.0.1:{port}/_control/counters").json()
        assert counts == {"GET /places/microsoft.graph.room": 1, "total": 1}
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_all_day_series_stays_midnight_to_midnight_across_dst(graph: GraphEmulator) -> None:
    graph.person_create_event(ROOM, subject="Fair", is_all_day=True, time_zone=WEU,
                              start=date(2026, 10, 24), end=date(2026, 10, 25),
                              recurrence=recurrence("daily", "2026-10-24", count=3))
    view = graph.calendar_view(ROOM, "2026-10-20T00:00:00Z", "2026-10-30T00:00:00Z", time_zone="UTC")
    assert [(e["start"]["dateTime"][:10], e["end"]["dateTime"][:10]) for e in view] == [
        ("2026-10-24", "2026-10-25"), ("2026-10-25", "2026-10-26"), ("2026-10-26", "2026-10-27")]
    assert all(e["start"]["dateTime"].endswith("T00:00:00.0000000") for e in view)
