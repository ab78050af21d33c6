"""What anny sends the app: the JSON shapes the anny client (`sync.anny`) and the webhook ingress read.

The Admin API speaks JSON:API v1.1 (https://developers.anny.co/guides/json-api-conventions): a
document's `data` is a resource object, or a list of them, with `type`, `id`, `attributes` and
`relationships`; related objects asked for with `include` ride in `included`. Webhook
deliveries are plain JSON whose `data` is the booking itself, flat
(https://developers.anny.co/guides/webhooks). The attribute names follow anny's JSON Schemas
(booking, resource, webhook) from its own n8n node (github.com/anny-co/anny-n8n).

All keys are optional here: the parsing code checks every value it reads, because what the docs
promise is not what every answer holds (e.g. a 204 without a document, pages counted in `meta`
under varying names).
"""

from __future__ import annotations

from typing import Any, TypedDict


class Identifier(TypedDict, total=False):
    """A resource identifier object (`{"type": "resources", "id": "…"}`) in `relationships`."""

    type: str
    id: str | int


class Relationship(TypedDict, total=False):
    data: Identifier | None


class ResourceMeta(TypedDict, total=False):
    """A child resource states its parent here (listed with `filter[exclude_child_resources]=false`)."""

    parent_id: str | int | None


class ResourceObject(TypedDict, total=False):
    """A JSON:API resource object of any type (bookings, resources, services); what sits in
    `attributes` depends on the type (`BookingFields`, `ResourceFields` show it flat)."""

    type: str
    id: str | int
    attributes: dict[str, Any]
    relationships: dict[str, Relationship]
    meta: ResourceMeta


class ResourceFields(TypedDict, total=False):
    """A resource (anny-schemas/resource.json) read flat: its attributes beside its id — how a
    webhook nests it in a booking, and what `sync.anny` makes of a resource object."""

    id: str | int
    name: str
    timezone: str | None  # IANA, e.g. Europe/Berlin
    has_children: bool
    parent: Identifier | str | int | None
    meta: ResourceMeta
    relationships: dict[str, Relationship]


class ServiceFields(TypedDict, total=False):
    id: str | int
    name: str


class BookingFields(TypedDict, total=False):
    """A booking (anny-schemas/booking.json) read flat. The Admin API nests these under
    `attributes` with `resource`/`service` as relationships; a webhook sends them flat with the
    resource and service objects nested."""

    id: str | int
    start_date: str  # ISO 8601 with offset
    end_date: str
    status: str  # accepted, requested, reserved, pending, canceled… (not documented in full)
    canceled_at: str | None
    is_blocker: bool
    is_series_master: bool  # spans the whole series: never synced as one appointment
    number: str
    title: str | None
    description: str | None
    note: str | None
    created_at: str | None
    updated_at: str | None
    resource: ResourceFields
    service: ServiceFields
    relationships: dict[str, Relationship]


class Links(TypedDict, total=False):
    next: str | None


# Page counters in `meta` (or `meta.page`): anny's answers are not consistent about the names.
PageMeta = TypedDict("PageMeta", {
    "current_page": int,
    "last_page": int,
    "last-page": int,
    "lastPage": int,
    "total": int,  # the collection's size: pages that disagree on it were read while it changed
}, total=False)


class Meta(PageMeta, total=False):
    page: PageMeta


class Document(TypedDict, total=False):
    """A JSON:API answer with one resource object (GET/POST/PATCH of one booking or resource)."""

    data: ResourceObject | None  # a PATCH may answer 204 without a document: then {}
    included: list[ResourceObject]


class CollectionDocument(TypedDict, total=False):
    """A JSON:API answer with a page of resource objects (`page[number]`, `page[size]`, `sort`)."""

    data: list[ResourceObject]
    included: list[ResourceObject]
    links: Links
    meta: Meta


class ErrorObject(TypedDict, total=False):
    status: str
    title: str
    detail: str


class ErrorDocument(TypedDict, total=False):
    """An error answer: `{"errors": [{"status", "title", "detail"}]}` (a 429 included,
    https://developers.anny.co/guides/rate-limiting)."""

    errors: list[ErrorObject]


class WebhookDelivery(TypedDict, total=False):
    """The envelope anny POSTs (anny-schemas/webhook.json): `event_id` is unique per event (the
    idempotency key); `data` is the booking, flat — or JSON:API-wrapped (`{"data": {…}}`), which
    the ingress accepts too."""

    event: str  # bookings.created | bookings.updated | bookings.deleted | …
    timestamp: str
    event_id: str
    webhook_id: str
    triggered_at: str
    data: BookingFields | Document


class BookingSnapshot(BookingFields, total=False):
    """A booking webhook's `data` as the work item carries it (`sync.anny.webhook_snapshot`): the
    fields the worker needs, the resource with its parent (or `parent_unknown`), and whether it
    was deleted or just created."""

    deleted: bool
    created: bool
