"""The anny Admin API client (JSON:API over httpx): bookings, blockers, resources.

anny's developer guide: the Admin API (https://developers.anny.co/admin-api/description/when-to-use-the-admin-api)
wants a bearer token (https://developers.anny.co/guides/authentication) and the organisation as
`?o=` on every request; it speaks JSON:API v1.1, and writes must be sent as
`application/vnd.api+json` (https://developers.anny.co/guides/json-api-conventions). Its budget is
400 reads and 100 writes a minute per organisation, shared by every client of the organisation,
and at most 4 identical requests a second (https://developers.anny.co/guides/rate-limiting):
every request here waits for `sync.budget` first. Answers are read in the shapes of
`sync.anny_wire`. Each method's docstring names the endpoint it calls and the quirks it works around.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any, cast
from urllib.parse import urlencode

import httpx

from sync import anny_wire as wire
from sync.budget import OrgBudget, current_priority, kind_of
from sync.errors import RemoteGone, RemoteThrottled, RemoteUnavailable, error_for_status
from sync.model import AnnyBooking, DesiredBlocker, SeenBooking, booking_version, is_newer
from sync.throttling import retry_after_s
from sync.validation import url_path

log = logging.getLogger(__name__)
JSONAPI = "application/vnd.api+json"
BOOKING_INCLUDE = "resource,service"  # the parent id comes with the included resource
DATE_FILTER_MARGIN = timedelta(days=1)  # anny does not say whether its date filters mean overlap
PAGE_SIZE = 30  # anny's own n8n client pages by 30; the maximum page size is not documented
PAGES_AT_ONCE = 4  # pages of one list read side by side, once the first has said how many there are
MAX_THROTTLE_RETRIES = 2
RETRY_IN_PROCESS_S = 2.0  # a longer Retry-After puts the work item back on the queue instead


@dataclass(frozen=True)
class AnnyResource:
    id: str
    name: str
    time_zone: str = ""
    parent_id: str = ""
    has_children: bool = False


class AnnyClient:
    """One client per event loop; `async with AnnyClient(...)`. Paths are under /api/v1."""

    def __init__(self, base_url: str, token: str, organization_id: str, *, timeout: float = 30,
                 budget: OrgBudget | None = None) -> None:
        self._org = organization_id
        self._budget = budget
        self.throttled = 0  # 429s received by this client
        self._reads_in_flight: dict[str, asyncio.Task[Any]] = {}  # identical GETs under way, by priority and URL
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/") + "/api/v1", timeout=timeout,
            headers={"Authorization": f"Bearer {token}", "Accept": JSONAPI})

    async def __aenter__(self) -> AnnyClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP client (no anny call)."""
        await self._http.aclose()

    # -- bookings ---------------------------------------------------------------------------------

    async def get_booking(self, booking_id: str) -> AnnyBooking | None:
        """GET /api/v1/bookings/{id}?include=resource,service — one booking
        (https://developers.anny.co/guides/json-api-conventions for `include`).

        The booking as anny has it now; None when anny answers 404. The resource comes included,
        so its parent (how a child resource's booking maps to a room) costs no second read."""
        try:
            document: wire.Document = await self._request(
                "GET", url_path("bookings", booking_id), booking_id=booking_id, params={"include": BOOKING_INCLUDE})
        except RemoteGone:
            return None
        return parse_booking(_data(document), _included(document))

    async def list_bookings(self, resource_ids: list[str], start: datetime, end: datetime,
                            hide_blockers: bool = False) -> list[AnnyBooking]:
        """GET /api/v1/bookings?filter[resources]&filter[start_date]&filter[end_date] — the filters as
        anny documents them for its bookings list
        (https://developers.anny.co/apis/customer-api/tag/bookings/get/api/v1/bookings).

        Bookings of the resources overlapping [start, end), following every page. Quirks: anny
        does not say whether its date filters select overlap or start-within, so the query asks
        for a margin around the span and the answer is filtered precisely here; a list that
        changed while it was read (`_every_page`) may show a booking twice: it is kept once, in
        its later state.
        `filter[hide_blocker]=1` leaves blockers out.
        """
        params: dict[str, Any] = {
            "filter[resources]": ",".join(resource_ids),
            "filter[start_date]": (start - DATE_FILTER_MARGIN).isoformat(),
            "filter[end_date]": (end + DATE_FILTER_MARGIN).isoformat(),
            "include": BOOKING_INCLUDE, "page[size]": PAGE_SIZE}
        if hide_blockers:
            params["filter[hide_blocker]"] = 1
        found = [parse_booking(item, _included(document))
                 for document in await self._every_page(url_path("bookings"), params) for item in _items(document)]
        return [b for b in _once_each(found) if b.start < end and b.end > start]

    async def bookings_changed_since(self, since: datetime, max_pages: int) -> tuple[list[AnnyBooking], bool]:
        """Bookings changed at or after `since` (anny's `updated_at`), newest first, and whether that is all.

        GET /api/v1/bookings?sort=-updated_at (JSON:API `sort`, listed with anny's paging
        parameters, https://developers.anny.co/apis/customer-api/tag/bookings/get/api/v1/bookings):
        reading stops at the first page that reaches back past `since`, so a sweep usually costs
        one request. Quirk: which fields anny sorts by is not documented; if it ignores the sort
        (the order is not newest first), no early stop is safe: the pages read so far are
        returned as incomplete.
        """
        params = {"sort": "-updated_at", "include": BOOKING_INCLUDE, "page[size]": PAGE_SIZE}
        found: list[AnnyBooking] = []
        previous: datetime | None = None
        for page in range(1, max_pages + 1):
            document: wire.CollectionDocument = await self._request(
                "GET", "/bookings", params={**params, "page[number]": page})
            included = _included(document)
            for booking in (parse_booking(item, included) for item in _items(document)):
                stamp = booking.updated_at
                if stamp is not None and previous is not None and stamp > previous:
                    log.warning("anny did not sort bookings by updated_at; the sweep relies on the nightly run")
                    return found, False
                previous = stamp or previous
                if stamp is not None and stamp < since:
                    return found, True
                found.append(booking)
            if not _has_next_page(document, page):
                return found, True
        return found, False

    async def create_blocker(self, resource_id: str, blocker: DesiredBlocker, note: str) -> AnnyBooking:
        """POST /api/v1/bookings with `is_blocker: true` and the resource as relationship.

        Quirk: blocker writes are not in anny's developer guide; this is the request observed in a
        production integration, so it is coded defensively (the answer's document may lack what
        was sent; `default_resource` fills the resource in). A blocker makes its resource, and so
        its children, unavailable. anny has no external-id field: the link table keeps the
        mapping, and `note` carries our marker (so the app recognises its own blockers)."""
        body = _blocker_document(blocker, note)
        body["data"]["relationships"] = {"resource": {"data": {"type": "resources", "id": resource_id}}}
        document: wire.Document = await self._request(
            "POST", url_path("bookings"), json=body, event_id=blocker.event_id)
        return parse_booking(_data(document), _included(document), default_resource=resource_id)

    async def update_blocker(self, booking_id: str, blocker: DesiredBlocker, note: str) -> AnnyBooking | None:
        """PATCH /api/v1/bookings/{id} with the blocker's span and texts (observed in a production
        integration, not in anny's guide; JSON:API update semantics,
        https://developers.anny.co/guides/json-api-conventions).

        Returns the blocker as anny has it now; None when anny answered 204 without a document,
        as JSON:API allows. Quirk: anny accepts the PATCH of a cancelled booking and leaves it
        cancelled, so the caller checks the answer's status."""
        body = _blocker_document(blocker, note)
        body["data"]["id"] = booking_id
        document: wire.Document = await self._request(
            "PATCH", url_path("bookings", booking_id), json=body, booking_id=booking_id)
        if not document.get("data"):
            return None
        return parse_booking(_data(document), _included(document))

    async def delete_booking(self, booking_id: str) -> None:
        """DELETE /api/v1/bookings/{id} (observed in a production integration, not in anny's guide;
        anny recommends cancelling customers' bookings instead, which the app never touches).

        Used for the app's own blockers only. One that is gone already (404) counts as deleted."""
        try:
            await self._request("DELETE", url_path("bookings", booking_id), booking_id=booking_id)
        except RemoteGone:
            log.info("anny booking already gone", extra={"booking_id": booking_id})

    # -- resources ----------------------------------------------------------------------------------

    async def list_resources(self) -> list[AnnyResource]:
        """GET /api/v1/resources?filter[exclude_child_resources]=false — the organisation's resources
        as JSON:API resource objects (https://developers.anny.co/admin-api/description/when-to-use-the-admin-api,
        https://developers.anny.co/guides/json-api-conventions).

        Quirk: the list holds parents only by default; with this filter the children come too,
        each stating its parent in `meta.parent_id`. Every page is read (`links.next`, else the
        page counters in `meta`)."""
        params = {"filter[exclude_child_resources]": "false", "page[size]": PAGE_SIZE}
        resources = [parse_resource(item) for document in await self._every_page(url_path("resources"), params)
                     for item in _items(document)]
        return list({resource.id: resource for resource in resources}.values())  # each once (see `_every_page`)

    async def _every_page(self, path: str, params: Mapping[str, Any]) -> list[wire.CollectionDocument]:
        """Every page of a collection (`_pages`), each item on at least one of them.

        Quirk: anny's pages are offsets. An item added or removed while they are read moves every
        later one by a place, so one may come on two pages, or move onto a page read already and
        come on none. When the pages' `meta` totals disagree, the collection changed while it was
        read: it is read once more, and both reads' pages are returned (callers keep each item
        once). Without totals (`links.next` alone) a change cannot be seen here."""
        pages = await self._pages(path, params)
        if len({_total(page) for page in pages} - {None}) > 1:
            log.info("an anny list changed while it was read; reading it once more", extra={"path": path})
            pages += await self._pages(path, params)
        return pages

    async def _pages(self, path: str, params: Mapping[str, Any]) -> list[wire.CollectionDocument]:
        """Every page of a collection, in order (`page[number]` from 1). When the first page states
        the last one (`meta` page counters), the rest are read PAGES_AT_ONCE at a time instead of
        one after another (a room of 300 bookings is 10 pages: 1 s at anny's 100 ms each); with
        `links.next` alone they are followed one by one. A page that still has a next one (the
        collection grew meanwhile) is followed the same way."""
        async def read(number: int) -> wire.CollectionDocument:
            return cast(wire.CollectionDocument,
                        await self._request("GET", path, params={**params, "page[number]": number}))

        async def reader() -> None:
            for number in numbers:  # shared: each page is read by one reader
                pages[number] = await read(number)

        pages = {1: await read(1)}
        numbers = iter(range(2, (_last_page(pages[1]) or 1) + 1))
        readers = [asyncio.ensure_future(reader()) for _ in range(PAGES_AT_ONCE)]
        try:
            await asyncio.gather(*readers)
        except BaseException:
            for task in readers:  # one page failed: the list cannot be had, stop reading the others
                task.cancel()
            raise
        while _has_next_page(pages[len(pages)], len(pages)):
            following = len(pages) + 1
            pages[following] = await read(following)
        return [pages[number] for number in sorted(pages)]

    async def get_resource(self, resource_id: str) -> AnnyResource | None:
        """GET /api/v1/resources/{id} — one resource, a JSON:API resource object
        (https://developers.anny.co/guides/json-api-conventions); None when anny answers 404."""
        try:
            document: wire.Document = await self._request(
                "GET", url_path("resources", resource_id), anny_resource=resource_id)
        except RemoteGone:
            return None
        return parse_resource(_data(document))

    # -- transport ------------------------------------------------------------------------------------

    async def _request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
                       json: Any = None, **context: Any) -> Any:
        """One Admin API request (`_send`). anny refuses more than 4 identical requests a second
        (429, https://developers.anny.co/guides/rate-limiting): identical reads asked for while one
        is under way wait for its answer instead of sending their own. A fresh instance taking a
        batch of one room's work items at once would otherwise read the room's resource, or a
        booking redelivered by several webhooks, up to 16 times in the same instant. A caller
        that is cancelled leaves the read to the others; a live read never waits behind a backfill one."""
        query = {"o": self._org, **(params or {})}
        if method != "GET":
            return await self._send(method, path, query, json, context)
        key = f"{current_priority()} {path}?{urlencode(sorted(query.items()), doseq=True)}"
        shared = self._reads_in_flight.get(key)
        if shared is None:
            shared = self._reads_in_flight[key] = asyncio.ensure_future(self._send(method, path, query, None, context))
            shared.add_done_callback(partial(self._read_done, key))
        return await asyncio.shield(shared)

    def _read_done(self, key: str, read: asyncio.Task[Any]) -> None:
        """A shared read is over: later reads send their own. Its failure is taken here too, so that
        one whose callers were all cancelled is not reported as never retrieved."""
        self._reads_in_flight.pop(key, None)
        if not read.cancelled():
            read.exception()

    async def _send(self, method: str, path: str, query: Mapping[str, Any], json: Any,
                    context: dict[str, Any]) -> Any:
        """One Admin API request within the organisation's budget (sync.budget, told when anny
        answered: anny has counted the request by then); `path` comes from
        `url_path`, so every id in it is escaped. The answer's JSON:API document ({} when it has
        no body), in the shape the caller names (`sync.anny_wire`).

        Every request carries `?o=<organisation>`; writes send `Content-Type:
        application/vnd.api+json` (plain JSON is refused with 415). anny answers 429 with
        `Retry-After` (seconds until its window resets, https://developers.anny.co/guides/rate-limiting)
        when the organisation is over its limits — another client of the same organisation may
        have spent them, and anny sends no X-RateLimit headers: every instance pauses for that
        long; a short wait is taken here, a long one raises RemoteThrottled with `retry_after_s`,
        and the worker puts the work item back on the queue for that long.
        """
        headers = {"Content-Type": JSONAPI} if json is not None else {}
        for attempt in range(MAX_THROTTLE_RETRIES + 1):
            try:
                async with self._budget.spending(kind_of(method)) if self._budget else nullcontext():
                    response = await self._http.request(method, path, params=query, json=json, headers=headers)
            except httpx.HTTPError as exc:
                raise RemoteUnavailable(f"anny {method} {path} failed: {type(exc).__name__}", **context) from exc
            if response.status_code != 429:
                return _checked(response, method, path, context)
            wait = await self._throttled(response)
            if wait > RETRY_IN_PROCESS_S or attempt == MAX_THROTTLE_RETRIES:
                raise RemoteThrottled(f"anny {method} {path.split('?')[0]} answered 429", status=429,
                                      retry_after_s=wait, **context)
            if self._budget is None:
                await asyncio.sleep(wait)  # with a budget, the next request waits out the pause
        raise AssertionError("unreachable")

    async def _throttled(self, response: httpx.Response) -> float:
        """A 429's wait: its `Retry-After` (read defensively), shared with every instance through the budget."""
        self.throttled += 1
        window = self._budget.limits.window_s if self._budget is not None else 60.0
        wait = retry_after_s(response.headers, source="anny", default_s=window / 2, max_s=2 * window)
        if self._budget is not None:
            await self._budget.throttled(wait)
        return wait


