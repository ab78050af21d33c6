"""The Graph gateway: every Microsoft Graph call the app makes, on msgraph-sdk (async).

Credentials come from azure-identity (managed identity by default, client secret or
certificate when configured; a static token for localhost emulators). The SDK's retry
handler honours 429/503/504 `Retry-After`; on top, at most 4 requests per mailbox run at
once (Graph's per-mailbox concurrency limit). `ODataError`s become the app's typed errors.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx
from kiota_abstractions.authentication import (
    AccessTokenProvider,
    AllowedHostsValidator,
    BaseBearerTokenAuthenticationProvider,
)
from kiota_abstractions.base_request_configuration import RequestConfiguration
from kiota_http.middleware.options import RetryHandlerOption
from msgraph import GraphServiceClient
from msgraph.generated.models.body_type import BodyType
from msgraph.generated.models.category_color import CategoryColor
from msgraph.generated.models.date_time_time_zone import DateTimeTimeZone
from msgraph.generated.models.event import Event
from msgraph.generated.models.free_busy_status import FreeBusyStatus
from msgraph.generated.models.item_body import ItemBody
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.models.outlook_category import OutlookCategory
from msgraph.generated.models.single_value_legacy_extended_property import SingleValueLegacyExtendedProperty
from msgraph.generated.models.subscription import Subscription as GraphSubscription
from msgraph.graph_request_adapter import GraphRequestAdapter
from msgraph_core import GraphClientFactory

from sync.errors import (
    RemoteBadRequest,
    RemoteConflict,
    RemoteError,
    RemoteGone,
    RemoteUnavailable,
    SyncStateExpired,
    error_for_status,
)
from sync.model import ANNY_CATEGORY, ANNY_CATEGORY_COLOR, DesiredEvent, OutlookEvent, SyncWindow
from sync.settings import Settings
from sync.validation import path_segment

log = logging.getLogger(__name__)
T = TypeVar("T")

# Our single-value extended property: the anny booking id on every mirror event.
ANNY_PROPERTY_ID = "String {8e1d1c7a-3b9f-4a52-9d6e-5a1f2b7c4e90} Name AnnyBookingId"
GRAPH_SCOPE = "https://graph.microsoft.com/.default"
MAILBOX_CONCURRENCY = 4
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


@dataclass
class GraphGateway:
    """Owns the Graph client; one per event loop."""

    client: GraphServiceClient
    http: httpx.AsyncClient
    _limits: dict[str, asyncio.Semaphore] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings, max_retries: int = 3) -> GraphGateway:
        base = settings.graph_base_url.rstrip("/")
        options = {RetryHandlerOption.get_key(): RetryHandlerOption(delay=1, max_retries=max_retries)}
        http = GraphClientFactory.create_with_default_middleware(
            client=httpx.AsyncClient(base_url=base, timeout=httpx.Timeout(30, connect=10)), options=options)
        adapter = GraphRequestAdapter(_auth_provider(settings), http)
        adapter.base_url = base
        return cls(GraphServiceClient(request_adapter=adapter), http)

    async def close(self) -> None:
        await self.http.aclose()

    def _mailbox(self, room: str) -> Any:
        """The request builder of a mailbox. The SDK escapes every path parameter (RFC 6570);
        `path_segment` refuses the ids no escaping can make safe ('', '.', '..')."""
        return self.client.users.by_user_id(path_segment(room, "room"))

    def _event(self, room: str, event_id: str) -> Any:
        return self._mailbox(room).events.by_event_id(path_segment(event_id, "event_id"))

    def _subscription(self, subscription_id: str) -> Any:
        return self.client.subscriptions.by_subscription_id(path_segment(subscription_id, "subscription_id"))

    async def _call(self, room: str, call: Callable[[], Awaitable[T]], **context: Any) -> T:
        limit = self._limits.setdefault(room, asyncio.Semaphore(MAILBOX_CONCURRENCY))
        async with limit:
            try:
                return await call()
            except ODataError as exc:
                raise _mapped(exc, room=room, **context) from exc
            except httpx.HTTPError as exc:
                raise RemoteUnavailable(f"Graph request failed: {type(exc).__name__}", room=room,
                                        **context) from exc

    # -- mirror events ------------------------------------------------------------------------------

    async def create_event(self, room: str, desired: DesiredEvent, transaction_id: str) -> WrittenEvent:
        body = _event_body(desired)
        body.transaction_id = transaction_id
        body.categories = [ANNY_CATEGORY]
        body.single_value_extended_properties = [
            SingleValueLegacyExtendedProperty(id=ANNY_PROPERTY_ID, value=desired.anny_id)]
        created = await self._call(room, lambda: self._mailbox(room).events.post(body),
                                   booking_id=desired.anny_id)
        return WrittenEvent(str(created.id), str(created.change_key or ""))

    async def update_event(self, room: str, event_id: str, desired: DesiredEvent) -> WrittenEvent:
        body = _event_body(desired)
        body.categories = [ANNY_CATEGORY]
        updated = await self._call(
            room, lambda: self._event(room, event_id).patch(body),
            booking_id=desired.anny_id, event_id=event_id)
        return WrittenEvent(str(updated.id or event_id), str(updated.change_key or ""))

    async def delete_event(self, room: str, event_id: str) -> None:
        """Delete an event; one that is gone already counts as deleted."""
        try:
            await self._call(room, lambda: self._event(room, event_id).delete(),
                             event_id=event_id)
        except RemoteGone:
            log.info("event already gone", extra={"room": room, "event_id": event_id})

    async def anny_id_of_event(self, room: str, event_id: str) -> tuple[OutlookEvent, str] | None:
        """The event with our extended property's value ("" when it has none); None when gone."""
        query = RequestConfiguration(query_parameters=_expand_property())
        query.headers.add("Prefer", UTC_TIMES)
        try:
            event = await self._call(
                room, lambda: self._event(room, event_id).get(query),
                event_id=event_id)
        except RemoteGone:
            return None
        return parse_event(event), _property_value(event)

    async def find_mirror_event(self, room: str, anny_id: str) -> WrittenEvent | None:
        """The mirror event of a booking, found by our extended property (recovery path only)."""
        from msgraph.generated.users.item.events.events_request_builder import EventsRequestBuilder

        escaped = anny_id.replace("'", "''")
        params = EventsRequestBuilder.EventsRequestBuilderGetQueryParameters(
            filter=f"singleValueExtendedProperties/Any(ep: ep/id eq '{ANNY_PROPERTY_ID}' and ep/value eq '{escaped}')",
            top=2)
        found = await self._call(room, lambda: self._mailbox(room).events.get(
            RequestConfiguration(query_parameters=params)), booking_id=anny_id)
        for event in (found.value if found else None) or []:
            return WrittenEvent(str(event.id), str(event.change_key or ""))
        return None

    async def ensure_category(self, room: str) -> None:
        """Create the dark-blue "anny" master category in the room mailbox unless it exists."""
        categories = self._mailbox(room).outlook.master_categories
        existing = await self._call(room, categories.get)
        names = {(c.display_name or "").lower() for c in (existing.value if existing else None) or []}
        if ANNY_CATEGORY in names:
            return
        category = OutlookCategory(display_name=ANNY_CATEGORY, color=CategoryColor(ANNY_CATEGORY_COLOR))
        try:
            await self._call(room, lambda: categories.post(category))
        except RemoteConflict:
            pass

    # -- reading the room -----------------------------------------------------------------------------

    async def delta_pages(self, room: str, window: SyncWindow, link: str, page_size: int
                          ) -> AsyncIterator[DeltaPage]:
        """The room's changes since `link` (or a new baseline for `window` when empty)."""
        from msgraph.generated.users.item.calendar_view.delta.delta_request_builder import DeltaRequestBuilder

        builder = self._mailbox(room).calendar_view.delta
        params = DeltaRequestBuilder.DeltaRequestBuilderGetQueryParameters(
            start_date_time=_graph_time(window.start), end_date_time=_graph_time(window.end))
        while True:
            config = RequestConfiguration(query_parameters=None if link else params)
            config.headers.add("Prefer", f"odata.maxpagesize={page_size}")
            config.headers.add("Prefer", UTC_TIMES)
            request = builder.with_url(link) if link else builder
            try:
                page = await self._call(room, lambda r=request, c=config: r.get(c))
            except (RemoteGone, RemoteBadRequest) as exc:
                if not sync_state_lost(exc):
                    raise
                raise SyncStateExpired("delta token expired", room=room) from exc
            result = DeltaPage([parse_event(e) for e in (page.value if page else None) or []],
                               str(page.odata_next_link or ""), str(page.odata_delta_link or ""))
            yield result
            if not result.next_link:
                return
            link = result.next_link

    async def list_rooms(self) -> list[Room]:
        builder = self.client.places.graph_room
        rooms: list[Room] = []
        page = await self._call("places", builder.get)
        while page is not None:
            rooms.extend(Room(str(r.email_address or "").lower(), str(r.display_name or ""))
                         for r in page.value or [])
            if not page.odata_next_link:
                break
            page = await self._call("places", builder.with_url(page.odata_next_link).get)
        return rooms

    # -- subscriptions ----------------------------------------------------------------------------------

    async def create_subscription(self, room: str, notification_url: str, lifecycle_url: str,
                                  client_state: str, expires_at: datetime) -> CreatedSubscription:
        body = GraphSubscription(change_type="created,updated,deleted", notification_url=notification_url,
                                 lifecycle_notification_url=lifecycle_url, resource=f"users/{room}/events",
                                 expiration_date_time=expires_at, client_state=client_state)
        created = await self._call(room, lambda: self.client.subscriptions.post(body))
        return CreatedSubscription(str(created.id), created.expiration_date_time or expires_at)

    async def find_subscription(self, room: str) -> str | None:
        """Id of this app's subscription on the room's events (after a 409 on create)."""
        builder = self.client.subscriptions
        page = await self._call(room, builder.get)
        wanted = f"users/{room}/events".lower()
        while page is not None:
            for sub in page.value or []:
                if (sub.resource or "").lower().lstrip("/") == wanted:
                    return str(sub.id)
            if not page.odata_next_link:
                return None
            page = await self._call(room, builder.with_url(page.odata_next_link).get)
        return None

    async def renew_subscription(self, subscription_id: str, expires_at: datetime) -> datetime:
        body = GraphSubscription(expiration_date_time=expires_at)
        renewed = await self._call(
            "subscriptions", lambda: self._subscription(subscription_id).patch(body),
            subscription_id=subscription_id)
        return (renewed.expiration_date_time if renewed else None) or expires_at

    async def reauthorize_subscription(self, subscription_id: str) -> None:
        await self._call("subscriptions",
                         self._subscription(subscription_id).reauthorize.post,
                         subscription_id=subscription_id)

    async def delete_subscription(self, subscription_id: str) -> None:
        try:
            await self._call("subscriptions", self._subscription(subscription_id).delete,
                             subscription_id=subscription_id)
        except RemoteGone:
            pass


