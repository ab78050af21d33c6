"""The anny Admin API emulator (sandbox/anny), driven over real HTTP with httpx.

One emulator and one webhook receiver serve the whole module; every test starts from a reset.
Webhook outcomes are read after `emulator.settle()` (all deliveries finished), never by timing.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from aiohttp import web

from sandbox.anny import AnnyEmulator, AnnyError, start_anny_emulator
from sandbox.anny.schemas import AnnySchemas, default_schema_dir
from sandbox.serve import BackgroundServer, free_port

TOKEN = "anny-token-for-tests"
ORG = "org-42"
JSONAPI = "application/vnd.api+json"
WRITE = {"Content-Type": JSONAPI}
REPO = Path(__file__).resolve().parents[2]


# ---- fixtures --------------------------------------------------------------------------------


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def envelope(self) -> dict[str, Any]:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A webhook endpoint: records every request; answers `statuses` first, then 200."""

    url: str = ""
    requests: list[Received] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(Received(dict(request.headers), await request.read()))
        return web.Response(status=self.statuses.pop(0) if self.statuses else 200)

    def envelopes(self) -> list[dict[str, Any]]:
        return [r.envelope for r in self.requests]

    def events(self) -> list[tuple[str, str]]:
        return [(e["event"], e["data"]["id"]) for e in self.envelopes()]


@pytest.fixture(scope="module")
def anny_server() -> Iterator[tuple[AnnyEmulator, BackgroundServer]]:
    emulator, server = start_anny_emulator(token=TOKEN, organization_id=ORG, retry_backoff_s=0.001)
    try:
        yield emulator, server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def anny_receiver_server() -> Iterator[tuple[Receiver, BackgroundServer]]:
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    server = BackgroundServer(app).start()
    receiver.url = f"{server.url}/hook"
    try:
        yield receiver, server
    finally:
        server.stop()


@pytest.fixture
def anny(anny_server: tuple[AnnyEmulator, BackgroundServer]) -> Iterator[AnnyEmulator]:
    emulator = anny_server[0]
    emulator.reset()
    yield emulator
    emulator.wait_settled()  # nothing of this test may reach the receiver during the next one


@pytest.fixture
def anny_receiver(anny_receiver_server: tuple[Receiver, BackgroundServer], anny: AnnyEmulator) -> Receiver:
    receiver = anny_receiver_server[0]
    receiver.requests.clear()
    receiver.statuses.clear()
    return receiver


@pytest.fixture
async def anny_http(anny: AnnyEmulator) -> AsyncIterator[httpx.AsyncClient]:
    """A client as the product uses it: bearer token and `?o=` on every request."""
    headers = {"Authorization": f"Bearer {TOKEN}", "Accept": JSONAPI}
    async with httpx.AsyncClient(
        base_url=str(anny.url), headers=headers, event_hooks={"request": [with_organization]}
    ) as client:
        yield client


async def with_organization(request: httpx.Request) -> None:
    """Add `?o=` to every request. (A client-level `params=` would not do: httpx 0.28 then replaces the
    query of a URL passed in, such as `links.next`, instead of merging with it.)"""
    request.url = request.url.copy_merge_params({"o": ORG})


@pytest.fixture
async def anny_raw(anny: AnnyEmulator) -> AsyncIterator[httpx.AsyncClient]:
    """A bare client (no token, no organisation)."""
    async with httpx.AsyncClient(base_url=str(anny.url)) as client:
        yield client


@dataclass
class Org:
    room: str
    desk: str
    hall: str
    other_room: str


@pytest.fixture
def anny_org(anny: AnnyEmulator) -> Org:
    """Room 1 (Berlin) with two children, and a second parent room in New York."""
    room = anny.add_resource("Room 1", timezone="Europe/Berlin")["id"]
    desk = anny.add_resource("Desk A", parent=room)["id"]
    hall = anny.add_resource("Room 1 left half", parent=room)["id"]
    other = anny.add_resource("NY Room", timezone="America/New_York")["id"]
    return Org(room, desk, hall, other)


def blocker_body(resource: str, start: str, end: str, **attributes: Any) -> dict[str, Any]:
    attributes = {"start_date": start, "end_date": end, "is_blocker": True} | attributes
    relationships = {"resource": {"data": {"type": "resources", "id": resource}}}
    return {"data": {"type": "bookings", "attributes": attributes, "relationships": relationships}}


def ids(document: dict[str, Any]) -> list[str]:
    return [item["id"] for item in document["data"]]


def signature(key: str, body: bytes) -> str:
    return hmac.new(key.encode(), body, hashlib.sha256).hexdigest()


# ---- auth, organisation, media types ---------------------------------------------------------


