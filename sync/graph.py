"""The Graph gateway: every Microsoft Graph call the app makes, through msgraph-sdk's request adapter (async).

Credentials come from azure-identity (managed identity by default, client secret or
certificate when configured; a static token for localhost emulators). The SDK's retry
handler honours 429/503/504 `Retry-After`; on top, at most 4 requests per mailbox run at
once (Graph's per-mailbox concurrency limit). Requests are built here and answers read as
JSON into the app's own shapes; Graph's error bodies become the app's typed errors.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar
from urllib.parse import quote, urlencode
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx
from kiota_abstractions.authentication import (
    AccessTokenProvider,
    AllowedHostsValidator,
    BaseBearerTokenAuthenticationProvider,
)
from kiota_abstractions.method import Method
from kiota_abstractions.native_response_handler import NativeResponseHandler
from kiota_abstractions.request_information import RequestInformation
from kiota_abstractions.request_option import RequestOption
from kiota_http.middleware.options import ResponseHandlerOption, RetryHandlerOption
from msgraph_core import BaseGraphRequestAdapter, GraphClientFactory

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
from sync.model import ANNY_CATEGORY, ANNY_CATEGORY_COLOR, DesiredEvent, OutlookEvent, SyncWindow
from sync.settings import Settings, environment_proxy
from sync.state import StateStore
from sync.throttling import retry_after_s
from sync.validation import path_segment

log = logging.getLogger(__name__)
T = TypeVar("T")

# Our single-value extended property: the anny booking id on every mirror event.
ANNY_PROPERTY_ID = "String {8e1d1c7a-3b9f-4a52-9d6e-5a1f2b7c4e90} Name AnnyBookingId"
GRAPH_SCOPE = "https://graph.microsoft.com/.default"
MAILBOX_CONCURRENCY = 4
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


def _auth_provider(settings: Settings) -> Any:
    mode = settings.graph_auth_mode
    if mode == "static_token":
        return BaseBearerTokenAuthenticationProvider(_StaticToken(settings.graph_static_token))
    from azure.identity.aio import CertificateCredential, ClientSecretCredential, ManagedIdentityCredential
    from kiota_authentication_azure.azure_identity_authentication_provider import (
        AzureIdentityAuthenticationProvider,
    )

    if mode == "client_secret":
        credential: Any = ClientSecretCredential(settings.graph_tenant_id, settings.graph_client_id,
                                                 settings.graph_client_secret)
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
    store: StateStore | None = None  # where 429s that outlast the SDK's retries are counted
    _limits: dict[str, PriorityLimit] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings, max_retries: int = 3, store: StateStore | None = None
                      ) -> GraphGateway:
        base = settings.graph_base_url.rstrip("/")
        options: dict[str, RequestOption] = {
            RetryHandlerOption.get_key(): RetryHandlerOption(delay=1, max_retries=max_retries)}
        http = GraphClientFactory.create_with_default_middleware(
            client=httpx.AsyncClient(timeout=httpx.Timeout(30, connect=10), trust_env=environment_proxy()),
            options=options)
        adapter = BaseGraphRequestAdapter(_auth_provider(settings), http_client=http)
        adapter.base_url = base
        return cls(adapter, http, base, store)

    async def close(self) -> None:
        await self.http.aclose()

    def url(self, *segments: str, query: dict[str, str] | None = None) -> str:
        """The one place Graph URLs are built: each segment percent-escaped on its own, and
        '', '.' and '..' refused (no escaping makes those safe); query values escaped as %20."""
        path = "".join("/" + quote(path_segment(segment), safe="") for segment in segments)
        return self.base_url + path + ("?" + urlencode(query, quote_via=quote) if query else "")

    async def _send(self, method: Method, url: str, body: dict[str, Any] | None = None,
                    prefer: tuple[str, ...] = ()) -> Any:
        """One request through the SDK's adapter and middleware; the parsed JSON body (None if empty)."""
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

    async def _call(self, room: str, call: Callable[[], Awaitable[T]], **context: Any) -> T:
        limit = self._limits.setdefault(room, PriorityLimit(MAILBOX_CONCURRENCY))  # live calls go first
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
        if self.store is None:
            return
        try:
            await self.store.count_throttled("graph")
        except Exception as exc:  # counting must never hide the 429 itself
            log.warning("could not count a Graph 429", extra={"error": str(exc)[:200]})

    # -- mirror events ------------------------------------------------------------------------------

    async def create_event(self, room: str, desired: DesiredEvent, transaction_id: str) -> WrittenEvent:
        """POST /users/{room}/events. `transactionId` makes a retried POST (the retry handler
        retries 429/503/504 on POST too) return the first event instead of a second one."""
        body = _event_body(desired) | {
            "transactionId": transaction_id,
            "singleValueExtendedProperties": [{"id": ANNY_PROPERTY_ID, "value": desired.anny_id}]}
        created = await self._call(room, lambda: self._send(Method.POST, self.url("users", room, "events"), body),
                                   booking_id=desired.anny_id)
        return _written(created, "")

    async def update_event(self, room: str, event_id: str, desired: DesiredEvent) -> WrittenEvent:
        """PATCH /users/{room}/events/{id}: answers 200 with the event (its new changeKey)."""
        updated = await self._call(
            room, lambda: self._send(Method.PATCH, self.url("users", room, "events", event_id), _event_body(desired)),
            booking_id=desired.anny_id, event_id=event_id)
        return _written(updated, event_id)

    async def delete_event(self, room: str, event_id: str) -> None:
        """DELETE /users/{room}/events/{id}; an event that is gone already (404) counts as deleted."""
        try:
            await self._call(room, lambda: self._send(Method.DELETE, self.url("users", room, "events", event_id)),
                             event_id=event_id)
        except RemoteGone:
            log.info("event already gone", extra={"room": room, "event_id": event_id})

    async def anny_id_of_event(self, room: str, event_id: str) -> tuple[OutlookEvent, str] | None:
        """GET /users/{room}/events/{id}?$expand=singleValueExtendedProperties($filter=id eq '…'):
        the event with our extended property's value ("" when it has none); None when gone.
        Delta cannot return extended properties ($expand there answers 500), hence this single GET."""
        url = self.url("users", room, "events", event_id,
                       query={"$expand": f"singleValueExtendedProperties($filter=id eq '{ANNY_PROPERTY_ID}')"})
        try:
            event = await self._call(room, lambda: self._send(Method.GET, url, prefer=(UTC_TIMES,)),
                                     event_id=event_id)
        except RemoteGone:
            return None
        return parse_event(event), _property_value(event)

    async def find_mirror_event(self, room: str, anny_id: str) -> WrittenEvent | None:
        """GET /users/{room}/events?$filter=singleValueExtendedProperties/Any(…): the mirror event
        of a booking, found by our extended property (recovery path only)."""
        escaped = anny_id.replace("'", "''")
        match = f"ep/id eq '{ANNY_PROPERTY_ID}' and ep/value eq '{escaped}'"
        url = self.url("users", room, "events",
                       query={"$filter": f"singleValueExtendedProperties/Any(ep: {match})", "$top": "2"})
        found = await self._call(room, lambda: self._send(Method.GET, url), booking_id=anny_id)
        for event in _values(found):
            return _written(event, "")
        return None

    async def ensure_category(self, room: str) -> None:
        """GET/POST /users/{room}/outlook/masterCategories: create the dark-blue (preset22) "anny"
        category unless it exists; displayName is unique, so a racing create answers 409."""
        url = self.url("users", room, "outlook", "masterCategories")
        existing = await self._call(room, lambda: self._send(Method.GET, url))
        if ANNY_CATEGORY in {str(c.get("displayName") or "").lower() for c in _values(existing)}:
            return
        try:
            await self._call(room, lambda: self._send(
                Method.POST, url, {"displayName": ANNY_CATEGORY, "color": ANNY_CATEGORY_COLOR}))
        except RemoteConflict:
            pass

    # -- reading the room -----------------------------------------------------------------------------

    async def delta_pages(self, room: str, window: SyncWindow, link: str, page_size: int
                          ) -> AsyncIterator[DeltaPage]:
        """GET /users/{room}/calendarView/delta: the room's changes since `link` (or a new baseline
        for `window` when empty). The window is fixed in the token, so next/delta links are called
        as given; `Prefer: odata.maxpagesize` sizes pages and `outlook.timezone` makes times UTC.
        An expired token answers 410 or a sync-state error code: SyncStateExpired (re-baseline)."""
        url = link or self.url("users", room, "calendarView", "delta", query={
            "startDateTime": _graph_time(window.start), "endDateTime": _graph_time(window.end)})
        prefer = (f"odata.maxpagesize={page_size}", UTC_TIMES)
        while True:
            try:
                page = await self._call(room, partial(self._send, Method.GET, url, prefer=prefer))
            except (RemoteGone, RemoteBadRequest) as exc:
                if not sync_state_lost(exc):
                    raise
                raise SyncStateExpired("delta token expired", room=room) from exc
            result = DeltaPage([parse_event(e) for e in _values(page)],
                               str(page.get("@odata.nextLink") or ""), str(page.get("@odata.deltaLink") or ""))
            yield result
            if not result.next_link:
                return
            url = result.next_link

    async def calendar_view(self, room: str, window: SyncWindow, page_size: int) -> list[OutlookEvent]:
        """GET /users/{room}/calendarView?startDateTime&endDateTime: the events in a time range
        (single instances, occurrences and exceptions, never series masters), pages followed by
        `@odata.nextLink`; `Prefer: outlook.timezone` makes times UTC."""
        url = self.url("users", room, "calendarView", query={
            "startDateTime": _graph_time(window.start), "endDateTime": _graph_time(window.end)})
        prefer = (f"odata.maxpagesize={page_size}", UTC_TIMES)
        return [parse_event(e) async for e in self._pages(room, url, prefer)]

    async def _pages(self, room: str, url: str, prefer: tuple[str, ...] = ()) -> AsyncIterator[dict[str, Any]]:
        """The items of a paged collection, following `@odata.nextLink`."""
        while url:
            page = await self._call(room, partial(self._send, Method.GET, url, prefer=prefer))
            for item in _values(page):
                yield item
            url = str((page or {}).get("@odata.nextLink") or "")

    async def list_rooms(self) -> list[Room]:
        """GET /places/microsoft.graph.room (Place.Read.All): room mailboxes only, 100 a page."""
        return [Room(str(r.get("emailAddress") or "").lower(), str(r.get("displayName") or ""))
                async for r in self._pages("places", self.url("places", "microsoft.graph.room"))]

    # -- subscriptions ----------------------------------------------------------------------------------

    async def create_subscription(self, room: str, notification_url: str, lifecycle_url: str,
                                  client_state: str, expires_at: datetime) -> CreatedSubscription:
        """POST /subscriptions on users/{room}/events; the lifecycle URL can only be set here.
        A duplicate (same resource and changeType from this app) answers 409."""
        body = {"changeType": "created,updated,deleted", "notificationUrl": notification_url,
                "lifecycleNotificationUrl": lifecycle_url, "resource": f"users/{room}/events",
                "expirationDateTime": _instant(expires_at), "clientState": client_state}
        created = await self._call(room, lambda: self._send(Method.POST, self.url("subscriptions"), body))
        return CreatedSubscription(str(created["id"]),
                                   _parse_instant(created.get("expirationDateTime")) or expires_at)

    async def find_subscription(self, room: str) -> str | None:
        """GET /subscriptions (paged): id of this app's subscription on the room's events (after a 409)."""
        wanted = f"users/{room}/events".lower()
        async for sub in self._pages(room, self.url("subscriptions")):
            if str(sub.get("resource") or "").lower().lstrip("/") == wanted:
                return str(sub["id"])
        return None

    async def renew_subscription(self, subscription_id: str, expires_at: datetime) -> datetime:
        """PATCH /subscriptions/{id} {expirationDateTime}: at most 10,080 minutes ahead for events."""
        renewed = await self._call(
            "subscriptions", lambda: self._send(Method.PATCH, self.url("subscriptions", subscription_id),
                                                {"expirationDateTime": _instant(expires_at)}),
            subscription_id=subscription_id)
        return _parse_instant((renewed or {}).get("expirationDateTime")) or expires_at

    async def reauthorize_subscription(self, subscription_id: str) -> None:
        """POST /subscriptions/{id}/reauthorize, the answer to a reauthorizationRequired lifecycle event."""
        await self._call("subscriptions", lambda: self._send(
            Method.POST, self.url("subscriptions", subscription_id, "reauthorize")), subscription_id=subscription_id)

    async def delete_subscription(self, subscription_id: str) -> None:
        """DELETE /subscriptions/{id}; one that is gone already counts as deleted."""
        try:
            await self._call("subscriptions", lambda: self._send(
                Method.DELETE, self.url("subscriptions", subscription_id)), subscription_id=subscription_id)
        except RemoteGone:
            pass