# --- wire formats --------------------------------------------------------------------------------------


def sync_state_lost(error: RemoteError) -> bool:
    """Graph answers an expired delta token with 410 Gone, or with a sync-state error code."""
    code = str(error.context.get("code") or "").lower()
    return error.context.get("status") == 410 or "syncstate" in code or "resyncrequired" in code


def _graph_time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _event_body(desired: DesiredEvent) -> Event:
    return Event(
        subject=desired.subject,
        start=DateTimeTimeZone(date_time=_graph_time(desired.start), time_zone="UTC"),
        end=DateTimeTimeZone(date_time=_graph_time(desired.end), time_zone="UTC"),
        show_as=FreeBusyStatus.Busy,
        is_reminder_on=False,
        attendees=[],
        body=ItemBody(content_type=BodyType.Text, content="Booked in anny. Changes here are overwritten by anny."),
    )


def _expand_property() -> Any:
    from msgraph.generated.users.item.events.item.event_item_request_builder import EventItemRequestBuilder

    return EventItemRequestBuilder.EventItemRequestBuilderGetQueryParameters(
        expand=[f"singleValueExtendedProperties($filter=id eq '{ANNY_PROPERTY_ID}')"])


def _property_value(event: Event) -> str:
    for prop in event.single_value_extended_properties or []:
        if (prop.id or "").lower() == ANNY_PROPERTY_ID.lower():
            return str(prop.value or "")
    return ""


