"""What Microsoft Graph sends the app: the JSON shapes the Graph gateway (`sync.graph`) reads, and
the change notifications the ingress (`sync.ingress`) checks.

Each shape names the Microsoft Learn page that documents it. All keys are optional here: the
docs say what Graph sends, the wire decides; the parsing code checks every value it reads and
skips what does not fit, so a missing or odd property never raises.
"""

from __future__ import annotations

from typing import Any, TypedDict, TypeVar, cast

ItemT = TypeVar("ItemT")


class DateTimeTimeZone(TypedDict, total=False):
    """https://learn.microsoft.com/graph/api/resources/datetimetimezone — a wall-clock time and
    its zone: UTC when asked with `Prefer: outlook.timezone="UTC"`, else often a Windows zone name."""

    dateTime: str
    timeZone: str


class SingleValueExtendedProperty(TypedDict, total=False):
    """https://learn.microsoft.com/graph/api/resources/singlevaluelegacyextendedproperty"""

    id: str
    value: str


class Removed(TypedDict, total=False):
    """The `@removed` annotation of a delta item: https://learn.microsoft.com/graph/delta-query-overview"""

    reason: str  # "deleted" or "changed"; an event that left the window comes as "deleted" too


# https://learn.microsoft.com/graph/api/resources/event — the properties the app reads. A delta
# answer holds either events or `{"id", "@removed"}` entries (keys with "@" need this syntax).
Event = TypedDict("Event", {
    "id": str,
    "changeKey": str,
    "subject": str,
    "start": DateTimeTimeZone,
    "end": DateTimeTimeZone,
    "isAllDay": bool,
    "showAs": str,  # free | tentative | busy | oof | workingElsewhere | unknown
    "sensitivity": str,  # normal | personal | private | confidential
    "isCancelled": bool,
    "categories": list[str],
    "type": str,  # singleInstance | occurrence | exception | seriesMaster
    "attendees": list[dict[str, Any]],
    "isReminderOn": bool,
    "createdDateTime": str,
    "singleValueExtendedProperties": list[SingleValueExtendedProperty],
    "@removed": Removed,
}, total=False)

# A page of events: calendarView and calendarView/delta (https://learn.microsoft.com/graph/paging;
# the last delta page carries `@odata.deltaLink` instead of `@odata.nextLink`).
EventPage = TypedDict("EventPage", {
    "value": list[Event],
    "@odata.nextLink": str,
    "@odata.deltaLink": str,
}, total=False)


# Any collection page (https://learn.microsoft.com/graph/paging): its items in `value`, read in
# their own shape with `items_of`.
Page = TypedDict("Page", {
    "value": list[dict[str, Any]],
    "@odata.nextLink": str,
    "@odata.deltaLink": str,
}, total=False)


class OutlookCategory(TypedDict, total=False):
    """https://learn.microsoft.com/graph/api/resources/outlookcategory"""

    id: str
    displayName: str  # unique and immutable per mailbox
    color: str  # preset0 … preset24


class CategoryPage(TypedDict, total=False):
    value: list[OutlookCategory]


class Room(TypedDict, total=False):
    """https://learn.microsoft.com/graph/api/resources/room — `emailAddress` is the mailbox to use
    under /users/{…}."""

    id: str
    displayName: str
    emailAddress: str


class Subscription(TypedDict, total=False):
    """https://learn.microsoft.com/graph/api/resources/subscription"""

    id: str
    resource: str
    changeType: str
    notificationUrl: str
    lifecycleNotificationUrl: str
    expirationDateTime: str
    clientState: str


# What Graph POSTs to the notification URLs: `{"value": [notification, …]}`, several
# notifications (from several subscriptions) per POST.
ResourceData = TypedDict("ResourceData", {
    "@odata.type": str,  # "#Microsoft.Graph.Event"
    "@odata.id": str,
    "@odata.etag": str,
    "id": str,  # the event's id
}, total=False)


class ChangeNotification(TypedDict, total=False):
    """https://learn.microsoft.com/graph/api/resources/changenotification — a change (`changeType`,
    without resource data for events) or a lifecycle event
    (https://learn.microsoft.com/graph/change-notifications-lifecycle-events: `lifecycleEvent` is
    reauthorizationRequired | subscriptionRemoved | missed)."""

    subscriptionId: str
    subscriptionExpirationDateTime: str
    clientState: str  # ours, ≤ 128 characters: proves the POST comes from our subscription
    changeType: str  # created | updated | deleted
    resource: str  # "Users/{id}/Events/{id}"
    tenantId: str
    resourceData: ResourceData
    lifecycleEvent: str


class NotificationCollection(TypedDict, total=False):
    value: list[ChangeNotification]


class ErrorDetail(TypedDict, total=False):
    code: str
    message: str


class ErrorBody(TypedDict, total=False):
    """https://learn.microsoft.com/graph/errors — `{"error": {"code", "message", …}}`; a gateway in
    front of Graph may answer with anything else."""

    error: ErrorDetail


def items_of(page: object, shape: type[ItemT]) -> list[ItemT]:
    """The objects in a collection's `value`, read as `shape`; anything else there is skipped."""
    values = page.get("value") if isinstance(page, dict) else None
    if not isinstance(values, list):
        return []
    return [cast(ItemT, value) for value in values if isinstance(value, dict)]


def text(value: object) -> str:
    """A string property as the app keeps it: absent, null or empty all read as ""."""
    return str(value) if value else ""
