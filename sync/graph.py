"""The Graph gateway: every Microsoft Graph call the app makes, through msgraph-sdk's request adapter (async).

Credentials come from azure-identity (managed identity by default, client secret or
certificate when configured; a static token for localhost emulators). The SDK's retry
handler honours 429/503/504 `Retry-After` on every method, POST included; on top, at most 4
requests per mailbox run at once (Graph's per-mailbox concurrency limit,
https://learn.microsoft.com/graph/throttling-limits#outlook-service-limits). Requests are built
here and answers read as JSON (shapes in `sync.graph_wire`) into the app's own objects; Graph's
error bodies (https://learn.microsoft.com/graph/errors) become the app's typed errors.

Each method's docstring names the documented endpoint it calls and the quirks it works around.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar, cast
from urllib.parse import quote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx
from kiota_abstractions.authentication import (
    AccessTokenProvider,
    AllowedHostsValidator,
    AuthenticationProvider,
    BaseBearerTokenAuthenticationProvider,
)
from kiota_abstractions.method import Method
from kiota_abstractions.native_response_handler import NativeResponseHandler
from kiota_abstractions.request_information import RequestInformation
from kiota_http.middleware import BaseMiddleware, RedirectHandler, RetryHandler, UserAgentHandler
from kiota_http.middleware.options import ResponseHandlerOption, RetryHandlerOption
from msgraph_core import BaseGraphRequestAdapter, GraphClientFactory
from msgraph_core.middleware import GraphTelemetryHandler

from sync import graph_wire as wire
from sync.budget import PriorityLimit
from sync.errors import (
    RemoteBadRequest,
    RemoteConflict,
    RemoteError,
    RemoteGone,
    RemoteThrottled,
    RemoteUnavailable,
    SyncStateExpired,
    error_for_status,
)
from sync.graph_transport import MailboxTransports
from sync.model import ANNY_CATEGORY, ANNY_CATEGORY_COLOR, DesiredEvent, OutlookEvent, SyncWindow
from sync.settings import Settings, environment_proxy
from sync.state import BudgetTable
from sync.throttling import retry_after_s
from sync.validation import path_segment

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential

log = logging.getLogger(__name__)
T = TypeVar("T")
ItemT = TypeVar("ItemT")

# Our single-value extended property: the anny booking id on every mirror event. Id format
# "String {GUID} Name …": https://learn.microsoft.com/graph/api/resources/extended-properties-overview
ANNY_PROPERTY_ID = "String {8e1d1c7a-3b9f-4a52-9d6e-5a1f2b7c4e90} Name AnnyBookingId"
GRAPH_SCOPE = "https://graph.microsoft.com/.default"  # app-only: the permissions granted to the app
MAILBOX_CONCURRENCY = 4  # Outlook's limit per app and mailbox; a 5th concurrent request answers 429
TENANT_SLOTS = ""  # the slots of calls on a tenant-wide resource (the places list)
GRAPH_DEFAULT_RETRY_AFTER_S = 10.0
GRAPH_MAX_RETRY_AFTER_S = 300.0
UTC_TIMES = 'outlook.timezone="UTC"'  # Prefer header: every time we read is in UTC
WINDOWS_ZONES = {"UTC": "UTC", "W. Europe Standard Time": "Europe/Berlin", "GMT Standard Time": "Europe/London",
                 "Romance Standard Time": "Europe/Paris", "Central Europe Standard Time": "Europe/Budapest",
                 "Eastern Standard Time": "America/New_York", "Pacific Standard Time": "America/Los_Angeles"}


@dataclass(frozen=True)
class WrittenEvent:
    event_id: str
    change_key: str


@dataclass(frozen=True)
class Room:
    email: str
    name: str


@dataclass
class DeltaPage:
    events: list[OutlookEvent]
    next_link: str = ""
    delta_link: str = ""


@dataclass(frozen=True)
class CreatedSubscription:
    subscription_id: str
    expires_at: datetime


class _StaticToken(AccessTokenProvider):
    """A fixed bearer token, for localhost emulators only (settings enforce that)."""

    def __init__(self, token: str) -> None:
        self._token = token

    async def get_authorization_token(self, uri: str, additional_authentication_context: Any = None) -> str:
        return self._token

    def get_allowed_hosts_validator(self) -> AllowedHostsValidator:
        return AllowedHostsValidator([])


def _middleware(max_retries: int) -> list[BaseMiddleware]:
    """The SDK's default chain (https://learn.microsoft.com/graph/sdks/customize-client) less the
    handlers that never act on the app's requests, each of which costs a span and a hop per request:
    ParametersNameDecodingHandler (`GraphGateway.url` writes `$select` unescaped already),
    UrlReplaceHandler (no `/users/TokenToReplace` URLs) and the headers and body inspection
    handlers (they act only when a request carries their inspection option). Redirects, the retry
    handler (`max_retries`, Retry-After honoured) and the SDK's user agent and telemetry headers
    stay, in the SDK's order."""
    return [RedirectHandler(), RetryHandler(RetryHandlerOption(delay=1, max_retries=max_retries)),
            UserAgentHandler(), GraphTelemetryHandler()]


