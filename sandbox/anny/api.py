"""The emulated anny Admin API (`/api/v1/...`): resources, bookings, blockers, webhook subscriptions."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Protocol, TypeVar

from aiohttp import web

from .config import AnnyConfig
from .errors import AnnyError, bad_parameter, invalid
from .faults import ApiFaults
from .jsonapi import (
    MEDIA_TYPE,
    Query,
    document,
    page_document,
    parse_query,
    single_document,
    sort_items,
    write_data,
)
from .limits import RateLimiter
from .model import Booking, BookingDraft, Change
from .render import JsonObject, Renderer
from .state import AnnyState
from .timefmt import parse_bound, parse_instant
from .webhooks import WebhookHub

T = TypeVar("T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
BOOKING_INCLUDES = ("resource", "resource.parent", "resource.children", "service", "customer")
RESOURCE_INCLUDES = ("children", "parent")
BOOKING_SORT = {"start_date": "start", "end_date": "end", "created_at": "created_at",
                "updated_at": "updated_at", "number": "number", "id": "id"}  # fmt: skip
RESOURCE_SORT = {"name": "name", "slug": "slug", "created_at": "created_at", "id": "id"}
BLOCKER_TEXT = ("title", "description", "note")
PATCHABLE_TEXT = (*BLOCKER_TEXT, "customer_note")
TIME_ATTRIBUTES = {"start_date": "start", "end_date": "end"}
READABLE = ("application/json", "application/vnd.api+json", "application/*", "*/*")


def route_key(request: web.Request) -> str:
    """`GET /api/v1/bookings/{id}`: the method and the route template (the path when no route matched)."""
    resource = request.match_info.route.resource
    return f"{request.method} {resource.canonical if resource is not None else request.path}"


def respond(document: JsonObject | None, status: int = 200, **headers: str) -> web.Response:
    if document is None:
        return web.Response(status=status, headers=headers)
    return web.json_response(document, status=status, content_type=MEDIA_TYPE, headers=headers)


class ApiHost(Protocol):
    """The parts of the emulator the API serves from (the emulator imports this module, not the
    other way round); read on every request, since `configure` replaces the config."""

    config: AnnyConfig
    state: AnnyState
    render: Renderer
    hub: WebhookHub
    api_faults: ApiFaults
    rate_limiter: RateLimiter

    async def announce(self, changes: list[Change]) -> None: ...


def api_middleware(emu: ApiHost) -> Any:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith("/api/"):
            return await handler(request)
        try:
            await _preflight(emu, request)
            return await handler(request)
        except web.HTTPException as error:  # no such route or method
            return respond(AnnyError(error.status, error.reason).document(), error.status)
        except AnnyError as error:
            return respond(error.document(), error.status, **error.headers)

    return middleware


async def _preflight(emu: ApiHost, request: web.Request) -> None:
    """Counters, injected faults, then what anny checks: token, organisation, media types."""
    faults, config = emu.api_faults, emu.config
    route = route_key(request)
    faults.counters[route] += 1
    if faults.latency_ms:
        await asyncio.sleep(faults.latency_ms / 1000)
    if faults.forced_status is not None:
        raise AnnyError(faults.forced_status, "Forbidden" if faults.forced_status == 403 else "Unauthenticated")
    rule = faults.take(route)
    if rule is not None:
        retry = {"Retry-After": str(rule.retry_after)} if rule.retry_after is not None else {}
        raise AnnyError(rule.status, "Injected fault", f"next-N fault on {route}", headers=retry)
    if request.headers.get("Authorization") != f"Bearer {config.token}":
        raise AnnyError(
            401, "Unauthenticated", "missing or invalid bearer token", headers={"WWW-Authenticate": "Bearer"}
        )
    if "o" not in request.query:
        raise bad_parameter("o", "the organization query parameter `o` is required")
    if request.query["o"] != config.organization_id:
        raise AnnyError(403, "Forbidden", "the token has no access to this organization", parameter="o")
    if config.rate_limits:
        query = "&".join(sorted(f"{k}={v}" for k, v in request.query.items()))
        emu.rate_limiter.check(config.limits, request.method, request.path, query, await request.read())
    _check_media_types(request)


def _check_media_types(request: web.Request) -> None:
    accept = request.headers.get("Accept", "*/*")
    if not any(media in accept for media in READABLE):
        raise AnnyError(406, "Not Acceptable", f"cannot answer with {accept}; use {MEDIA_TYPE}")
    if request.method in ("POST", "PATCH") and request.can_read_body and request.content_type != MEDIA_TYPE:
        raise AnnyError(415, "Unsupported Media Type", f"writes must be sent as {MEDIA_TYPE}")


# ---- attribute parsing ------------------------------------------------------------------------


def _time_attribute(attributes: dict[str, Any], name: str, tz: str) -> datetime:
    value = attributes.get(name)
    try:
        return parse_instant(str(value), tz)
    except ValueError as error:
        raise invalid(f"{name} must be an ISO 8601 date-time", f"/data/attributes/{name}") from error


def _text_attributes(attributes: dict[str, Any], names: tuple[str, ...]) -> dict[str, str | None]:
    texts = {name: attributes[name] for name in names if name in attributes}
    for name, value in texts.items():
        if value is not None and not isinstance(value, str):
            raise invalid(f"{name} must be a string or null", f"/data/attributes/{name}")
    return texts


def _related_id(data: JsonObject, relationship: str) -> str:
    linkage = (data.get("relationships") or {}).get(relationship, {}).get("data")
    if not isinstance(linkage, dict) or "id" not in linkage:
        raise invalid(f"relationship {relationship} is required", f"/data/relationships/{relationship}")
    return str(linkage["id"])


class AnnyApi:
    """Request handlers; they read and change the emulator's state on the server loop."""

    def __init__(self, emu: ApiHost) -> None:
        self.emu = emu
        self.state = emu.state

    def _query(self, request: web.Request, includes: tuple[str, ...], sortable: dict[str, str]) -> Query:
        config = self.emu.config
        return parse_query(
            request.query,
            includes=includes,
            sortable=sortable,
            default_size=config.default_page_size,
            max_size=config.max_page_size,
        )

    def _page(
        self,
        request: web.Request,
        query: Query,
        items: list[T],
        render: Callable[[T], JsonObject],
        sortable: dict[str, str],
    ) -> web.Response:
        ordered = sort_items(items, query.sort, lambda item, field: getattr(item, sortable[field]))
        return respond(page_document(ordered, render, query, request.url, self.emu.render.lookup,
                                     self.emu.config.page_metadata))

    # ---- resources -------------------------------------------------------------------------

    async def list_resources(self, request: web.Request) -> web.Response:
        query = self._query(request, RESOURCE_INCLUDES, RESOURCE_SORT)
        with_children = not query.flag("exclude_child_resources", True)
        wanted = query.ids("ids")
        items = [
            r
            for r in self.state.resources.values()
            if (with_children or r.parent_id is None) and (wanted is None or r.id in wanted)
        ]
        return self._page(request, query, items, self.emu.render.resource, RESOURCE_SORT)

    async def get_resource(self, request: web.Request) -> web.Response:
        query = self._query(request, RESOURCE_INCLUDES, RESOURCE_SORT)
        resource = self.state.resource(request.match_info["id"])
        return respond(single_document(self.emu.render.resource(resource), query, self.emu.render.lookup))

    # ---- bookings --------------------------------------------------------------------------

    def _booking_filter(self, query: Query) -> Callable[[Booking], bool]:
        """filter[resources] (exactly those), filter[start_date]/[end_date] (overlap: the booking ends
        after start_date and starts before end_date), filter[hide_blocker], filter[status]."""
        resources, statuses = query.ids("resources"), query.ids("status")
        hide_blockers = query.flag("hide_blocker", False)
        tz = self.emu.config.default_timezone
        try:
            after = parse_bound(query.filters["start_date"], tz, end=False) if "start_date" in query.filters else None
            before = parse_bound(query.filters["end_date"], tz, end=True) if "end_date" in query.filters else None
        except ValueError as error:
            raise bad_parameter("filter[start_date]", f"dates must be ISO 8601: {error}") from error

        def keep(b: Booking) -> bool:
            return (
                (resources is None or b.resource_id in resources)
                and (statuses is None or b.status in statuses)
                and not (hide_blockers and b.is_blocker)
                and (after is None or b.end > after)
                and (before is None or b.start < before)
            )

        return keep

    async def list_bookings(self, request: web.Request) -> web.Response:
        query = self._query(request, BOOKING_INCLUDES, BOOKING_SORT)
        keep = self._booking_filter(query)
        items = sorted((b for b in self.state.bookings.values() if keep(b)), key=lambda b: b.start)
        return self._page(request, query, items, self.emu.render.booking, BOOKING_SORT)

    def _booking_response(self, request: web.Request, booking: Booking, status: int = 200) -> web.Response:
        query = self._query(request, BOOKING_INCLUDES, BOOKING_SORT)
        render = self.emu.render
        return respond(single_document(render.booking(booking), query, render.lookup), status)

    async def get_booking(self, request: web.Request) -> web.Response:
        return self._booking_response(request, self.state.booking(request.match_info["id"]))

    async def create_booking(self, request: web.Request) -> web.Response:
        """Only blockers are created through the API: is_blocker true, a resource, start < end."""
        data = write_data(await request.read(), "bookings")
        attributes = data.get("attributes", {})
        if attributes.get("is_blocker") is not True:
            raise invalid("only blockers (is_blocker: true) can be created here", "/data/attributes/is_blocker")
        resource_id = _related_id(data, "resource")
        if resource_id not in self.state.resources:
            raise invalid(f"resource {resource_id!r} does not exist", "/data/relationships/resource")
        tz = self.state.resources[resource_id].timezone
        draft = BookingDraft(
            resource_id=resource_id,
            start=_time_attribute(attributes, "start_date", tz),
            end=_time_attribute(attributes, "end_date", tz),
            is_blocker=True,
            **_text_attributes(attributes, BLOCKER_TEXT),
        )
        changes = self.state.create_booking(draft)
        await self.emu.announce(changes)
        return self._booking_response(request, self.state.booking(changes[0].booking.id), 201)

    async def update_booking(self, request: web.Request) -> web.Response:
        booking = self.state.booking(request.match_info["id"])
        attributes = write_data(await request.read(), "bookings", booking.id).get("attributes", {})
        tz = self.state.timezone_of(booking)
        edits: dict[str, Any] = _text_attributes(attributes, PATCHABLE_TEXT)
        for name, field in TIME_ATTRIBUTES.items():
            if name in attributes:
                edits[field] = _time_attribute(attributes, name, tz)
        await self.emu.announce(self.state.update_booking(booking.id, edits))
        return self._booking_response(request, booking)

    async def cancel_booking(self, request: web.Request) -> web.Response:
        booking = self.state.booking(request.match_info["id"])
        await self.emu.announce(self.state.cancel_booking(booking.id))
        return self._booking_response(request, booking)

    async def delete_booking(self, request: web.Request) -> web.Response:
        await self.emu.announce(self.state.delete_booking(request.match_info["id"]))
        return respond(None, 204)

    # ---- webhook subscriptions -------------------------------------------------------------

    async def create_subscription(self, request: web.Request) -> web.Response:
        data = write_data(await request.read(), "webhook-subscriptions")
        subscription = self.emu.hub.subscribe(data.get("attributes", {}))
        return respond(document(subscription.jsonapi()), 201)

    async def list_subscriptions(self, request: web.Request) -> web.Response:
        data = [s.jsonapi() for s in self.emu.hub.subscriptions.values()]
        return respond(document(data, meta={"total": len(data)}))

    async def get_subscription(self, request: web.Request) -> web.Response:
        subscription = self.emu.hub.subscription(request.match_info["id"])
        return respond(document(subscription.jsonapi()))

    async def update_subscription(self, request: web.Request) -> web.Response:
        ident = request.match_info["id"]
        self.emu.hub.subscription(ident)
        attributes = write_data(await request.read(), "webhook-subscriptions", ident).get("attributes", {})
        subscription = self.emu.hub.update_subscription(ident, attributes)
        return respond(document(subscription.jsonapi()))

    async def delete_subscription(self, request: web.Request) -> web.Response:
        self.emu.hub.unsubscribe(request.match_info["id"])
        return respond(None, 204)


def api_routes(emu: ApiHost) -> list[web.RouteDef]:
    api = AnnyApi(emu)
    table: dict[str, dict[str, Handler]] = {
        "/resources": {"GET": api.list_resources},
        "/resources/{id}": {"GET": api.get_resource},
        "/bookings": {"GET": api.list_bookings, "POST": api.create_booking},
        "/bookings/{id}": {"GET": api.get_booking, "PATCH": api.update_booking, "DELETE": api.delete_booking},
        "/bookings/{id}/cancel": {"POST": api.cancel_booking},
        "/webhook-subscriptions": {"GET": api.list_subscriptions, "POST": api.create_subscription},
        "/webhook-subscriptions/{id}": {
            "GET": api.get_subscription,
            "PATCH": api.update_subscription,
            "DELETE": api.delete_subscription,
        },
    }
    return [
        web.route(method, f"/api/v1{path}", handler)
        for path, methods in table.items()
        for method, handler in methods.items()
    ]