def _checked(response: httpx.Response, method: str, path: str, context: dict[str, Any]) -> Any:
    """The JSON of a successful answer ({} for an empty one, e.g. 204); an error status raises
    the typed error for it (5xx retryable), with anny's error details."""
    status = response.status_code
    if status < 400:
        return response.json() if response.content else {}
    detail = _error_detail(response)
    message = f"anny {method} {path.split('?')[0]} answered {status}: {detail}"
    raise error_for_status(status)(message, status=status, **context)


def _error_detail(response: httpx.Response) -> str:
    """The `detail`s (else `title`s) of a JSON:API error document; else the reason phrase."""
    try:
        body: wire.ErrorDocument = response.json()
        errors = body.get("errors") or []
        return "; ".join(str(e.get("detail") or e.get("title") or e) for e in errors)[:300] or response.reason_phrase
    except (ValueError, AttributeError):
        return response.reason_phrase


def _has_next_page(document: wire.CollectionDocument, page: int) -> bool:
    """Quirk: anny's page metadata is not documented consistently — `links.next` when present,
    else the page counters in `meta` (`_last_page`)."""
    if (document.get("links") or {}).get("next"):
        return True
    last = _last_page(document)
    return last is not None and page < last


def _last_page(document: wire.CollectionDocument) -> int | None:
    """The last page's number from the page counters, spelt `last_page`, `last-page` or `lastPage`."""
    return _page_counter(document, "last_page", "last-page", "lastPage")