def _auth_provider(settings: Settings) -> AuthenticationProvider:
    mode = settings.graph_auth_mode
    if mode == "static_token":
        return BaseBearerTokenAuthenticationProvider(_StaticToken(settings.graph_static_token))
    from azure.identity.aio import CertificateCredential, ClientSecretCredential, ManagedIdentityCredential
    from kiota_authentication_azure.azure_identity_authentication_provider import (
        AzureIdentityAuthenticationProvider,
    )

    if mode == "client_secret":
        credential: AsyncTokenCredential = ClientSecretCredential(
            settings.graph_tenant_id, settings.graph_client_id, settings.graph_client_secret)
    elif mode == "certificate":
        credential = CertificateCredential(settings.graph_tenant_id, settings.graph_client_id,
                                           certificate_path=settings.graph_certificate_path)
    else:
        credential = ManagedIdentityCredential(client_id=settings.graph_client_id or None)
    return AzureIdentityAuthenticationProvider(credential, scopes=[GRAPH_SCOPE])


class GraphFailure(Exception):
    """Graph answered with an error status; `code` and `message` come from its OData error body."""

    def __init__(self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(f"Graph answered {status} {code}: {message}"[:400])
        self.status, self.code, self.headers = status, code, headers or {}


@dataclass
class GraphGateway:
    """Owns the Graph request adapter; one per event loop.

    Every call goes through msgraph-sdk's request adapter (auth provider, redirect, retry and
    telemetry middleware) with a native response handler: the raw response is read with
    `json.loads` into the app's own small shapes, so the SDK's generated request builders and
    models — thousands of modules and ~10 ms of CPU per event — are neither imported nor run.
    """

    adapter: BaseGraphRequestAdapter
    http: httpx.AsyncClient
    base_url: str
    budget_log: BudgetTable | None = None  # where 429s that outlast the SDK's retries are counted
    _limits: dict[str, PriorityLimit] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings, max_retries: int = 3, budget_log: BudgetTable | None = None
                      ) -> GraphGateway:
        """The SDK's middleware that acts on the app's requests (`_middleware`) around an httpx
        client with a small connection pool per mailbox (`sync.graph_transport`), or the
        environment's proxy; auth from the settings."""
        base = settings.graph_base_url.rstrip("/")
        # httpx applies the environment's proxy only to its own transport: behind one, every request
        # goes through the proxy's pool anyway, so the per-mailbox pools are for direct connections.
        proxied = environment_proxy()
        client = httpx.AsyncClient(timeout=httpx.Timeout(30, connect=10), trust_env=proxied,
                                   transport=None if proxied else MailboxTransports(2 * MAILBOX_CONCURRENCY))
        http = GraphClientFactory.create_with_custom_middleware(_middleware(max_retries), client=client)
        adapter = BaseGraphRequestAdapter(_auth_provider(settings), http_client=http)
        adapter.base_url = base
        return cls(adapter, http, base, budget_log)

    async def close(self) -> None:
        """Close the HTTP client (no Graph call)."""
        await self.http.aclose()

    def url(self, *segments: str, query: dict[str, str] | None = None) -> str:
        """The one place Graph URLs are built: each segment percent-escaped on its own, and
        '', '.' and '..' refused (no escaping makes those safe); query values escaped as %20."""
        path = "".join("/" + quote(path_segment(segment), safe="") for segment in segments)
        if not query:
            return self.base_url + path
        # OData's `$` stays as it is in names: the SDK's decoding handler, which would undo `%24`, is not in the chain.
        return self.base_url + path + "?" + "&".join(
            f"{quote(name, safe='$')}={quote(value, safe='')}" for name, value in query.items())

    async def _send(self, method: Method, url: str, body: dict[str, Any] | None = None,
                    prefer: tuple[str, ...] = ()) -> Any:
        """One request through the SDK's adapter and middleware; the parsed JSON body (None if empty),
        in the shape the caller names (`sync.graph_wire`). `Prefer` may be sent several times
        (https://learn.microsoft.com/graph/api/user-list-calendarview#request-headers)."""
        info = RequestInformation(method)
        info.url = url
        info.headers.try_add("Accept", "application/json")
        for preference in prefer:
            info.headers.add("Prefer", preference)
        if body is not None:
            info.set_stream_content(json.dumps(body).encode(), "application/json")
        info.add_request_options([ResponseHandlerOption(NativeResponseHandler())])
        # kiota types the result as Optional[ResponseType], a TypeVar bound by no argument (read
        # as None); the native response handler hands back the raw httpx.Response.
        response: object = await self.adapter.send_primitive_async(info, "bytes", None)
        if not isinstance(response, httpx.Response):
            raise TypeError(f"expected the raw httpx.Response, got {type(response).__name__}")
        if response.status_code >= 400:
            raise _failure(response)
        return json.loads(response.content) if response.content else None

    async def _call(self, room: str | None, call: Callable[[], Awaitable[T]], **context: Any) -> T:
        """A call within the mailbox's concurrency slots (`room`; None: a tenant-wide resource, whose
        calls share slots of their own); Graph's failures become typed errors with the room and
        `context`, and a 429 that outlasted the SDK's retries is counted."""
        limit = self._limits.setdefault(room or TENANT_SLOTS, PriorityLimit(MAILBOX_CONCURRENCY))  # live calls go first
        async with limit:
            try:
                return await call()
            except GraphFailure as exc:
                error = _mapped(exc, room=room, **context)
                if isinstance(error, RemoteThrottled):
                    await self._count_throttled()
                raise error from exc
            except httpx.HTTPError as exc:
                raise RemoteUnavailable(f"Graph request failed: {type(exc).__name__}", room=room,
                                        **context) from exc

    async def _count_throttled(self) -> None:
        """Count a Graph 429 in the app's state (for `status`); no Graph call."""
        if self.budget_log is None:
            return
        try:
            await self.budget_log.count_throttled("graph")
        except Exception as exc:  # counting must never hide the 429 itself
            log.warning("could not count a Graph 429", extra={"error": str(exc)[:200]})

    # -- mirror events ------------------------------------------------------------------------------

    async def create_event(self, room: str, desired: DesiredEvent, transaction_id: str) -> WrittenEvent:
        """POST /users/{room}/events — https://learn.microsoft.com/graph/api/user-post-events

        Quirk: the SDK's retry handler retries 429/503/504 on POST too, so a retried create could
        make a second event; `transactionId` (https://learn.microsoft.com/graph/api/resources/event)
        makes Graph return the first one instead. How long Graph remembers it is not documented,
        so the link table stays the first defence. Exchange does not conflict-check this write
        (the room's booking assistant is bypassed). The booking id rides in our single-value
        extended property (https://learn.microsoft.com/graph/api/singlevaluelegacyextendedproperty-post-singlevalueextendedproperties).
        """
        body = event_body(desired) | {
            "transactionId": transaction_id,
            "singleValueExtendedProperties": [{"id": ANNY_PROPERTY_ID, "value": desired.anny_id}]}
        created: wire.Event | None = await self._call(
            room, lambda: self._send(Method.POST, self.url("users", room, "events"), body), booking_id=desired.anny_id)
        return _written(created, "")

    async def update_event(self, room: str, event_id: str, desired: DesiredEvent) -> WrittenEvent:
        """PATCH /users/{room}/events/{id} — https://learn.microsoft.com/graph/api/event-update

        Answers 200 with the whole event, so its new `changeKey` (our echo fingerprint) comes
        without a second read."""
        updated: wire.Event | None = await self._call(
            room, lambda: self._send(Method.PATCH, self.url("users", room, "events", event_id), event_body(desired)),
            booking_id=desired.anny_id, event_id=event_id)
        return _written(updated, event_id)

    async def delete_event(self, room: str, event_id: str) -> None:
        """DELETE /users/{room}/events/{id} — https://learn.microsoft.com/graph/api/event-delete

        An event that is gone already (404) counts as deleted: deletes are retried and raced."""
        try:
            await self._call(room, lambda: self._send(Method.DELETE, self.url("users", room, "events", event_id)),
                             event_id=event_id)
        except RemoteGone:
            log.info("event already gone", extra={"room": room, "event_id": event_id})

    async def anny_id_of_event(self, room: str, event_id: str) -> tuple[OutlookEvent, str] | None:
        """GET /users/{room}/events/{id}?$expand=singleValueExtendedProperties($filter=id eq '…') —
        https://learn.microsoft.com/graph/api/singlevaluelegacyextendedproperty-get

        The event with our extended property's value ("" when it has none); None when gone.
        Quirk: delta does not support `$expand` (it answers 500, microsoft-graph-docs issue
        #2270), so a linked event's booking id is read with this single GET. `Prefer:
        outlook.timezone="UTC"` (https://learn.microsoft.com/graph/api/event-get#request-headers)
        makes its times UTC."""
        url = self.url("users", room, "events", event_id,
                       query={"$expand": f"singleValueExtendedProperties($filter=id eq '{ANNY_PROPERTY_ID}')"})
        try:
            event: wire.Event | None = await self._call(
                room, lambda: self._send(Method.GET, url, prefer=(UTC_TIMES,)), event_id=event_id)
        except RemoteGone:
            return None
        event = event if isinstance(event, dict) else {}
        return parse_event(event), _property_value(event)

    async def find_mirror_event(self, room: str, anny_id: str) -> WrittenEvent | None:
        """GET /users/{room}/events?$filter=singleValueExtendedProperties/Any(ep: ep/id eq '…' and
        ep/value eq '…') — https://learn.microsoft.com/graph/api/singlevaluelegacyextendedproperty-get

        The mirror event of a booking, found by our extended property (recovery path only: after
        a create whose answer was lost). Quotes in the value are doubled, as OData wants."""
        escaped = anny_id.replace("'", "''")
        match = f"ep/id eq '{ANNY_PROPERTY_ID}' and ep/value eq '{escaped}'"
        url = self.url("users", room, "events",
                       query={"$filter": f"singleValueExtendedProperties/Any(ep: {match})", "$top": "2"})
        found: wire.EventPage | None = await self._call(room, lambda: self._send(Method.GET, url),
                                                         booking_id=anny_id)
        for event in wire.items_of(found, wire.Event):
            return _written(event, "")
        return None

    async def ensure_category(self, room: str) -> None:
        """GET then POST /users/{room}/outlook/masterCategories —
        https://learn.microsoft.com/graph/api/outlookuser-list-mastercategories and
        https://learn.microsoft.com/graph/api/outlookuser-post-mastercategories

        Creates the dark-blue (`preset22`) "anny" category unless the room has it. `displayName`
        is unique per mailbox, so a racing create answers 409, which counts as done. Needs
        MailboxSettings.ReadWrite."""
        url = self.url("users", room, "outlook", "masterCategories")
        existing: wire.CategoryPage | None = await self._call(room, lambda: self._send(Method.GET, url))
        names = {wire.text(category.get("displayName")).lower()
                 for category in wire.items_of(existing, wire.OutlookCategory)}
        if ANNY_CATEGORY in names:
            return
        try:
            await self._call(room, lambda: self._send(
                Method.POST, url, {"displayName": ANNY_CATEGORY, "color": ANNY_CATEGORY_COLOR}))
        except RemoteConflict:
            pass

    # -- reading the room -----------------------------------------------------------------------------

    async def delta_pages(self, room: str, window: SyncWindow, link: str, page_size: int
                          ) -> AsyncIterator[DeltaPage]:
        """GET /users/{room}/calendarView/delta — https://learn.microsoft.com/graph/api/event-delta
        (and https://learn.microsoft.com/graph/delta-query-events)

        The room's changes since `link` (or a new baseline for `window` when empty). The window is
        fixed in the token, so next/delta links are called as given; `Prefer: odata.maxpagesize`
        sizes pages and `outlook.timezone` makes times UTC. Quirks: an expired token answers
        410 Gone or a sync-state error code (`syncStateNotFound`, also after a server-side
        restart, microsoft-graph-docs issue #2350): SyncStateExpired, and the caller re-baselines;
        deleted events, and events that only left the window, come as `{"id", "@removed"}`
        entries; the same event may come twice in one round; `$select`/`$expand` are not supported."""
        url = link or self.url("users", room, "calendarView", "delta", query={
            "startDateTime": _graph_time(window.start), "endDateTime": _graph_time(window.end)})
        prefer = (f"odata.maxpagesize={page_size}", UTC_TIMES)
        while True:
            try:
                answer = await self._call(room, partial(self._send, Method.GET, url, prefer=prefer))
            except (RemoteGone, RemoteBadRequest) as exc:
                if not sync_state_lost(exc):
                    raise
                raise SyncStateExpired("delta token expired", room=room) from exc
            page = _page(answer)
            result = DeltaPage([parse_event(e) for e in wire.items_of(page, wire.Event)],
                               wire.text(page.get("@odata.nextLink")), wire.text(page.get("@odata.deltaLink")))
            yield result
            if not result.next_link:
                return
            url = result.next_link

    async def calendar_view(self, room: str, window: SyncWindow, page_size: int) -> list[OutlookEvent]:
        """GET /users/{room}/calendarView?startDateTime&endDateTime —
        https://learn.microsoft.com/graph/api/user-list-calendarview

        The events in a time range: single instances, occurrences and exceptions, never series
        masters (a series is compared occurrence by occurrence). Pages are followed by
        `@odata.nextLink` (https://learn.microsoft.com/graph/paging); `Prefer: outlook.timezone`
        makes times UTC, as Windows zone names would otherwise need mapping."""
        url = self.url("users", room, "calendarView", query={
            "startDateTime": _graph_time(window.start), "endDateTime": _graph_time(window.end)})
        prefer = (f"odata.maxpagesize={page_size}", UTC_TIMES)
        return [parse_event(e) async for e in self._pages(room, url, wire.Event, prefer)]

    async def _pages(self, room: str | None, url: str, shape: type[ItemT], prefer: tuple[str, ...] = ()
                     ) -> AsyncIterator[ItemT]:
        """The items of a paged collection, following `@odata.nextLink` (https://learn.microsoft.com/graph/paging)."""
        while url:
            page = _page(await self._call(room, partial(self._send, Method.GET, url, prefer=prefer)))
            for item in wire.items_of(page, shape):
                yield item
            url = wire.text(page.get("@odata.nextLink"))

    async def list_rooms(self) -> list[Room]:
        """GET /places/microsoft.graph.room — https://learn.microsoft.com/graph/api/place-list

        Room mailboxes only (not room lists), 100 a page; needs Place.Read.All. Addresses are
        lower-cased: they key the app's state."""
        return [Room(wire.text(r.get("emailAddress")).lower(), wire.text(r.get("displayName")))
                async for r in self._pages(None, self.url("places", "microsoft.graph.room"), wire.Room)]

    # -- subscriptions ----------------------------------------------------------------------------------

    async def create_subscription(self, room: str, notification_url: str, lifecycle_url: str,
                                  client_state: str, expires_at: datetime) -> CreatedSubscription:
        """POST /subscriptions on users/{room}/events —
        https://learn.microsoft.com/graph/api/subscription-post-subscriptions

        Quirks: `lifecycleNotificationUrl` can only be set here, never by a later PATCH
        (https://learn.microsoft.com/graph/change-notifications-lifecycle-events); a duplicate
        (same resource and changeType from this app) answers 409, and the caller finds the
        existing one. Graph validates `notificationUrl` before answering (the ingress echoes the
        token). Graph may shorten the expiry: the one it answers is kept."""
        body = {"changeType": "created,updated,deleted", "notificationUrl": notification_url,
                "lifecycleNotificationUrl": lifecycle_url, "resource": f"users/{room}/events",
                "expirationDateTime": _instant(expires_at), "clientState": client_state}
        created: wire.Subscription = await self._call(
            room, lambda: self._send(Method.POST, self.url("subscriptions"), body))
        return CreatedSubscription(str(created["id"]),
                                   _parse_instant(created.get("expirationDateTime")) or expires_at)

    async def find_subscription(self, room: str) -> str | None:
        """GET /subscriptions — https://learn.microsoft.com/graph/api/subscription-list

        The id of this app's subscription on the room's events, after a create answered 409.
        An app-only token lists the app's own subscriptions; pages are followed. Resources are
        compared case-insensitively (Graph answers `Users/…/Events` in notifications)."""
        wanted = f"users/{room}/events".lower()
        async for sub in self._pages(room, self.url("subscriptions"), wire.Subscription):
            if wire.text(sub.get("resource")).lower().lstrip("/") == wanted:
                return str(sub["id"])
        return None

    async def renew_subscription(self, room: str, subscription_id: str, expires_at: datetime) -> datetime:
        """PATCH /subscriptions/{id} {expirationDateTime} — https://learn.microsoft.com/graph/api/subscription-update

        Outlook event subscriptions without resource data live at most 10,080 minutes (older
        pages say 4,230; https://learn.microsoft.com/graph/api/resources/subscription#subscription-lifetime):
        the caller asks for less. The expiry Graph answers is kept. `room`: whose subscription it is
        (its calls take the room's slots, and its errors name the room)."""
        renewed: wire.Subscription | None = await self._call(
            room, lambda: self._send(Method.PATCH, self.url("subscriptions", subscription_id),
                                     {"expirationDateTime": _instant(expires_at)}),
            subscription_id=subscription_id)
        return _parse_instant(_object(renewed).get("expirationDateTime")) or expires_at

    async def reauthorize_subscription(self, room: str, subscription_id: str) -> None:
        """POST /subscriptions/{id}/reauthorize — https://learn.microsoft.com/graph/api/subscription-reauthorize

        The answer to a `reauthorizationRequired` lifecycle event
        (https://learn.microsoft.com/graph/change-notifications-lifecycle-events)."""
        await self._call(room, lambda: self._send(
            Method.POST, self.url("subscriptions", subscription_id, "reauthorize")), subscription_id=subscription_id)

    async def delete_subscription(self, room: str, subscription_id: str) -> None:
        """DELETE /subscriptions/{id} — https://learn.microsoft.com/graph/api/subscription-delete

        One that is gone already (expired or removed by Graph) counts as deleted."""
        try:
            await self._call(room, lambda: self._send(
                Method.DELETE, self.url("subscriptions", subscription_id)), subscription_id=subscription_id)
        except RemoteGone:
            pass


