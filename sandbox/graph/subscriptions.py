"""Change-notification subscriptions: validation of create/renew bodies and the store."""

from __future__ import annotations

import re
import secrets
import urllib.parse
from dataclasses import dataclass
from datetime import datetime, timedelta

from .errors import GraphError
from .ids import new_guid
from .timefmt import graph_utc, instant

CHANGE_TYPES = ("created", "updated", "deleted")
MAX_CLIENT_STATE = 128
_RESOURCE = re.compile(r"^/?users/([^/]+)/(?:calendar/)?events/?$", re.IGNORECASE)


def invalid(message: str) -> GraphError:
    return GraphError(400, "InvalidRequest", message)


@dataclass
class Subscription:
    id: str
    resource: str
    mailbox_key: str
    change_types: tuple[str, ...]
    notification_url: str
    lifecycle_url: str | None
    client_state: str | None
    expiration: datetime
    application_id: str
    creator_id: str

    def to_graph(self) -> dict:
        return {
            "id": self.id,
            "resource": self.resource,
            "applicationId": self.application_id,
            "changeType": ",".join(self.change_types),
            "clientState": self.client_state,
            "notificationUrl": self.notification_url,
            "notificationQueryOptions": None,
            "lifecycleNotificationUrl": self.lifecycle_url,
            "expirationDateTime": graph_utc(self.expiration),
            "creatorId": self.creator_id,
            "includeResourceData": None,
            "latestSupportedTlsVersion": "v1_2",
            "encryptionCertificate": None,
            "encryptionCertificateId": None,
            "notificationUrlAppId": None,
        }

    def wants(self, change_type: str) -> bool:
        return change_type in self.change_types


def resource_mailbox(resource: object) -> str:
    """The mailbox named by `users/{mailbox}/events` (also `/users/…`, `Users/…/Events`)."""
    match = _RESOURCE.match(str(resource or ""))
    if match is None:
        raise invalid(f"Resource '{resource}' is not supported; expected 'users/{{id}}/events'.")
    return urllib.parse.unquote(match.group(1))


def change_types(value: object) -> tuple[str, ...]:
    parts = tuple(part.strip() for part in str(value or "").split(",") if part.strip())
    if not parts or any(part not in CHANGE_TYPES for part in parts):
        raise invalid(f"Invalid changeType '{value}'; use a comma-separated subset of created,updated,deleted.")
    return parts


def expiration(value: object, now: datetime, max_minutes: int) -> datetime:
    if not value:
        raise invalid("expirationDateTime is a required property for subscription creation.")
    moment = instant(str(value))
    if moment <= now:
        raise invalid("Subscription expiration must be in the future.")
    if moment > now + timedelta(minutes=max_minutes):
        message = f"Subscription expiration can only be {max_minutes} minutes in the future."
        raise GraphError(400, "ExtensionError", message)
    return moment


def client_state(value: object) -> str | None:
    if value is not None and len(str(value)) > MAX_CLIENT_STATE:
        raise invalid(f"clientState must not exceed {MAX_CLIENT_STATE} characters.")
    return None if value is None else str(value)


def url(value: object, name: str) -> str:
    parsed = urllib.parse.urlparse(str(value or ""))
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise invalid(f"{name} must be an absolute http(s) URL.")
    return str(value)


def with_token(address: str, token: str) -> str:
    """The URL plus `validationToken`, keeping its own query string (e.g. a function key)."""
    joiner = "&" if urllib.parse.urlparse(address).query else "?"
    return f"{address}{joiner}validationToken={urllib.parse.quote(token, safe='')}"


def validation_token() -> str:
    request_id = f"{new_guid()} {secrets.token_hex(4)}"
    return f"Validation: Testing client application reachability for subscription Request-Id: {request_id}"


class SubscriptionStore:
    def __init__(self) -> None:
        self.items: dict[str, Subscription] = {}

    def active(self, now: datetime) -> list[Subscription]:
        """Live subscriptions; expired ones are dropped, as Graph deletes them."""
        for sub_id in [s.id for s in self.items.values() if s.expiration <= now]:
            del self.items[sub_id]
        return list(self.items.values())

    def get(self, sub_id: str, now: datetime) -> Subscription:
        found = {s.id: s for s in self.active(now)}.get(sub_id)
        if found is None:
            raise GraphError(404, "ResourceNotFound", f"The object was not found: subscription '{sub_id}'.")
        return found

    def duplicate_of(self, candidate: Subscription, now: datetime) -> Subscription | None:
        for sub in self.active(now):
            # Graph: the same resource and changeType from the same app is a duplicate, whatever the URL.
            same = (sub.mailbox_key, sorted(sub.change_types))
            if same == (candidate.mailbox_key, sorted(candidate.change_types)):
                return sub
        return None

    def for_mailbox(self, mailbox_key: str, now: datetime) -> list[Subscription]:
        return [sub for sub in self.active(now) if sub.mailbox_key == mailbox_key]