def _total(document: wire.CollectionDocument) -> int | None:
    """The collection's size as the page counters state it."""
    return _page_counter(document, "total")


def _page_counter(document: wire.CollectionDocument, *names: str) -> int | None:
    """The first of `names` in the page counters (in `meta`, or in `meta.page`) as a number; None
    when the page does not say."""
    meta = document.get("meta") or {}
    nested = meta.get("page")
    counters = cast(dict[str, Any], nested if isinstance(nested, dict) else meta)
    value = next((counters[name] for name in names if name in counters), None)
    try:
        return int(value) if value is not None and not isinstance(value, bool) else None
    except (TypeError, ValueError):
        return None


def _once_each(bookings: list[AnnyBooking]) -> list[AnnyBooking]:
    """Each booking once, in its latest state, in the order first listed."""
    latest: dict[str, AnnyBooking] = {}
    for booking in bookings:
        seen = latest.get(booking.id)
        if seen is None or is_newer(booking.version, seen.version):
            latest[booking.id] = booking
    return list(latest.values())


def _data(document: wire.Document) -> wire.ResourceObject:
    """The one resource object of a document (a document without one is not a booking or resource)."""
    data = document.get("data")
    if not isinstance(data, dict):
        raise KeyError("data")
    return data


def _items(document: wire.CollectionDocument) -> list[wire.ResourceObject]:
    return document.get("data") or []