# --- wire formats --------------------------------------------------------------------------------------


def sync_state_lost(error: RemoteError) -> bool:
    """Graph answers an expired delta token with 410 Gone, or with a sync-state error code
    (https://learn.microsoft.com/graph/delta-query-overview#synchronization-reset)."""
    code = str(error.context.get("code") or "").lower()
    return error.context.get("status") == 410 or "syncstate" in code or "resyncrequired" in code


def _graph_time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _instant(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_instant(value: Any) -> datetime | None:
    """An ISO 8601 instant as Graph writes it (up to 7 fraction digits, `Z` or an offset)."""
    if not isinstance(value, str) or not value:
        return None
    text = value.replace("Z", "+00:00")
    main, _, rest = text.partition(".")
    if rest:
        digits = rest[:len(rest) - len(rest.lstrip("0123456789"))]
        text = f"{main}.{digits[:6].ljust(6, '0')}{rest[len(digits):]}"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)


def event_body(desired: DesiredEvent) -> dict[str, Any]:
    return {
        "subject": desired.subject,
        "start": {"dateTime": _graph_time(desired.start), "timeZone": "UTC"},
        "end": {"dateTime": _graph_time(desired.end), "timeZone": "UTC"},
        "showAs": "busy",
        "isReminderOn": False,
        "attendees": [],
        "categories": [ANNY_CATEGORY],
        "body": {"contentType": "text", "content": "Booked in anny. Changes here are overwritten by anny."},
    }