# --- wire formats --------------------------------------------------------------------------------------


def sync_state_lost(error: RemoteError) -> bool:
    """Graph answers an expired delta token with 410 Gone, or with a sync-state error code."""
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


def _event_body(desired: DesiredEvent) -> dict[str, Any]:
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


def _values(page: Any) -> list[dict[str, Any]]:
    values = page.get("value") if isinstance(page, dict) else None
    return [v for v in values if isinstance(v, dict)] if isinstance(values, list) else []


def _written(event: Any, fallback_id: str) -> WrittenEvent:
    event = event if isinstance(event, dict) else {}
    return WrittenEvent(str(event.get("id") or fallback_id), str(event.get("changeKey") or ""))


def _property_value(event: dict[str, Any]) -> str:
    for prop in event.get("singleValueExtendedProperties") or []:
        if str(prop.get("id") or "").lower() == ANNY_PROPERTY_ID.lower():
            return str(prop.get("value") or "")
    return ""


def parse_graph_time(value: Any) -> datetime | None:
    """`{dateTime, timeZone}` in UTC (or a Windows/IANA zone when the Prefer header was ignored)."""
    if not isinstance(value, dict) or not value.get("dateTime"):
        return None
    naive = datetime.fromisoformat(str(value["dateTime"])[:26].rstrip("Z"))
    zone_name = str(value.get("timeZone") or "UTC")
    try:
        zone = ZoneInfo(WINDOWS_ZONES.get(zone_name, zone_name))
    except (ZoneInfoNotFoundError, ValueError):
        log.warning("unknown time zone from Graph, reading as UTC", extra={"time_zone": zone_name})
        zone = ZoneInfo("UTC")
    return naive.replace(tzinfo=zone).astimezone(UTC)