def _included(document: wire.Document | wire.CollectionDocument) -> dict[tuple[str, str], wire.ResourceObject]:
    """The `included` objects (asked for with `include=`) by (type, id)."""
    return {(str(item.get("type", "")), str(item.get("id"))): item for item in document.get("included") or []}


def _related_id(item: Mapping[str, Any], name: str) -> str:
    """The id of a related object: a JSON:API relationship, else a nested object or a bare id."""
    related = ((item.get("relationships") or {}).get(name) or {}).get("data")
    if isinstance(related, dict) and related.get("id") is not None:
        return str(related["id"])
    nested = (item.get("attributes") or {}).get(name, item.get(name))
    if isinstance(nested, dict) and nested.get("id") is not None:
        return str(nested["id"])
    return str(nested) if isinstance(nested, (str, int)) and nested else ""


def _attributes(item: Mapping[str, Any]) -> dict[str, Any]:
    """JSON:API resource objects nest attributes; webhook payloads are flat. Accept both."""
    return {**item, **(item.get("attributes") or {})}


def _booking_fields(item: wire.ResourceObject | wire.BookingFields) -> wire.BookingFields:
    return cast(wire.BookingFields, _attributes(item))


def _resource_fields(item: wire.ResourceObject | wire.ResourceFields) -> wire.ResourceFields:
    return cast(wire.ResourceFields, _attributes(item))