def _object(answer: object) -> dict[str, Any]:
    """A JSON answer that should be an object; {} when it is empty or something else."""
    return answer if isinstance(answer, dict) else {}


def _page(answer: object) -> wire.Page:
    """A collection page's links and `value` (`wire.items_of` reads the items in their shape)."""
    return cast(wire.Page, _object(answer))


def _written(event: wire.Event | None, fallback_id: str) -> WrittenEvent:
    """The id and changeKey of an event Graph answered a write with (a 204 leaves the id we had)."""
    event = event if isinstance(event, dict) else {}
    return WrittenEvent(wire.text(event.get("id")) or fallback_id, wire.text(event.get("changeKey")))


def _property_value(event: wire.Event) -> str:
    for prop in event.get("singleValueExtendedProperties") or []:
        if isinstance(prop, dict) and wire.text(prop.get("id")).lower() == ANNY_PROPERTY_ID.lower():
            return wire.text(prop.get("value"))
    return ""


def parse_graph_time(value: wire.DateTimeTimeZone | None) -> datetime | None:
    """`{dateTime, timeZone}` in UTC (or a Windows/IANA zone when the Prefer header was ignored)."""
    if not isinstance(value, dict) or not value.get("dateTime"):
        return None
    naive = datetime.fromisoformat(str(value["dateTime"])[:26].rstrip("Z"))
    zone_name = wire.text(value.get("timeZone")) or "UTC"
    try:
        zone = ZoneInfo(WINDOWS_ZONES.get(zone_name, zone_name))
    except (ZoneInfoNotFoundError, ValueError):
        log.warning("unknown time zone from Graph, reading as UTC", extra={"time_zone": zone_name})
        zone = ZoneInfo("UTC")
    return naive.replace(tzinfo=zone).astimezone(UTC)