def parse_event(event: dict[str, Any]) -> OutlookEvent:
    """An event (or an `@removed` entry) of a Graph JSON answer."""
    if "@removed" in event:
        return OutlookEvent(id=str(event.get("id") or ""), removed=True)
    return OutlookEvent(
        id=str(event.get("id") or ""),
        change_key=str(event.get("changeKey") or ""),
        subject=str(event.get("subject") or ""),
        start=parse_graph_time(event.get("start")),
        end=parse_graph_time(event.get("end")),
        is_all_day=bool(event.get("isAllDay")),
        show_as=str(event.get("showAs") or "busy"),
        sensitivity=str(event.get("sensitivity") or "normal"),
        is_cancelled=bool(event.get("isCancelled")),
        categories=tuple(str(c) for c in event.get("categories") or ()),
        type=str(event.get("type") or "singleInstance"),
        has_attendees=bool(event.get("attendees")),
        is_reminder_on=bool(event.get("isReminderOn")),
        created=_parse_instant(event.get("createdDateTime")),
    )


def _failure(response: httpx.Response) -> GraphFailure:
    """A Graph error answer: `{"error": {"code", "message"}}`, or whatever a gateway sent instead."""
    try:
        error = json.loads(response.content).get("error") or {}
    except (ValueError, AttributeError):
        error = {}
    error = error if isinstance(error, dict) else {}
    return GraphFailure(response.status_code, str(error.get("code") or ""), str(error.get("message") or ""),
                        response.headers)


def _mapped(exc: GraphFailure, **context: Any) -> RemoteError:
    if exc.status == 429:  # the SDK's retries are used up; the worker re-queues the work item
        context["retry_after_s"] = retry_after_s(exc.headers, source="Graph",
                                                 default_s=GRAPH_DEFAULT_RETRY_AFTER_S, max_s=GRAPH_MAX_RETRY_AFTER_S)
    return error_for_status(exc.status)(str(exc), status=exc.status, code=exc.code, **context)
