"""HTTP ingress (DESIGN §4, §4.4): authenticate, validate, turn into work items, answer fast.

Nothing here writes to anny or Graph; the worker does all writing. Each handler returns
the HTTP answer and the work items for the queue output binding.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import azure.functions as func

from sync.settings import Settings
from sync.state import StateStore, Subscription
from sync.work import BookingWork, LifecycleWork, RoomWork, Work, encode

log = logging.getLogger(__name__)
MAX_VALIDATION_TOKEN = 1024
LIFECYCLE_EVENTS = frozenset({"reauthorizationRequired", "subscriptionRemoved", "missed"})


@dataclass
class Answer:
    response: func.HttpResponse
    work: list[Work] = field(default_factory=list)

    @property
    def messages(self) -> list[str]:
        return [encode(w) for w in self.work]


def _json_answer(http_status: int, **body: Any) -> Answer:
    return Answer(func.HttpResponse(json.dumps(body), status_code=http_status, mimetype="application/json"))


def _too_large(req: func.HttpRequest, limit: int) -> Answer | None:
    if len(req.get_body() or b"") > limit:
        return _json_answer(413, error="body too large", limit=limit)
    return None


def _parse_json(req: func.HttpRequest) -> tuple[Any, Answer | None]:
    try:
        return json.loads(req.get_body() or b""), None
    except (ValueError, UnicodeDecodeError):
        return None, _json_answer(400, error="malformed JSON")


# --- anny webhooks ------------------------------------------------------------------------------


def _authentic(req: func.HttpRequest, settings: Settings) -> bool:
    given = req.headers.get(settings.anny_webhook_secret_header) or ""
    if not hmac.compare_digest(given.encode(), settings.anny_webhook_secret.encode()):
        return False
    if not settings.anny_webhook_signing_key:
        return True
    signature = (req.headers.get(settings.anny_webhook_signature_header) or "").removeprefix("sha256=")
    expected = hmac.new(settings.anny_webhook_signing_key.encode(), req.get_body() or b"", hashlib.sha256)
    return hmac.compare_digest(signature.lower().encode(), expected.hexdigest().encode())


def booking_id_of(payload: dict[str, Any]) -> str:
    """The booking id from a flat (`data.id`) or JSON:API-wrapped (`data.data.id`) payload."""
    data = payload.get("data")
    if isinstance(data, dict) and isinstance(data.get("data"), dict):
        data = data["data"]
    booking_id = data.get("id") if isinstance(data, dict) else None
    return str(booking_id) if isinstance(booking_id, (str, int)) and str(booking_id) else ""


async def anny_webhook(req: func.HttpRequest, settings: Settings, store: StateStore) -> Answer:
    too_large = _too_large(req, settings.webhook_max_body_bytes)  # before anything else is read
    if too_large:
        return too_large
    if not _authentic(req, settings):
        log.warning("anny webhook refused: secret or signature wrong")
        return _json_answer(401, error="unauthorized")
    payload, refused = _parse_json(req)
    if refused:
        return refused
    if not isinstance(payload, dict):
        return _json_answer(400, error="expected a JSON object")
    event = str(payload.get("event") or req.headers.get("x-anny-event") or "")
    if not event.startswith("bookings."):
        log.info("anny webhook ignored", extra={"anny_event": event})
        return _json_answer(202, status="ignored", event=event)
    booking_id = booking_id_of(payload)
    if not booking_id:
        return _json_answer(400, error="data.id (the booking id) is missing")
    event_id = str(payload.get("event_id") or "")
    if event_id and await store.is_processed(event_id):
        return _json_answer(202, status="duplicate", event_id=event_id)
    answer = _json_answer(202, status="queued", booking_id=booking_id)
    answer.work.append(BookingWork(booking_id=booking_id, anny_event_id=event_id))
    return answer


# --- Graph notifications ---------------------------------------------------------------------------


def _validation(req: func.HttpRequest) -> Answer | None:
    """Graph's handshake: echo the decoded token as plain text, never as markup."""
    token = req.params.get("validationToken")
    if token is None:
        return None
    if len(token) > MAX_VALIDATION_TOKEN:
        return _json_answer(400, error="validation token too long")
    headers = {"X-Content-Type-Options": "nosniff"}
    return Answer(func.HttpResponse(token, status_code=200, mimetype="text/plain", charset="utf-8",
                                    headers=headers))