def parse_graph_time(value: DateTimeTimeZone | None) -> datetime | None:
    if value is None or not value.date_time:
        return None
    naive = datetime.fromisoformat(value.date_time[:26].rstrip("Z"))
    zone_name = WINDOWS_ZONES.get(value.time_zone or "UTC", value.time_zone or "UTC")
    try:
        zone = ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError):
        log.warning("unknown time zone from Graph, reading as UTC", extra={"time_zone": value.time_zone})
        zone = ZoneInfo("UTC")
    return naive.replace(tzinfo=zone).astimezone(UTC)


def _enum(value: Any, default: str) -> str:
    return str(getattr(value, "value", value) or default)


def parse_event(event: Event) -> OutlookEvent:
    extra = event.additional_data or {}
    if "@removed" in extra:
        return OutlookEvent(id=str(event.id), removed=True)
    return OutlookEvent(
        id=str(event.id),
        change_key=str(event.change_key or ""),
        subject=str(event.subject or ""),
        start=parse_graph_time(event.start),
        end=parse_graph_time(event.end),
        is_all_day=bool(event.is_all_day),
        show_as=_enum(event.show_as, "busy"),
        sensitivity=_enum(event.sensitivity, "normal"),
        is_cancelled=bool(event.is_cancelled),
        categories=tuple(event.categories or ()),
        type=_enum(event.type, "singleInstance"),
        has_attendees=bool(event.attendees),
        is_reminder_on=bool(event.is_reminder_on),
        created=event.created_date_time.astimezone(UTC) if event.created_date_time else None,
    )


def _mapped(exc: ODataError, **context: Any) -> RemoteError:
    status = exc.response_status_code or 0
    code = exc.error.code if exc.error else ""
    message = f"Graph answered {status} {code}: {(exc.error.message if exc.error else '') or ''}"[:400]
    return error_for_status(status)(message, status=status, code=code, **context)
