"""The control API under `/_control/...` (no auth): the in-process methods over HTTP.

Each route calls one method of the emulator, by name, with the path parameters, the query string
and the JSON body (camelCase or snake_case keys) as keyword arguments. This module knows the
emulator only as `Controlled`: the emulator imports it, not the other way round.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Protocol

from aiohttp import web

from .errors import GraphError
from .notify import Notifier
from .person import snake_keys


class Controlled(Protocol):
    """What the control API needs besides the methods `ROUTES` names."""

    notifier: Notifier

    async def wait_deliveries(self, timeout: float = 5.0) -> None: ...

EVENT = "/_control/mailboxes/{mailbox}/events/{event_id}"
OCCURRENCE = "/_control/mailboxes/{mailbox}/events/{series_id}/occurrences/{occurrence}"
SUBSCRIPTION = "/_control/subscriptions/{subscription_id}"

# (method, path, emulator method, keyword that receives the whole JSON body or None)
ROUTES: list[tuple[str, str, str, str | None]] = [
    ("POST", "/_control/reset", "reset", None),
    ("POST", "/_control/seed", "seed", "data"),
    ("POST", "/_control/rooms", "add_room", None),
    ("POST", "/_control/mailboxes", "add_mailbox", None),
    ("GET", "/_control/mailboxes/{mailbox}/events", "events", None),
    ("POST", "/_control/mailboxes/{mailbox}/events", "person_create_event", None),
    ("GET", EVENT, "event", None),
    ("PATCH", EVENT, "person_update_event", None),
    ("DELETE", EVENT, "person_delete_event", None),
    ("POST", EVENT + "/cancel", "person_cancel_event", None),
    ("PATCH", OCCURRENCE, "person_update_occurrence", None),
    ("DELETE", OCCURRENCE, "person_delete_occurrence", None),
    ("POST", OCCURRENCE + "/cancel", "person_cancel_occurrence", None),
    ("GET", "/_control/mailboxes/{mailbox}/calendarView", "calendar_view", None),
    ("GET", "/_control/mailboxes/{mailbox}/categories", "categories", None),
    ("POST", "/_control/mailboxes/{mailbox}/delta/expire", "expire_delta_tokens", None),
    ("POST", "/_control/delta/expire", "expire_delta_tokens", None),
    ("POST", "/_control/delta/faults", "set_delta_faults", None),
    ("GET", "/_control/subscriptions", "subscriptions", None),
    ("POST", SUBSCRIPTION + "/lifecycle", "fire_lifecycle", None),
    ("POST", SUBSCRIPTION + "/expire", "expire_subscription", None),
    ("GET", "/_control/faults", "list_faults", None),
    ("POST", "/_control/faults", "add_fault", None),
    ("DELETE", "/_control/faults", "clear_faults", None),
    ("POST", "/_control/latency", "set_latency", None),
    ("POST", "/_control/throttling", "set_throttling", None),
    ("POST", "/_control/notifications/faults", "set_notification_faults", None),
    ("POST", "/_control/notifications/delivery", "set_notification_delivery", None),
    ("POST", "/_control/notifications/release", "release_held_notifications", None),
    ("GET", "/_control/deliveries", "deliveries", None),
    ("DELETE", "/_control/deliveries", "clear_deliveries", None),
    ("GET", "/_control/counters", "call_counts", None),
    ("DELETE", "/_control/counters", "reset_counters", None),
    ("GET", "/_control/throttled", "throttled_counts", None),
    ("POST", "/_control/clock/advance", "advance_clock", None),
]


def register(app: web.Application, emulator: Controlled) -> None:
    for method, path, name, body_as in ROUTES:
        app.router.add_route(method, path, _endpoint(getattr(emulator, name), body_as))
    app.router.add_route("POST", "/_control/notifications/drain", _drain(emulator))


def _endpoint(call: Callable[..., Any], body_as: str | None) -> Callable[[web.Request], Any]:
    async def handler(request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else {}
        kwargs: dict[str, Any] = {**snake_keys(dict(request.query)), **dict(request.match_info)}
        if body_as is not None:
            kwargs[body_as] = body
        elif isinstance(body, dict):
            kwargs |= snake_keys(body)
        try:
            result = call(**kwargs)
        except GraphError as error:
            return web.json_response(error.body(), status=error.status)
        except (TypeError, ValueError, KeyError) as error:
            return web.json_response({"error": {"code": "BadRequest", "message": str(error)}}, status=400)
        return web.json_response(_jsonable(result), dumps=lambda v: json.dumps(v, default=str))

    return handler


def _drain(emulator: Controlled) -> Callable[[web.Request], Any]:
    async def handler(request: web.Request) -> web.Response:
        await emulator.wait_deliveries(float(request.query.get("timeout", "5")))
        return web.json_response({"deliveries": len(emulator.notifier.deliveries)})

    return handler


def _jsonable(value: Any) -> Any:
    return value.to_json() if hasattr(value, "to_json") else value