Verified = list[tuple[dict[str, Any], Subscription]]


class _SubscriptionCache:
    """Subscriptions by id, kept briefly so a burst of notifications costs no table reads.

    Only found subscriptions are kept: an unknown id is looked up every time.
    """

    def __init__(self, ttl_s: float = 60) -> None:
        self._ttl = ttl_s
        self._found: dict[str, tuple[float, Subscription]] = {}

    async def get(self, subscription_id: str, store: StateStore) -> Subscription | None:
        now = time.monotonic()
        cached = self._found.get(subscription_id)
        if cached and now - cached[0] < self._ttl:
            return cached[1]
        sub = await store.get_subscription(subscription_id)
        if sub is None:
            self._found.pop(subscription_id, None)
        else:
            self._found[subscription_id] = (now, sub)
        return sub


_subscriptions = _SubscriptionCache()


async def _verified_items(req: func.HttpRequest, settings: Settings, store: StateStore
                          ) -> tuple[Verified, Answer | None]:
    too_large = _too_large(req, settings.webhook_max_body_bytes)
    if too_large:
        return [], too_large
    payload, refused = _parse_json(req)
    if refused:
        return [], refused
    items = payload.get("value") if isinstance(payload, dict) else None
    if not isinstance(items, list):
        return [], _json_answer(400, error="expected {\"value\": [...]}")
    verified, dropped = [], 0
    for item in items:
        sub_id = str(item.get("subscriptionId") or "") if isinstance(item, dict) else ""
        sub = await _subscriptions.get(sub_id, store) if sub_id else None
        given = str(item.get("clientState") or "") if isinstance(item, dict) else ""
        if sub is None or not hmac.compare_digest(given.encode(), sub.client_state.encode()):
            dropped += 1
            continue
        verified.append((item, sub))
    if dropped:
        log.warning("notifications dropped: unknown subscription or wrong clientState",
                    extra={"dropped": dropped, "received": len(items)})
    return verified, None


async def _graph_post(req: func.HttpRequest, settings: Settings, store: StateStore,
                      to_answer: Callable[[Verified], Answer]) -> Answer:
    """Both Graph endpoints: the validation handshake, or verified items turned into an answer."""
    handshake = _validation(req)
    if handshake:
        return handshake
    verified, refused = await _verified_items(req, settings, store)
    return refused or to_answer(verified)


def _room_signals(verified: Verified) -> Answer:
    rooms = sorted({sub.room for _, sub in verified})
    answer = _json_answer(202, rooms=len(rooms))
    answer.work.extend(RoomWork(room) for room in rooms)
    return answer


def _lifecycle_work(verified: Verified) -> Answer:
    work = [LifecycleWork(sub.subscription_id, str(item.get("lifecycleEvent")))
            for item, sub in verified if item.get("lifecycleEvent") in LIFECYCLE_EVENTS]
    answer = _json_answer(202, accepted=len(work))
    answer.work.extend(dict.fromkeys(work))
    return answer


async def graph_notify(req: func.HttpRequest, settings: Settings, store: StateStore) -> Answer:
    """Change notifications: one "room changed" signal per room, whatever the number of items."""
    return await _graph_post(req, settings, store, _room_signals)


async def graph_lifecycle(req: func.HttpRequest, settings: Settings, store: StateStore) -> Answer:
    return await _graph_post(req, settings, store, _lifecycle_work)