async def test_request_without_organization_is_400(anny_raw: httpx.AsyncClient) -> None:
    response = await anny_raw.get("/api/v1/bookings", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 400
    assert response.json()["errors"][0]["source"] == {"parameter": "o"}


@pytest.mark.parametrize("authorization", [None, "Bearer wrong", TOKEN])
async def test_missing_or_wrong_token_is_401(anny_raw: httpx.AsyncClient, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = await anny_raw.get("/api/v1/resources", params={"o": ORG}, headers=headers)
    assert response.status_code == 401
    assert response.json()["errors"][0]["status"] == "401"


async def test_other_organization_is_403(anny_raw: httpx.AsyncClient) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    response = await anny_raw.get("/api/v1/resources", params={"o": "someone-else"}, headers=headers)
    assert response.status_code == 403


async def test_writes_need_the_jsonapi_media_type(anny_http: httpx.AsyncClient, anny_org: Org) -> None:
    body = blocker_body(anny_org.room, "2026-11-24T10:00:00+01:00", "2026-11-24T11:00:00+01:00")
    plain = await anny_http.post("/api/v1/bookings", json=body)
    assert plain.status_code == 415
    assert plain.json()["errors"][0]["status"] == "415"
    created = await anny_http.post("/api/v1/bookings", content=json.dumps(body), headers=WRITE)
    assert created.status_code == 201
    assert created.headers["Content-Type"].startswith(JSONAPI)


@pytest.mark.parametrize("accept", ["application/json", JSONAPI])
async def test_reads_accept_json_and_jsonapi(anny_http: httpx.AsyncClient, accept: str) -> None:
    response = await anny_http.get("/api/v1/resources", headers={"Accept": accept})
    assert response.status_code == 200
    assert response.json()["jsonapi"] == {"version": "1.1"}


async def test_unknown_route_is_a_jsonapi_404(anny_http: httpx.AsyncClient) -> None:
    response = await anny_http.get("/api/v1/nothing-here")
    assert response.status_code == 404
    assert response.json()["errors"][0]["status"] == "404"


# ---- resources -------------------------------------------------------------------------------


async def test_resources_lists_parents_by_default(anny_http: httpx.AsyncClient, anny_org: Org) -> None:
    document = (await anny_http.get("/api/v1/resources")).json()
    assert ids(document) == [anny_org.room, anny_org.other_room]
    room = document["data"][0]
    assert room["attributes"]["timezone"] == "Europe/Berlin"
    assert room["attributes"]["has_children"] is True
    assert room["attributes"]["slug"] == "room-1"
    assert {"archived", "hidden", "name"} <= set(room["attributes"])
    assert "included" not in document


async def test_resources_include_children(anny_http: httpx.AsyncClient, anny_org: Org) -> None:
    document = (await anny_http.get("/api/v1/resources", params={"include": "children"})).json()
    assert ids(document) == [anny_org.room, anny_org.other_room]
    children = document["data"][0]["relationships"]["children"]["data"]
    assert [c["id"] for c in children] == [anny_org.desk, anny_org.hall]
    included = {item["id"]: item for item in document["included"]}
    assert set(included) == {anny_org.desk, anny_org.hall}
    desk = included[anny_org.desk]
    assert desk["meta"]["parent_id"] == anny_org.room
    assert desk["attributes"]["parent"]["id"] == anny_org.room
    assert desk["attributes"]["timezone"] == "Europe/Berlin"  # inherited from the parent


async def test_resources_with_children_listed(anny_http: httpx.AsyncClient, anny_org: Org) -> None:
    params = {"filter[exclude_child_resources]": "false"}
    document = (await anny_http.get("/api/v1/resources", params=params)).json()
    parents = {item["id"]: item["meta"]["parent_id"] for item in document["data"]}
    assert parents == {
        anny_org.room: None,
        anny_org.desk: anny_org.room,
        anny_org.hall: anny_org.room,
        anny_org.other_room: None,
    }


async def test_sparse_fieldset_without_children_includes_none(anny_http: httpx.AsyncClient, anny_org: Org) -> None:
    params = {"include": "children", "fields[resources]": "name,timezone"}
    document = (await anny_http.get("/api/v1/resources", params=params)).json()
    assert document["included"] == []
    assert set(document["data"][0]["attributes"]) == {"name", "timezone"}
    params["fields[resources]"] = "name,children"
    document = (await anny_http.get("/api/v1/resources", params=params)).json()
    assert {item["id"] for item in document["included"]} == {anny_org.desk, anny_org.hall}


async def test_get_one_resource(anny_http: httpx.AsyncClient, anny_org: Org) -> None:
    response = await anny_http.get(f"/api/v1/resources/{anny_org.desk}", params={"include": "parent"})
    assert response.json()["data"]["meta"]["parent_id"] == anny_org.room
    assert [item["id"] for item in response.json()["included"]] == [anny_org.room]
    assert (await anny_http.get("/api/v1/resources/999999")).status_code == 404


async def test_unknown_include_is_400(anny_http: httpx.AsyncClient) -> None:
    response = await anny_http.get("/api/v1/bookings", params={"include": "nonsense"})
    assert response.status_code == 400
    assert response.json()["errors"][0]["source"] == {"parameter": "include"}


# ---- bookings: reading -----------------------------------------------------------------------


async def test_filter_resources_lists_exactly_those(
    anny: AnnyEmulator, anny_http: httpx.AsyncClient, anny_org: Org
) -> None:
    on_room = anny.person_create_booking(anny_org.room, "2026-11-24T10:00", "2026-11-24T11:00")
    on_desk = anny.person_create_booking(anny_org.desk, "2026-11-24T10:00", "2026-11-24T11:00")
    anny.person_create_booking(anny_org.other_room, "2026-11-24T10:00", "2026-11-24T11:00")
    only_room = (await anny_http.get("/api/v1/bookings", params={"filter[resources]": anny_org.room})).json()
    assert ids(only_room) == [on_room["id"]]
    both = f"{anny_org.room},{anny_org.desk}"
    listed = (await anny_http.get("/api/v1/bookings", params={"filter[resources]": both})).json()
    assert set(ids(listed)) == {on_room["id"], on_desk["id"]}


async def test_date_filters_select_overlapping_bookings(
    anny: AnnyEmulator, anny_http: httpx.AsyncClient, anny_org: Org
) -> None:
    make = anny.person_create_booking
    before = make(anny_org.room, "2026-11-24T08:00", "2026-11-24T09:00")
    across_start = make(anny_org.room, "2026-11-24T09:30", "2026-11-24T10:30")
    inside = make(anny_org.room, "2026-11-24T11:00", "2026-11-24T11:30")
    across_end = make(anny_org.room, "2026-11-24T11:45", "2026-11-24T13:00")
    after = make(anny_org.room, "2026-11-24T12:00", "2026-11-24T13:00")
    params = {"filter[start_date]": "2026-11-24T10:00:00+01:00", "filter[end_date]": "2026-11-24T12:00:00+01:00"}
    listed = ids((await anny_http.get("/api/v1/bookings", params=params)).json())
    assert listed == [across_start["id"], inside["id"], across_end["id"]]
    assert before["id"] not in listed and after["id"] not in listed
    whole_day = {"filter[start_date]": "2026-11-24", "filter[end_date]": "2026-11-24"}
    assert len(ids((await anny_http.get("/api/v1/bookings", params=whole_day)).json())) == 5
    bad = await anny_http.get("/api/v1/bookings", params={"filter[start_date]": "tomorrow"})
    assert bad.status_code == 400


async def test_hide_blocker_and_status_filters(anny: AnnyEmulator, anny_http: httpx.AsyncClient, anny_org: Org) -> None:
    booking = anny.person_create_booking(anny_org.room, "2026-11-24T10:00", "2026-11-24T11:00")
    blocker = anny.person_create_blocker(anny_org.room, "2026-11-24T12:00", "2026-11-24T13:00", title="Works")
    requested = anny.person_create_booking(anny_org.room, "2026-11-24T14:00", "2026-11-24T15:00", status="requested")
    canceled = anny.person_create_booking(anny_org.room, "2026-11-24T16:00", "2026-11-24T17:00")
    anny.person_cancel_booking(canceled["id"])
    everything = ids((await anny_http.get("/api/v1/bookings")).json())
    assert everything == [booking["id"], blocker["id"], requested["id"], canceled["id"]]
    no_blockers = ids((await anny_http.get("/api/v1/bookings", params={"filter[hide_blocker]": "1"})).json())
    assert blocker["id"] not in no_blockers and len(no_blockers) == 3
    occupying = {"filter[status]": "accepted,requested"}
    assert ids((await anny_http.get("/api/v1/bookings", params=occupying)).json()) == [
        booking["id"],
        blocker["id"],
        requested["id"],
    ]
    only_canceled = ids((await anny_http.get("/api/v1/bookings", params={"filter[status]": "canceled"})).json())
    assert only_canceled == [canceled["id"]]


async def test_include_resource_parent_service_customer(
    anny: AnnyEmulator, anny_http: httpx.AsyncClient, anny_org: Org
) -> None:
    customer = {"email": "ada@example.org", "phone": "+49 30 1234", "name": "Ada Lovelace"}
    booking = anny.person_create_booking(
        anny_org.desk, "2026-11-24T10:00", "2026-11-24T11:00", service="Desk day", customer=customer
    )
    params = {"include": "resource,resource.parent,service,customer"}
    document = (await anny_http.get("/api/v1/bookings", params=params)).json()
    relationships = document["data"][0]["relationships"]
    assert relationships["resource"]["data"] == {"type": "resources", "id": anny_org.desk}
    included = {(item["type"], item["id"]): item for item in document["included"]}
    assert set(included) == {
        ("resources", anny_org.desk),
        ("resources", anny_org.room),
        ("services", relationships["service"]["data"]["id"]),
        ("customers", relationships["customer"]["data"]["id"]),
    }
    person = included["customers", relationships["customer"]["data"]["id"]]["attributes"]
    assert (person["email"], person["phone"], person["full_name"]) == (
        "ada@example.org",
        "+49 30 1234",
        "Ada Lovelace",
    )
    assert included["services", booking["service"]["id"]]["attributes"]["name"] == "Desk day"
    anny.person_create_booking(anny_org.desk, "2026-11-24T12:00", "2026-11-24T13:00", service="Desk day")
    two = (await anny_http.get("/api/v1/bookings", params=params)).json()
    assert len(two["data"]) == 2
    assert sorted((i["type"], i["id"]) for i in two["included"]) == sorted(
        set(included) | {("services", booking["service"]["id"])}
    )
    single = (await anny_http.get(f"/api/v1/bookings/{booking['id']}", params={"include": "service"})).json()
    assert [item["type"] for item in single["included"]] == ["services"]


async def test_paging_follows_links_next(anny: AnnyEmulator, anny_http: httpx.AsyncClient, anny_org: Org) -> None:
    made = [
        anny.person_create_booking(anny_org.room, f"2026-12-{day:02d}T10:00", f"2026-12-{day:02d}T11:00")["id"]
        for day in range(1, 31)
    ] + [anny.person_create_booking(anny_org.room, "2026-12-31T10:00", "2026-12-31T11:00")["id"]]
    first = (await anny_http.get("/api/v1/bookings")).json()
    assert first["meta"] == {"current_page": 1, "last_page": 2, "per_page": 30, "total": 31}
    assert len(first["data"]) == 30 and "next" in first["links"]

    seen, pages, url = [], [], "/api/v1/bookings?page[size]=7"
    while url and len(pages) < 10:
        document = (await anny_http.get(url)).json()
        seen += ids(document)
        pages.append(document["meta"]["current_page"])
        url = document["links"].get("next")
    assert seen == made
    assert pages == [1, 2, 3, 4, 5]
    assert document["meta"] == {"current_page": 5, "last_page": 5, "per_page": 7, "total": 31}
    huge = (await anny_http.get("/api/v1/bookings", params={"page[size]": "1000"})).json()
    assert huge["meta"]["per_page"] == 100
    assert (await anny_http.get("/api/v1/bookings", params={"page[number]": "0"})).status_code == 400


async def test_sort_by_start_date_descending(anny: AnnyEmulator, anny_http: httpx.AsyncClient, anny_org: Org) -> None:
    early = anny.person_create_booking(anny_org.room, "2026-11-24T08:00", "2026-11-24T09:00")
    late = anny.person_create_booking(anny_org.room, "2026-11-25T08:00", "2026-11-25T09:00")
    document = (await anny_http.get("/api/v1/bookings", params={"sort": "-start_date"})).json()
    assert ids(document) == [late["id"], early["id"]]


async def test_dates_carry_the_resource_local_offset(anny: AnnyEmulator, anny_org: Org) -> None:
    winter = anny.person_create_booking(anny_org.room, "2026-11-24T10:00", "2026-11-24T11:00")
    summer = anny.person_create_booking(anny_org.room, "2026-07-01T09:00:00Z", "2026-07-01T10:00:00Z")
    new_york = anny.person_create_booking(anny_org.other_room, "2026-11-24T10:00", "2026-11-24T11:00")
    assert (winter["start_date"], winter["end_date"]) == ("2026-11-24T10:00:00+01:00", "2026-11-24T11:00:00+01:00")
    assert summer["start_date"] == "2026-07-01T11:00:00+02:00"
    assert new_york["start_date"] == "2026-11-24T10:00:00-05:00"
    assert winter["blocker_start_date"] == winter["start_date"]


# ---- bookings: writing -----------------------------------------------------------------------


async def test_booking_read_patch_delete(anny: AnnyEmulator, anny_http: httpx.AsyncClient, anny_org: Org) -> None:
    booking = anny.person_create_booking(anny_org.room, "2026-11-24T10:00", "2026-11-24T11:00", service="Meeting")
    path = f"/api/v1/bookings/{booking['id']}"
    read = (await anny_http.get(path)).json()["data"]
    assert read["attributes"]["number"] == booking["number"]
    patch = {"data": {"type": "bookings", "id": booking["id"], "attributes": {"description": "Board"}}}
    patched = (await anny_http.patch(path, content=json.dumps(patch), headers=WRITE)).json()["data"]
    assert patched["attributes"]["description"] == "Board"
    assert patched["attributes"]["updated_at"] > read["attributes"]["updated_at"]
    deleted = await anny_http.delete(path)
    assert deleted.status_code == 204 and deleted.content == b""
    missing = await anny_http.get(path)
    assert missing.status_code == 404
    assert missing.json()["errors"][0]["status"] == "404"
    assert (await anny_http.delete(path)).status_code == 404
    assert (await anny_http.patch(path, content=json.dumps(patch), headers=WRITE)).status_code == 404


async def test_patch_with_other_id_is_409(anny: AnnyEmulator, anny_http: httpx.AsyncClient, anny_org: Org) -> None:
    booking = anny.person_create_booking(anny_org.room, "2026-11-24T10:00", "2026-11-24T11:00")
    patch = {"data": {"type": "bookings", "id": "other", "attributes": {}}}
    response = await anny_http.patch(f"/api/v1/bookings/{booking['id']}", content=json.dumps(patch), headers=WRITE)
    assert response.status_code == 409


async def test_cancel_sets_status_and_canceled_at(
    anny: AnnyEmulator, anny_http: httpx.AsyncClient, anny_org: Org
) -> None:
    booking = anny.person_create_booking(anny_org.room, "2026-11-24T10:00", "2026-11-24T11:00")
    assert booking["canceled_at"] is None
    response = await anny_http.post(f"/api/v1/bookings/{booking['id']}/cancel")
    assert response.status_code == 200
    attributes = response.json()["data"]["attributes"]
    assert attributes["status"] == "canceled"
    assert attributes["canceled_at"] is not None
    assert anny.booking(booking["id"])["status"] == "canceled"


async def test_blocker_create_patch_delete(anny: AnnyEmulator, anny_http: httpx.AsyncClient, anny_org: Org) -> None:
    body = blocker_body(
        anny_org.room,
        "2026-11-24T10:00:00+01:00",
        "2026-11-24T11:00:00+01:00",
        title="Outlook: Jour fixe",
        description="[m365-sync] event 1",
    )
    created = await anny_http.post("/api/v1/bookings", content=json.dumps(body), headers=WRITE)
    assert created.status_code == 201
    blocker = created.json()["data"]
    attributes = blocker["attributes"]
    assert attributes["is_blocker"] is True
    assert attributes["title"] == "Outlook: Jour fixe"
    assert attributes["description"] == "[m365-sync] event 1"
    assert (attributes["start_date"], attributes["end_date"]) == (
        "2026-11-24T10:00:00+01:00",
        "2026-11-24T11:00:00+01:00",
    )
    assert blocker["relationships"]["service"]["data"] is None
    assert blocker["relationships"]["resource"]["data"]["id"] == anny_org.room

    path = f"/api/v1/bookings/{blocker['id']}"
    moved = {"start_date": "2026-11-24T09:00:00Z", "end_date": "2026-11-24T12:00:00Z", "note": "moved"}
    patch = {"data": {"type": "bookings", "id": blocker["id"], "attributes": moved}}
    patched = (await anny_http.patch(path, content=json.dumps(patch), headers=WRITE)).json()["data"]["attributes"]
    assert (patched["start_date"], patched["end_date"]) == ("2026-11-24T10:00:00+01:00", "2026-11-24T13:00:00+01:00")
    assert (patched["blocker_start_date"], patched["note"]) == ("2026-11-24T10:00:00+01:00", "moved")
    assert patched["description"] == "[m365-sync] event 1"
    assert (await anny_http.delete(path)).status_code == 204
    assert anny.bookings() == []


@pytest.mark.parametrize(
    ("change", "pointer"),
    [
        ({"end_date": "2026-11-24T09:00:00+01:00"}, "/data/attributes/end_date"),
        ({"end_date": "2026-11-24T10:00:00+01:00"}, "/data/attributes/end_date"),
        ({"start_date": "not a date"}, "/data/attributes/start_date"),
        ({"is_blocker": False}, "/data/attributes/is_blocker"),
        ({"resource": "404404"}, "/data/relationships/resource"),
        ({"resource": None}, "/data/relationships/resource"),
        ({"title": 7}, "/data/attributes/title"),
    ],
)
async def test_invalid_blocker_is_422(
    anny_http: httpx.AsyncClient, anny_org: Org, change: dict[str, Any], pointer: str
) -> None:
    body = blocker_body(anny_org.room, "2026-11-24T10:00:00+01:00", "2026-11-24T11:00:00+01:00")
    resource = change.pop("resource", anny_org.room)
    body["data"]["attributes"] |= change
    if resource is None:
        del body["data"]["relationships"]
    else:
        body["data"]["relationships"]["resource"]["data"]["id"] = resource
    response = await anny_http.post("/api/v1/bookings", content=json.dumps(body), headers=WRITE)
    assert response.status_code == 422
    assert response.json()["errors"][0]["source"]["pointer"] == pointer


async def test_patch_to_an_empty_span_is_422(anny: AnnyEmulator, anny_http: httpx.AsyncClient, anny_org: Org) -> None:
    blocker = anny.person_create_blocker(anny_org.room, "2026-11-24T10:00", "2026-11-24T11:00")
    patch = {"data": {"type": "bookings", "id": blocker["id"], "attributes": {"end_date": "2026-11-24T08:00"}}}
    response = await anny_http.patch(f"/api/v1/bookings/{blocker['id']}", content=json.dumps(patch), headers=WRITE)
    assert response.status_code == 422
    assert anny.booking(blocker["id"])["end_date"] == blocker["end_date"]


async def test_updated_at_changes_on_every_write(anny: AnnyEmulator, anny_org: Org) -> None:
    booking = anny.person_create_booking(anny_org.room, "2026-11-24T10:00", "2026-11-24T11:00")
    stamps = [booking["updated_at"]]
    for description in ("a", "b", "c"):
        stamps.append(anny.person_update_booking(booking["id"], description=description)["updated_at"])
    stamps.append(anny.person_cancel_booking(booking["id"])["updated_at"])
    assert stamps == sorted(set(stamps))


# ---- series ----------------------------------------------------------------------------------


async def test_series_occurrences_and_master(anny: AnnyEmulator, anny_http: httpx.AsyncClient, anny_org: Org) -> None:
    series = anny.person_create_series(anny_org.room, "2026-11-24T10:00", "2026-11-24T11:00", 4, service="Weekly")
    master, occurrences = series["master"], series["occurrences"]
    assert [o["start_date"][:10] for o in occurrences] == ["2026-11-24", "2026-12-01", "2026-12-08", "2026-12-15"]
    assert all(o["is_series"] and not o["is_series_master"] for o in occurrences)
    assert {o["series_id"] for o in occurrences} == {master["series_id"]}
    assert master["is_series_master"] is True and master["is_series"] is True
    assert (master["start_date"], master["end_date"]) == ("2026-11-24T10:00:00+01:00", "2026-12-15T11:00:00+01:00")
    listed = (await anny_http.get("/api/v1/bookings", params={"filter[resources]": anny_org.room})).json()
    assert len(listed["data"]) == 5

    moved = anny.person_move_booking(occurrences[3]["id"], "2026-12-16T14:00", "2026-12-16T15:00")
    assert moved["start_date"] == "2026-12-16T14:00:00+01:00"
    assert anny.booking(master["id"])["end_date"] == "2026-12-16T15:00:00+01:00"
    anny.person_cancel_booking(occurrences[1]["id"])
    statuses = [anny.booking(o["id"])["status"] for o in occurrences]
    assert statuses == ["accepted", "canceled", "accepted", "accepted"]


async def test_cancel_and_delete_a_whole_series(anny: AnnyEmulator, anny_org: Org) -> None:
    first = anny.person_create_series(anny_org.room, "2026-11-24T10:00", "2026-11-24T11:00", 3)
    anny.person_cancel_booking(first["master"]["id"])
    assert {b["status"] for b in anny.bookings()} == {"canceled"}
    second = anny.person_create_series(anny_org.desk, "2026-11-24T10:00", "2026-11-24T11:00", 2)
    anny.person_delete_booking(second["master"]["id"])
    assert {b["resource"]["id"] for b in anny.bookings()} == {anny_org.room}


# ---- webhook subscriptions and deliveries ----------------------------------------------------


async def subscribe(http: httpx.AsyncClient, url: str, **attributes: Any) -> dict[str, Any]:
    attributes = {"name": "m365 sync", "url": url, "events": ["bookings.created", "bookings.updated",
                  "bookings.deleted"], "custom_headers": {"x-shared-secret": "s3cret"}} | attributes  # fmt: skip
    body = {"data": {"type": "webhook-subscriptions", "attributes": attributes}}
    response = await http.post("/api/v1/webhook-subscriptions", content=json.dumps(body), headers=WRITE)
    assert response.status_code == 201, response.text
    return response.json()["data"]


async def test_webhook_subscription_crud(anny_http: httpx.AsyncClient, anny_receiver: Receiver) -> None:
    created = await subscribe(anny_http, anny_receiver.url)
    attributes = created["attributes"]
    assert len(attributes["signing_key"]) == 64
    assert int(attributes["signing_key"], 16) >= 0
    assert attributes["is_active"] is True and attributes["custom_headers"] == {"x-shared-secret": "s3cret"}
    path = f"/api/v1/webhook-subscriptions/{created['id']}"
    assert (await anny_http.get(path)).json()["data"]["attributes"]["url"] == anny_receiver.url
    assert ids((await anny_http.get("/api/v1/webhook-subscriptions")).json()) == [created["id"]]
    assert (await anny_http.delete(path)).status_code == 204
    assert (await anny_http.get(path)).status_code == 404
    bad = {"data": {"type": "webhook-subscriptions", "attributes": {"url": "ftp://x", "events": []}}}
    response = await anny_http.post("/api/v1/webhook-subscriptions", content=json.dumps(bad), headers=WRITE)
    assert response.status_code == 422


async def test_delivery_headers_signature_and_flat_envelope(
    anny: AnnyEmulator, anny_http: httpx.AsyncClient, anny_receiver: Receiver, anny_org: Org
) -> None:
    subscription = await subscribe(anny_http, anny_receiver.url)
    booking = anny.person_create_booking(
        anny_org.desk, "2026-11-24T10:00", "2026-11-24T11:00", service="Meeting", customer={"email": "a@b.org"}
    )
    await anny.settle()
    [received] = anny_receiver.requests
    assert received.headers["Content-Type"] == "application/json"
    assert received.headers["x-anny-event"] == "bookings.created"
    assert received.headers["x-anny-timestamp"].isdigit()
    assert received.headers["x-shared-secret"] == "s3cret"
    key = subscription["attributes"]["signing_key"]
    assert hmac.compare_digest(received.headers["x-anny-signature"], signature(key, received.body))
    envelope = received.envelope
    assert set(envelope) == {"event", "timestamp", "event_id", "webhook_id", "triggered_at", "data"}
    assert envelope["webhook_id"] == subscription["id"]
    data = envelope["data"]
    assert "attributes" not in data and data["type"] == "bookings" and data["id"] == booking["id"]
    assert data["start_date"] == "2026-11-24T10:00:00+01:00"
    assert data["resource"]["id"] == anny_org.desk
    assert data["resource"]["meta"]["parent_id"] == anny_org.room
    assert data["customer"]["email"] == "a@b.org"
    [delivery] = anny.deliveries()
    assert (delivery["url"], delivery["event"], delivery["status"], delivery["attempts"]) == (
        anny_receiver.url,
        "bookings.created",
        "delivered",
        1,
    )


async def test_signature_header_name_is_configurable(
    anny: AnnyEmulator, anny_receiver: Receiver, anny_org: Org
) -> None:
    anny.configure(signature_header="x-signature")
    key = anny.create_webhook_subscription(anny_receiver.url)["signing_key"]
    anny.person_create_blocker(anny_org.room, "2026-11-24T10:00", "2026-11-24T11:00")
    await anny.settle()
    [received] = anny_receiver.requests
    assert "x-anny-signature" not in received.headers
    assert received.headers["x-signature"] == signature(key, received.body)


async def test_every_change_produces_its_event(
    anny: AnnyEmulator, anny_http: httpx.AsyncClient, anny_receiver: Receiver, anny_org: Org
) -> None:
    anny.create_webhook_subscription(anny_receiver.url)
    body = blocker_body(anny_org.room, "2026-11-24T10:00:00+01:00", "2026-11-24T11:00:00+01:00")
    ours = (await anny_http.post("/api/v1/bookings", content=json.dumps(body), headers=WRITE)).json()["data"]["id"]
    patch = {"data": {"type": "bookings", "id": ours, "attributes": {"description": "x"}}}
    await anny_http.patch(f"/api/v1/bookings/{ours}", content=json.dumps(patch), headers=WRITE)
    await anny_http.delete(f"/api/v1/bookings/{ours}")
    theirs = anny.person_create_booking(anny_org.room, "2026-11-25T10:00", "2026-11-25T11:00")["id"]
    anny.person_move_booking(theirs, "2026-11-25T12:00", "2026-11-25T13:00")
    anny.person_cancel_booking(theirs)
    await anny_http.post(f"/api/v1/bookings/{theirs}/cancel")  # already canceled: no new event
    await anny.settle()
    assert sorted(anny_receiver.events()) == sorted(
        [
            ("bookings.created", ours),
            ("bookings.updated", ours),
            ("bookings.deleted", ours),
            ("bookings.created", theirs),
            ("bookings.updated", theirs),
            ("bookings.deleted", theirs),
        ]
    )
    canceled = next(e for e in anny_receiver.envelopes() if e["data"]["id"] == theirs and "deleted" in e["event"])
    assert canceled["data"]["status"] == "canceled"
    assert len({e["event_id"] for e in anny_receiver.envelopes()}) == 6


async def test_cancellation_can_arrive_as_updated(anny: AnnyEmulator, anny_receiver: Receiver, anny_org: Org) -> None:
    anny.configure(cancel_event="bookings.updated")
    anny.create_webhook_subscription(anny_receiver.url)
    booking = anny.person_create_booking(anny_org.room, "2026-11-24T10:00", "2026-11-24T11:00")
    anny.person_cancel_booking(booking["id"])
    await anny.settle()
    last = anny_receiver.envelopes()[-1]
    assert (last["event"], last["data"]["status"]) == ("bookings.updated", "canceled")
    assert last["data"]["canceled_at"] is not None


async def test_only_active_subscriptions_with_the_event_get_it(
    anny: AnnyEmulator, anny_http: httpx.AsyncClient, anny_receiver: Receiver, anny_org: Org
) -> None:
    created_only = anny.create_webhook_subscription(anny_receiver.url, ["bookings.created"])
    paused = anny.create_webhook_subscription(anny_receiver.url, is_active=False)
    booking = anny.person_create_booking(anny_org.room, "2026-11-24T10:00", "2026-11-24T11:00")
    anny.person_delete_booking(booking["id"])
    await anny.settle()
    assert [(e["event"], e["webhook_id"]) for e in anny_receiver.envelopes()] == [
        ("bookings.created", created_only["id"])
    ]
    patch = {"data": {"type": "webhook-subscriptions", "id": paused["id"], "attributes": {"is_active": True}}}
    path = f"/api/v1/webhook-subscriptions/{paused['id']}"
    assert (await anny_http.patch(path, content=json.dumps(patch), headers=WRITE)).status_code == 200
    anny.person_create_blocker(anny_org.room, "2026-11-24T10:00", "2026-11-24T11:00")
    await anny.settle()
    assert sorted(e["webhook_id"] for e in anny_receiver.envelopes()[1:]) == sorted([created_only["id"], paused["id"]])


async def test_failed_delivery_is_retried(anny: AnnyEmulator, anny_receiver: Receiver, anny_org: Org) -> None:
    anny.create_webhook_subscription(anny_receiver.url)
    anny_receiver.statuses[:] = [500, 503]
    anny.person_create_booking(anny_org.room, "2026-11-24T10:00", "2026-11-24T11:00")
    await anny.settle()
    assert len(anny_receiver.requests) == 3
    assert len({r.body for r in anny_receiver.requests}) == 1
    [delivery] = anny.deliveries()
    assert (delivery["status"], delivery["attempts"], delivery["responses"]) == ("delivered", 3, [500, 503, 200])


async def test_delivery_gives_up_after_three_retries(
    anny: AnnyEmulator, anny_receiver: Receiver, anny_org: Org
) -> None:
    anny.configure(deactivate_after_failures=2)
    subscription = anny.create_webhook_subscription(anny_receiver.url)
    anny_receiver.statuses[:] = [500] * 8
    anny.person_create_booking(anny_org.room, "2026-11-24T10:00", "2026-11-24T11:00")
    await anny.settle()
    anny.person_create_booking(anny_org.room, "2026-11-24T12:00", "2026-11-24T13:00")
    await anny.settle()
    assert [(d["status"], d["attempts"]) for d in anny.deliveries()] == [("failed", 4), ("failed", 4)]
    [state] = [s for s in anny.webhook_subscriptions() if s["id"] == subscription["id"]]
    assert state["is_active"] is False  # paused after consecutive failures
    anny.person_create_booking(anny_org.room, "2026-11-24T14:00", "2026-11-24T15:00")
    await anny.settle()
    assert len(anny_receiver.requests) == 8


async def test_unreachable_receiver_counts_as_failure(anny: AnnyEmulator, anny_org: Org) -> None:
    anny.create_webhook_subscription(f"http://127.0.0.1:{free_port()}/hook")
    anny.person_create_booking(anny_org.room, "2026-11-24T10:00", "2026-11-24T11:00")
    await anny.settle()
    [delivery] = anny.deliveries()
    assert (delivery["status"], delivery["attempts"]) == ("failed", 4)
    assert all(isinstance(r, str) for r in delivery["responses"])


async def test_duplicate_fault(anny: AnnyEmulator, anny_receiver: Receiver, anny_org: Org) -> None:
    anny.create_webhook_subscription(anny_receiver.url)
    anny.set_webhook_faults(duplicate=3)
    anny.person_create_booking(anny_org.room, "2026-11-24T10:00", "2026-11-24T11:00")
    await anny.settle()
    assert len(anny_receiver.requests) == 3
    assert len({r.body for r in anny_receiver.requests}) == 1
    assert len({r.headers["x-anny-signature"] for r in anny_receiver.requests}) == 1


async def test_reorder_fault_delivers_a_batch_reversed(
    anny: AnnyEmulator, anny_receiver: Receiver, anny_org: Org
) -> None:
    anny.create_webhook_subscription(anny_receiver.url)
    anny.set_webhook_faults(reorder_batch=3)
    booking = anny.person_create_booking(anny_org.room, "2026-11-24T10:00", "2026-11-24T11:00")["id"]
    anny.person_move_booking(booking, "2026-11-24T12:00", "2026-11-24T13:00")
    await anny.settle()
    assert anny_receiver.requests == []
    assert [d["status"] for d in anny.deliveries()] == ["held", "held"]
    anny.person_delete_booking(booking)
    await anny.settle()
    assert [event for event, _ in anny_receiver.events()] == [
        "bookings.deleted",
        "bookings.updated",
        "bookings.created",
    ]
    anny.person_create_blocker(anny_org.room, "2026-11-24T10:00", "2026-11-24T11:00")
    assert anny.release_held_webhooks() == 1
    await anny.settle()
    assert len(anny_receiver.requests) == 4


async def test_drop_and_delay_faults(anny: AnnyEmulator, anny_receiver: Receiver, anny_org: Org) -> None:
    anny.create_webhook_subscription(anny_receiver.url)
    anny.set_webhook_faults(drop_next=1, delay_ms=20)
    dropped = anny.person_create_booking(anny_org.room, "2026-11-24T10:00", "2026-11-24T11:00")
    kept = anny.person_create_booking(anny_org.room, "2026-11-24T12:00", "2026-11-24T13:00")
    await anny.settle()
    assert anny_receiver.events() == [("bookings.created", kept["id"])]
    assert [(d["booking_id"], d["status"]) for d in anny.deliveries()] == [
        (dropped["id"], "dropped"),
        (kept["id"], "delivered"),
    ]


async def test_deliver_before_response(
    anny: AnnyEmulator, anny_http: httpx.AsyncClient, anny_receiver: Receiver, anny_org: Org
) -> None:
    """The echo of our own blocker write beats the write's answer."""
    anny.create_webhook_subscription(anny_receiver.url)
    anny.set_webhook_faults(deliver_before_response=True)
    body = blocker_body(anny_org.room, "2026-11-24T10:00:00+01:00", "2026-11-24T11:00:00+01:00")
    response = await anny_http.post("/api/v1/bookings", content=json.dumps(body), headers=WRITE)
    assert anny_receiver.events() == [("bookings.created", response.json()["data"]["id"])]
    await anny_http.delete(f"/api/v1/bookings/{response.json()['data']['id']}")
    assert [event for event, _ in anny_receiver.events()] == ["bookings.created", "bookings.deleted"]


# ---- API faults and counters -----------------------------------------------------------------


async def test_next_n_faults_per_route(anny: AnnyEmulator, anny_http: httpx.AsyncClient, anny_org: Org) -> None:
    anny.fail_next(503, count=2, route="GET /api/v1/bookings")
    anny.fail_next(429, route="GET /api/v1/resources/{id}", retry_after=3)
    assert (await anny_http.get("/api/v1/resources")).status_code == 200
    assert [(await anny_http.get("/api/v1/bookings")).status_code for _ in range(3)] == [503, 503, 200]
    limited = await anny_http.get(f"/api/v1/resources/{anny_org.room}")
    assert (limited.status_code, limited.headers["Retry-After"]) == (429, "3")
    assert limited.json()["errors"][0]["status"] == "429"
    assert (await anny_http.get(f"/api/v1/resources/{anny_org.room}")).status_code == 200
    anny.fail_next(429)
    assert (await anny_http.get("/api/v1/bookings")).headers["Retry-After"] == "1"


async def test_forced_auth_failures_and_latency(anny: AnnyEmulator, anny_http: httpx.AsyncClient) -> None:
    anny.force_status(403)
    assert (await anny_http.get("/api/v1/resources")).status_code == 403
    anny.force_status(401)
    assert (await anny_http.get("/api/v1/resources")).status_code == 401
    anny.force_status(None)
    anny.set_latency(10)
    assert (await anny_http.get("/api/v1/resources")).status_code == 200
    assert anny.faults()["api"]["latency_ms"] == 10
    anny.clear_faults()
    assert anny.faults()["api"] == {"latency_ms": 0, "forced_status": None, "fail_next": []}
    with pytest.raises(AnnyError):
        anny.force_status(500)


async def test_counters_by_route_template(anny: AnnyEmulator, anny_http: httpx.AsyncClient, anny_org: Org) -> None:
    booking = anny.person_create_booking(anny_org.room, "2026-11-24T10:00", "2026-11-24T11:00")
    for _ in range(2):
        await anny_http.get(f"/api/v1/bookings/{booking['id']}")
    await anny_http.get("/api/v1/bookings")
    await anny_http.post(f"/api/v1/bookings/{booking['id']}/cancel")
    assert anny.counters() == {
        "GET /api/v1/bookings/{id}": 2,
        "GET /api/v1/bookings": 1,
        "POST /api/v1/bookings/{id}/cancel": 1,
    }
    anny.reset_counters()
    assert anny.counters() == {}


# ---- control API, seed, standalone -----------------------------------------------------------


SEED = {
    "resources": [
        {"id": "r1", "name": "Room 1", "timezone": "Europe/Berlin", "children": [{"name": "Desk 1"}]},
        {"name": "Hall", "slug": "hall", "timezone": "Europe/London"},
    ],
    "services": [{"name": "Meeting", "price": 12.5, "padding_before": 15}],
    "customers": [{"full_name": "Ada Lovelace", "email": "ada@example.org", "phone": "+44 1"}],
    "bookings": [
        {
            "id": "b1",
            "resource": "r1",
            "service": "Meeting",
            "customer": "ada@example.org",
            "start": "2026-11-24T10:00",
            "end": "2026-11-24T11:00",
        },
        {
            "resource": "hall",
            "start": "2026-11-24T10:00:00Z",
            "end": "2026-11-24T12:00:00Z",
            "is_blocker": True,
            "title": "Maintenance",
        },
    ],
    "series": [{"resource": "desk-1", "start": "2026-11-24T09:00", "end": "2026-11-24T10:00", "count": 2}],
}


async def test_control_api_over_http(anny: AnnyEmulator, anny_raw: httpx.AsyncClient, anny_receiver: Receiver) -> None:
    control = "/_control"
    seeded = (await anny_raw.post(f"{control}/seed", json=SEED)).json()
    assert seeded["resources"]["room-1"] == "r1" and set(seeded["resources"]) == {"room-1", "desk-1", "hall"}
    assert seeded["bookings"][0] == "b1" and len(seeded["series"][0]["occurrences"]) == 2
    b1 = (await anny_raw.get(f"{control}/bookings/b1")).json()
    assert (b1["total"], b1["blocker_start_date"]) == (12.5, "2026-11-24T09:45:00+01:00")
    assert b1["customer"]["phone"] == "+44 1"
    assert len((await anny_raw.get(f"{control}/bookings")).json()) == 5

    hook = {"url": anny_receiver.url, "custom_headers": {"x-k": "v"}}
    assert (await anny_raw.post(f"{control}/webhooks/subscriptions", json=hook)).status_code == 200
    person = {"resource": "hall", "start": "2026-11-25T10:00", "end": "2026-11-25T11:00", "service": "Meeting",
              "customer": {"email": "bob@example.org", "phone": "+44 2"}}  # fmt: skip
    made = (await anny_raw.post(f"{control}/person/bookings", json=person)).json()
    assert made["start_date"] == "2026-11-25T10:00:00+00:00"
    moved = await anny_raw.patch(f"{control}/person/bookings/{made['id']}", json={"start": "2026-11-25T09:00"})
    assert moved.json()["start_date"] == "2026-11-25T09:00:00+00:00"
    canceled = (await anny_raw.post(f"{control}/person/bookings/{made['id']}/cancel")).json()
    assert canceled["status"] == "canceled"
    assert (await anny_raw.delete(f"{control}/person/bookings/{made['id']}")).status_code == 204
    blocker = {"resource": "r1", "start": "2026-11-26T10:00", "end": "2026-11-26T11:00", "title": "Cleaning"}
    assert (await anny_raw.post(f"{control}/person/blockers", json=blocker)).json()["is_blocker"] is True
    series = {"resource": "r1", "start": "2026-11-27T10:00", "end": "2026-11-27T11:00", "count": 3}
    assert len((await anny_raw.post(f"{control}/person/series", json=series)).json()["occurrences"]) == 3

    missing = await anny_raw.post(f"{control}/person/bookings/nope/cancel")
    assert missing.status_code == 404
    assert (await anny_raw.post(f"{control}/person/blockers", json={"resource": "r1"})).status_code == 400

    faults = {"duplicate": 2, "drop_next": 1}
    assert (await anny_raw.post(f"{control}/faults/webhooks", json=faults)).json()["duplicate"] == 2
    await anny_raw.put(f"{control}/faults/api", json={"latency_ms": 1, "forced_status": 401})
    await anny_raw.post(f"{control}/faults/api/fail-next", json={"status": 500, "route": "GET /api/v1/bookings"})
    described = (await anny_raw.get(f"{control}/faults")).json()
    assert described["api"]["forced_status"] == 401 and described["webhooks"]["drop_next"] == 1
    assert (await anny_raw.get("/api/v1/bookings", params={"o": ORG})).status_code == 401
    assert (await anny_raw.get(f"{control}/counters")).json() == {"GET /api/v1/bookings": 1}
    assert (await anny_raw.delete(f"{control}/faults")).status_code == 204
    assert (await anny_raw.delete(f"{control}/counters")).status_code == 204

    deliveries = (await anny_raw.get(f"{control}/webhooks/deliveries")).json()
    assert {d["event"] for d in deliveries} >= {"bookings.created", "bookings.updated", "bookings.deleted"}
    assert all({"url", "event", "status", "attempts"} <= set(d) for d in deliveries)
    config = await anny_raw.patch(f"{control}/config", json={"cancel_event": "bookings.updated"})
    assert config.json()["cancel_event"] == "bookings.updated"
    await anny.settle()
    assert (await anny_raw.post(f"{control}/reset")).status_code == 204
    assert (await anny_raw.get(f"{control}/config")).json()["cancel_event"] == "bookings.deleted"
    assert (await anny_raw.get(f"{control}/bookings")).json() == []
    assert (await anny_raw.get(f"{control}/webhooks/deliveries")).json() == []


async def test_reset_forgets_everything(anny: AnnyEmulator, anny_receiver: Receiver, anny_org: Org) -> None:
    anny.create_webhook_subscription(anny_receiver.url)
    anny.person_create_booking(anny_org.room, "2026-11-24T10:00", "2026-11-24T11:00")
    anny.set_webhook_faults(duplicate=2)
    anny.fail_next(500)
    await anny.settle()
    anny.reset()
    assert (anny.resources(), anny.bookings(), anny.webhook_subscriptions(), anny.deliveries()) == ([], [], [], [])
    assert anny.counters() == {} and anny.faults()["webhooks"]["duplicate"] == 1


def wait_until_serving(url: str) -> None:
    """Poll the control health route until the freshly started process answers (or give up)."""
    for _ in range(200):
        try:
            httpx.get(f"{url}/_control/health").raise_for_status()
            return
        except httpx.TransportError:
            time.sleep(0.02)
    raise AssertionError(f"{url} did not start")


def test_standalone_with_seed_file(tmp_path: Path) -> None:
    seed = tmp_path / "seed.json"
    seed.write_text(json.dumps(SEED))
    port = free_port()
    command = [sys.executable, "-m", "sandbox.anny", "--port", str(port), "--seed", str(seed), "--org", ORG]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL)  # noqa: S603 (fixed argv)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_serving(url)
        headers = {"Authorization": "Bearer anny-test-token"}
        response = httpx.get(f"{url}/api/v1/resources", params={"o": ORG}, headers=headers)
        assert [item["attributes"]["slug"] for item in response.json()["data"]] == ["room-1", "hall"]
    finally:
        process.terminate()
        process.wait(timeout=10)


# ---- every payload fits anny's JSON Schemas --------------------------------------------------


@pytest.fixture(scope="module")
def anny_schemas() -> AnnySchemas:
    directory = default_schema_dir()
    return AnnySchemas(directory)


async def test_every_payload_fits_the_anny_schemas(
    anny: AnnyEmulator,
    anny_http: httpx.AsyncClient,
    anny_receiver: Receiver,
    anny_org: Org,
    anny_schemas: AnnySchemas,
) -> None:
    anny.create_webhook_subscription(anny_receiver.url)
    customer = {"email": "ada@example.org", "phone": "+49 1", "name": "Ada Lovelace"}
    booking = anny.person_create_booking(
        anny_org.desk, "2026-11-24T10:00", "2026-11-24T11:00", service="Meeting", customer=customer
    )
    series = anny.person_create_series(anny_org.room, "2026-11-25T10:00", "2026-11-25T11:00", 3, customer=customer)
    anny.person_move_booking(series["occurrences"][2]["id"], "2026-12-10T10:00", "2026-12-10T12:00")
    anny.person_cancel_booking(series["occurrences"][0]["id"])
    anny.person_create_blocker(anny_org.other_room, "2026-11-24T10:00", "2026-11-24T11:00", title="Works")
    body = blocker_body(anny_org.hall, "2026-11-26T10:00:00+01:00", "2026-11-26T11:00:00+01:00", title="Outlook")
    created = await anny_http.post("/api/v1/bookings", content=json.dumps(body), headers=WRITE)
    blocker = created.json()["data"]["id"]
    patch = {"data": {"type": "bookings", "id": blocker, "attributes": {"description": "moved"}}}
    documents = [
        created.json(),
        (await anny_http.patch(f"/api/v1/bookings/{blocker}", content=json.dumps(patch), headers=WRITE)).json(),
        (await anny_http.post(f"/api/v1/bookings/{booking['id']}/cancel")).json(),
        (
            await anny_http.get("/api/v1/bookings", params={"include": "resource,resource.parent,service,customer"})
        ).json(),
        (await anny_http.get(f"/api/v1/bookings/{booking['id']}", params={"include": "resource,customer"})).json(),
        (await anny_http.get("/api/v1/resources", params={"include": "children"})).json(),
        (await anny_http.get("/api/v1/resources", params={"filter[exclude_child_resources]": "false"})).json(),
        (await anny_http.get(f"/api/v1/resources/{anny_org.desk}", params={"include": "parent"})).json(),
    ]
    await anny_http.delete(f"/api/v1/bookings/{blocker}")
    await anny.settle()

    checked = sum(anny_schemas.validate_document(document) for document in documents)
    assert checked >= 25
    envelopes = anny_receiver.envelopes()
    assert {e["event"] for e in envelopes} == {"bookings.created", "bookings.updated", "bookings.deleted"}
    for envelope in envelopes:
        anny_schemas.validate_envelope(envelope)
        anny_schemas.validate("resource.json", envelope["data"]["resource"])
    for flat in [*anny.bookings(), *anny.resources()]:
        anny_schemas.validate("booking.json" if flat["type"] == "bookings" else "resource.json", flat)


def test_schema_check_rejects_wrong_shapes(anny_schemas: AnnySchemas) -> None:
    """The check has teeth: a naive date-time, a missing field, a JSON:API-wrapped webhook `data`."""
    good = {"id": "1", "type": "bookings", "status": "accepted", "currency": "EUR", "total": 0,
            "start_date": "2026-11-24T10:00:00+01:00", "end_date": "2026-11-24T11:00:00+01:00"}  # fmt: skip
    anny_schemas.validate("booking.json", good)
    for bad in (good | {"start_date": "2026-11-24T10:00:00"}, {k: v for k, v in good.items() if k != "total"}):
        with pytest.raises(jsonschema.ValidationError):
            anny_schemas.validate("booking.json", bad)
    envelope = {"event": "bookings.created", "timestamp": "2026-11-24T10:00:00Z", "event_id": "e",
                "webhook_id": "w", "triggered_at": "2026-11-24T10:00:00Z"}  # fmt: skip
    anny_schemas.validate_envelope(envelope | {"data": good})
    wrapped = {"data": {"type": "bookings", "id": "1", "attributes": good}}
    with pytest.raises(jsonschema.ValidationError):
        anny_schemas.validate_envelope(envelope | {"data": wrapped["data"]})


# ---- rate limits (anny developer guide, "Rate limits") --------------------------------------


async def test_rate_limits_are_off_unless_switched_on(anny, anny_http, anny_org):
    answers = [(await anny_http.get("/api/v1/resources", params={"page[number]": n + 1})).status_code
               for n in range(12)]
    assert set(answers) == {200}
    assert anny.rate_limits()["enabled"] is False


async def test_reads_over_the_limit_get_429_with_retry_after_and_a_jsonapi_error(anny, anny_http, anny_org):
    anny.set_rate_limits(reads_per_window=5, writes_per_window=2, rate_window_s=30)
    answers = [await anny_http.get("/api/v1/resources", params={"page[number]": n + 1}) for n in range(7)]
    assert [a.status_code for a in answers] == [200] * 5 + [429] * 2
    refused = answers[5]
    assert 29 <= int(refused.headers["Retry-After"]) <= 30
    assert refused.json()["errors"] == [{"status": "429", "title": "Too Many Requests",
                                         "detail": "more than 5 reads per 30 s for this organization"}]
    blocker = {"data": {"type": "bookings", "attributes": {
        "start_date": "2026-12-01T10:00:00+01:00", "end_date": "2026-12-01T11:00:00+01:00", "is_blocker": True},
        "relationships": {"resource": {"data": {"type": "resources", "id": anny_org.room}}}}}
    writes = [await anny_http.post("/api/v1/bookings", json=blocker, headers=WRITE) for _ in range(3)]
    assert [w.status_code for w in writes] == [201, 201, 429]  # writes have a budget of their own
    limits = anny.rate_limits()
    assert limits["counters"]["429 reads"] == 2 and limits["counters"]["429 writes"] == 1
    assert anny.throttled_count() == 3
    assert limits["in_window"] == {"reads": 5, "writes": 2}  # refused requests do not count


async def test_a_rolling_window_frees_slots_as_they_age(anny, anny_http, anny_org):
    anny.set_rate_limits(reads_per_window=2, rate_window_s=1.0)
    assert (await anny_http.get("/api/v1/resources")).status_code == 200
    await asyncio.sleep(0.5)
    assert (await anny_http.get("/api/v1/resources", params={"x": 1})).status_code == 200
    assert (await anny_http.get("/api/v1/resources", params={"x": 2})).status_code == 429
    await asyncio.sleep(0.55)  # the first read left the window; the second is still in it
    assert (await anny_http.get("/api/v1/resources", params={"x": 3})).status_code == 200
    assert (await anny_http.get("/api/v1/resources", params={"x": 4})).status_code == 429


async def test_a_fixed_window_resets_at_its_end(anny, anny_http, anny_org):
    anny.set_rate_limits(reads_per_window=2, rate_window_s=1.0, rate_window="fixed")
    statuses = [(await anny_http.get("/api/v1/resources", params={"x": n})).status_code for n in range(3)]
    assert statuses == [200, 200, 429]
    await asyncio.sleep(1.05)
    assert (await anny_http.get("/api/v1/resources", params={"x": 9})).status_code == 200


async def test_more_than_four_identical_requests_a_second_are_refused(anny, anny_http, anny_org):
    anny.set_rate_limits()
    same = [(await anny_http.get(f"/api/v1/resources/{anny_org.room}")).status_code for _ in range(5)]
    assert same == [200, 200, 200, 200, 429]
    assert (await anny_http.get(f"/api/v1/resources/{anny_org.desk}")).status_code == 200  # another request
    assert anny.rate_limits()["counters"]["429 identical"] == 1


async def test_rate_limits_through_the_control_api(anny, anny_raw):
    answer = await anny_raw.put("/_control/rate-limits", json={"enabled": True, "writes_per_window": 7,
                                                               "rate_window_s": 6})
    assert answer.status_code == 200
    assert answer.json()["enabled"] is True and answer.json()["writes"] == 7 and answer.json()["reads"] == 400
    bad = await anny_raw.put("/_control/rate-limits", json={"rate_window": "sideways"})
    assert bad.status_code == 400 and "rolling" in bad.json()["error"]
    assert (await anny_raw.get("/_control/rate-limits")).json()["window_s"] == 6
    anny.reset()
    assert anny.rate_limits()["enabled"] is False