def parse_event(event: wire.Event) -> OutlookEvent:
    """An event (or an `@removed` entry) of a Graph JSON answer."""
    if "@removed" in event:
        return OutlookEvent(id=wire.text(event.get("id")), removed=True)
    return OutlookEvent(
        id=wire.text(event.get("id")),
        change_key=wire.text(event.get("changeKey")),
        subject=wire.text(event.get("subject")),
        start=parse_graph_time(event.get("start")),
        end=parse_graph_time(event.get("end")),
        is_all_day=bool(event.get("isAllDay")),
        show_as=wire.text(event.get("showAs")) or "busy",
        sensitivity=wire.text(event.get("sensitivity")) or "normal",
        is_cancelled=bool(event.get("isCancelled")),
        categories=tuple(str(c) for c in event.get("categories") or ()),
        type=wire.text(event.get("type")) or "singleInstance",
        has_attendees=bool(event.get("attendees")),
        is_reminder_on=bool(event.get("isReminderOn")),
        created=_parse_instant(event.get("createdDateTime")),
    )


def _failure(response: httpx.Response) -> GraphFailure:
    """A Graph error answer (https://learn.microsoft.com/graph/errors): `{"error": {"code",
    "message"}}`, or whatever a gateway in front of Graph sent instead."""
    try:
        body: wire.ErrorBody = json.loads(response.content)
        error = body.get("error") or {}
    except (ValueError, AttributeError):
        error = {}
    error = error if isinstance(error, dict) else {}
    return GraphFailure(response.status_code, wire.text(error.get("code")), wire.text(error.get("message")),
                        response.headers)


def _mapped(exc: GraphFailure, **context: Any) -> RemoteError:
    # the SDK's retries are used up; the worker puts the work item back after what Graph asked
    asked = exc.status >= 500 and any(name.lower() == "retry-after" for name in exc.headers or {})
    if exc.status == 429 or asked:
        context["retry_after_s"] = retry_after_s(exc.headers, source="Graph",
                                                 default_s=GRAPH_DEFAULT_RETRY_AFTER_S, max_s=GRAPH_MAX_RETRY_AFTER_S)
    return error_for_status(exc.status)(str(exc), status=exc.status, code=exc.code, **context)