def _parent_id(item: wire.ResourceObject | wire.ResourceFields) -> str:
    """A child resource's parent: a `parent` relationship or attribute, else `meta.parent_id`."""
    meta = _resource_fields(item).get("meta") or item.get("meta") or {}
    return _related_id(item, "parent") or str(meta.get("parent_id") or "")


def parse_resource(item: wire.ResourceObject | wire.ResourceFields) -> AnnyResource:
    """A resource from a JSON:API resource object or a flat (webhook) object."""
    attrs = _resource_fields(item)
    return AnnyResource(id=str(item["id"]), name=str(attrs.get("name") or ""),
                        time_zone=str(attrs.get("timezone") or ""), parent_id=_parent_id(item),
                        has_children=bool(attrs.get("has_children")))


def parse_booking(item: wire.ResourceObject | wire.BookingFields,
                  included: Mapping[tuple[str, str], wire.ResourceObject] | None = None,
                  default_resource: str = "") -> AnnyBooking:
    """An anny booking from a JSON:API resource object (its resource and service from `included`)
    or a flat webhook object (them nested)."""
    included = included or {}
    attrs = _booking_fields(item)
    resource_id = _related_id(item, "resource") or default_resource
    nested_resource = attrs.get("resource")
    resource: wire.ResourceObject | wire.ResourceFields = included.get(("resources", resource_id)) or (
        nested_resource if isinstance(nested_resource, dict) else None) or {}
    parent_id = _parent_id(resource) if resource else ""
    service_id = _related_id(item, "service")
    nested_service = attrs.get("service")
    service: wire.ResourceObject | wire.ServiceFields = included.get(("services", service_id)) or (
        nested_service if isinstance(nested_service, dict) else None) or {}
    return AnnyBooking(
        id=str(item["id"]),
        start=datetime.fromisoformat(attrs["start_date"]),
        end=datetime.fromisoformat(attrs["end_date"]),
        resource_id=resource_id,
        parent_resource_id=parent_id,
        number=str(attrs.get("number") or ""),
        status=str(attrs.get("status") or ""),
        is_blocker=bool(attrs.get("is_blocker")),
        canceled=bool(attrs.get("canceled_at")),
        is_series_master=bool(attrs.get("is_series_master")),
        service_name=str(_attributes(service).get("name") or "") if service else "",
        resource_name=str(_attributes(resource).get("name") or "") if resource else "",
        title=str(attrs.get("title") or attrs.get("description") or ""),
        note=str(attrs.get("note") or ""),
        created_at=_timestamp(attrs.get("created_at")),
        updated_at=_timestamp(attrs.get("updated_at")),
    )


def _timestamp(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value)) if value else None
    except ValueError:
        return None


SNAPSHOT_FIELDS = ("id", "start_date", "end_date", "status", "canceled_at", "is_blocker", "is_series_master",
                   "number", "title", "description", "note", "updated_at")
MAX_SNAPSHOT_TEXT = 4096  # longer texts: the worker reads the booking instead (queue messages are ≤ 64 KiB)


def webhook_snapshot(payload: Mapping[str, Any]) -> wire.BookingSnapshot | None:
    """What the worker needs of a booking webhook's `data` to act without reading the booking;
    None when the payload is incomplete or a field of it unusable (then the worker reads the
    booking: the delivery itself is sound, only its copy of the booking cannot stand in for a
    read). `payload` is the delivery as received (`wire.WebhookDelivery`,
    https://developers.anny.co/guides/webhooks).

    Complete means: id, start and end (with their offsets), `updated_at` (to order it against
    what the link saw), the nested resource (a child's booking is mapped by its parent: a
    resource that does not state whether it has one is marked, `SeenBooking.parent_known`), and
    what a mirror's title shows: the booking's number and its nested service
    (a blocker has neither; `booking.json` makes both optional).
    """
    try:
        snapshot = _snapshot(payload)
        return snapshot if snapshot is not None and _usable(snapshot) else None
    except (TypeError, ValueError, AttributeError, KeyError):
        return None  # a field of a type or format anny does not send


def _usable(snapshot: wire.BookingSnapshot) -> bool:
    booking = parse_booking(snapshot)
    return booking.start.tzinfo is not None and booking.end.tzinfo is not None


def _snapshot(payload: Mapping[str, Any]) -> wire.BookingSnapshot | None:
    data = payload.get("data")
    if not isinstance(data, dict) or isinstance(data.get("data"), dict):
        return None  # JSON:API-wrapped: relationships without the resource's parent
    attrs = _booking_fields(cast(wire.BookingFields, data))  # a delivery's booking: flat
    resource = attrs.get("resource")
    if not isinstance(resource, dict) or resource.get("id") is None:
        return None
    if not (attrs.get("id") and attrs.get("start_date") and attrs.get("end_date") and
            booking_version(attrs.get("updated_at"))) or not isinstance(resource["id"], (str, int)):
        return None
    if not attrs.get("is_blocker") and not (attrs.get("number") and isinstance(attrs.get("service"), dict)):
        return None  # the mirror's title would lack them
    snapshot = {name: attrs.get(name) for name in SNAPSHOT_FIELDS}
    if any(isinstance(v, str) and len(v) > MAX_SNAPSHOT_TEXT for v in snapshot.values()):
        return None
    parent = parse_resource(resource).parent_id
    shown: dict[str, Any] = {"id": str(resource["id"]), "name": str(_attributes(resource).get("name") or ""),
                             "meta": {"parent_id": parent or None}}
    if not _states_parent(resource):  # resource.json makes `parent` optional: see `SeenBooking.parent_known`
        shown["parent_unknown"] = True
    snapshot["resource"] = shown
    service = attrs.get("service")
    if isinstance(service, dict):
        snapshot["service"] = {"id": str(service.get("id") or ""), "name": str(_attributes(service).get("name") or "")}
    snapshot["deleted"] = str(payload.get("event") or "") == "bookings.deleted"  # deleted or cancelled
    snapshot["created"] = str(payload.get("event") or "") == "bookings.created"
    return cast(wire.BookingSnapshot, snapshot)  # the fields checked above, the rest as anny sent them


def _states_parent(resource: Mapping[str, Any]) -> bool:
    meta = resource.get("meta")
    meta = meta if isinstance(meta, dict) else {}
    attrs = _attributes(resource)
    return "parent" in attrs or "parent_id" in meta or "parent" in (resource.get("relationships") or {})


def seen_booking(snapshot: wire.BookingSnapshot) -> SeenBooking:
    """The booking a `webhook_snapshot` shows."""
    booking = parse_booking(snapshot)
    return SeenBooking(None if snapshot.get("deleted") else booking, booking.version,
                       created=bool(snapshot.get("created")),
                       parent_known=not (snapshot.get("resource") or {}).get("parent_unknown"))


def _blocker_document(blocker: DesiredBlocker, note: str) -> dict[str, Any]:
    """The JSON:API document of a blocker write: `is_blocker`, the span, and the texts anny shows."""
    attributes = {"start_date": blocker.start.isoformat(), "end_date": blocker.end.isoformat(),
                  "is_blocker": True, "title": blocker.title, "description": blocker.title, "note": note}
    return {"data": {"type": "bookings", "attributes": attributes}}
