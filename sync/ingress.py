"""HTTP ingress (architecture: security): authenticate, validate, turn into work items, answer fast.

Nothing here writes to anny or Graph; the worker does all writing. Each handler returns
the HTTP answer and the work items for the queue output binding.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import azure.functions as func

from sync import graph_wire, processed, validation
from sync.anny import seen_booking, webhook_snapshot
from sync.decide import is_own_blocker_echo
from sync.errors import InputError
from sync.room_runs import signal_run_here
from sync.settings import Settings
from sync.state import ProcessedEvents, Subscription, SubscriptionsTable
from sync.work import BookingWork, LifecycleWork, RoomWork, Work, encode, fits_queue

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


class BodyTooLarge(InputError):
    status = 413


class StaleDelivery(InputError):
    """A delivery stamped outside the replay tolerance: answered like a wrong signature."""

    status = 401


@dataclass(frozen=True)
class IngressTables:
    """What the endpoints read: processed webhook ids (anny) and subscriptions (Graph)."""

    processed: ProcessedEvents
    subscriptions: SubscriptionsTable


Handler = Callable[[func.HttpRequest, Settings, IngressTables], Awaitable[Answer]]


def _refusing(endpoint: str) -> Callable[[Handler], Handler]:
    """Bad input answers 4xx with the field and the problem, logged as one line without the body."""

    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def guarded(req: func.HttpRequest, settings: Settings, tables: IngressTables) -> Answer:
            try:
                return await handler(req, settings, tables)
            except InputError as exc:
                return _refused(endpoint, exc)

        return guarded

    return wrap


def _refused(endpoint: str, exc: InputError) -> Answer:
    log.warning("%s request refused (%s): %s", endpoint, exc.status, exc,
                extra={"field": exc.field, "problem": exc.problem})
    return _json_answer(exc.status, error=str(exc), field=exc.field, problem=exc.problem)


def _body(req: func.HttpRequest, limit: int) -> bytes:
    body = validation.request_body(req)
    if len(body) > limit:
        raise BodyTooLarge("body", f"larger than {limit} bytes")
    return body


# --- anny webhooks ------------------------------------------------------------------------------


def _authentic(req: func.HttpRequest, body: bytes, settings: Settings) -> bool:
    given = req.headers.get(settings.anny_webhook_secret_header) or ""
    if not hmac.compare_digest(given.encode(errors="replace"), settings.anny_webhook_secret.encode()):
        return False
    if not settings.anny_webhook_signing_key:
        return True
    signature = (req.headers.get(settings.anny_webhook_signature_header) or "").removeprefix("sha256=")
    expected = hmac.new(settings.anny_webhook_signing_key.encode(), body, hashlib.sha256)
    return hmac.compare_digest(signature.lower().encode(errors="replace"), expected.hexdigest().encode())


def _check_fresh(req: func.HttpRequest, payload: dict[str, Any], settings: Settings) -> None:
    """Refuse replays: the delivery's timestamp must be near now. anny names the `x-anny-timestamp`
    header but not its format (Unix time, ISO 8601 and HTTP dates are read): a header none of them
    fits gives way to the envelope's `triggered_at` or `timestamp` (date-time in webhook.json), so
    an authentic delivery is never refused for the header's format alone."""
    given = [(where, stamp) for where, stamp in (("x-anny-timestamp", req.headers.get("x-anny-timestamp")),
                                                 ("triggered_at", payload.get("triggered_at")),
                                                 ("timestamp", payload.get("timestamp"))) if stamp not in (None, "")]
    if not given:
        raise InputError("x-anny-timestamp", "missing; anny stamps every delivery (header or triggered_at)")
    sent, where = _first_instant(given)
    tolerance = timedelta(minutes=settings.anny_webhook_tolerance_minutes)
    if abs(datetime.now(UTC) - sent) > tolerance:
        raise StaleDelivery(where, f"outside the replay tolerance of {settings.anny_webhook_tolerance_minutes} "
                                   "minutes (ANNY_WEBHOOK_TOLERANCE_MINUTES)")


def _first_instant(given: list[tuple[str, Any]]) -> tuple[datetime, str]:
    """The first readable of the stamps, and where it was; the first one's error if none is."""
    refusal: InputError | None = None
    for where, stamp in given:
        try:
            return validation.instant(stamp, where), where
        except InputError as exc:
            refusal = refusal or exc
    assert refusal is not None
    raise refusal


def booking_id_of(payload: dict[str, Any]) -> str:
    """The booking id from a flat (`data.id`) or JSON:API-wrapped (`data.data.id`) payload."""
    data = payload.get("data")
    where = "data"
    if isinstance(data, dict) and isinstance(data.get("data"), dict):
        data, where = data["data"], "data.data"
    if not isinstance(data, dict):
        raise InputError("data", "expected the booking object")
    return validation.anny_id(data.get("id"), f"{where}.id")


@_refusing("anny webhook")
async def anny_webhook(req: func.HttpRequest, settings: Settings, tables: IngressTables) -> Answer:
    body = _body(req, settings.webhook_max_body_bytes)  # before anything else is read
    if not _authentic(req, body, settings):
        log.warning("anny webhook refused: secret or signature wrong")
        return _json_answer(401, error="unauthorized")
    payload = validation.json_object(body)
    _check_fresh(req, payload, settings)
    event = payload.get("event") or req.headers.get("x-anny-event") or ""
    event = validation.text(event, "event", 128)
    if not event.startswith("bookings."):
        log.info("anny webhook ignored", extra={"anny_event": event})
        return _json_answer(202, status="ignored", event=event)
    booking_id = booking_id_of(payload)
    snapshot = webhook_snapshot(payload)
    if snapshot is not None and is_own_blocker_echo(seen_booking(snapshot).booking):
        return _json_answer(202, status="ignored", reason="a blocker this app made", booking_id=booking_id)
    event_id = payload.get("event_id")
    event_id = validation.anny_event_id(event_id, "event_id") if event_id not in (None, "") else ""
    work = BookingWork(booking_id=booking_id, anny_event_id=event_id, seen=snapshot)
    if not fits_queue(work):  # long texts in many non-ASCII characters: the worker reads the booking
        work = BookingWork(booking_id=booking_id, anny_event_id=event_id)
    if event_id and await processed.is_processed(tables.processed, event_id, has_snapshot=work.seen is not None):
        return _json_answer(202, status="duplicate", event_id=event_id)
    answer = _json_answer(202, status="queued", booking_id=booking_id)
    answer.work.append(work)
    return answer


# --- Graph notifications ---------------------------------------------------------------------------


def _validation(req: func.HttpRequest) -> Answer | None:
    """Graph's handshake: echo the decoded token as plain text, never as markup."""
    token = req.params.get("validationToken")
    if token is None:
        return None
    if len(token) > MAX_VALIDATION_TOKEN:
        raise InputError("validationToken", f"longer than {MAX_VALIDATION_TOKEN} characters")
    headers = {"X-Content-Type-Options": "nosniff"}
    return Answer(func.HttpResponse(token, status_code=200, mimetype="text/plain", charset="utf-8",
                                    headers=headers))


def graph_handshake(req: func.HttpRequest) -> Answer | None:
    """Graph's validation handshake of either Graph endpoint, answered before anything else is
    opened: it needs no setting, table or token, and Graph waits only 10 s for it (a cold
    instance, or storage slow or out of reach, must not fail a subscription's creation)."""
    try:
        return _validation(req)
    except InputError as exc:
        return _refused("Graph validation", exc)


def notification_items(payload: Any) -> list[graph_wire.ChangeNotification]:
    """The notifications of a Graph POST (`graph_wire.NotificationCollection`), each checked against
    what Graph sends."""
    items = payload.get("value") if isinstance(payload, dict) else None
    if not isinstance(items, list):
        raise InputError("value", 'expected {"value": [...]}, a list of notifications')
    for index, item in enumerate(items):
        where = f"value[{index}]"
        if not isinstance(item, dict):
            raise InputError(where, "expected a notification object")
        validation.graph_subscription_id(item.get("subscriptionId"), f"{where}.subscriptionId")
        validation.client_state(item.get("clientState"), f"{where}.clientState")
        if "lifecycleEvent" in item:
            validation.lifecycle_event(item["lifecycleEvent"], f"{where}.lifecycleEvent")
        data = item.get("resourceData")
        if data is not None and not isinstance(data, dict):
            raise InputError(f"{where}.resourceData", "expected an object")
        if data and "id" in data:
            validation.graph_item_id(data["id"], f"{where}.resourceData.id")
    return items


class SubscriptionCache:
    """Subscriptions by id for the notification endpoints, with bounded table work per request.

    Found subscriptions are kept a minute and misses a few seconds. A request reads at most
    `POINT_READS` unknown ids one by one; with more, the whole subscriptions table (one entity
    per room) is read once instead, at most every `LIST_INTERVAL_S`. So a body full of invented
    ids costs one query, not one read per id.
    """

    FOUND_TTL_S = 60.0
    MISS_TTL_S = 5.0
    POINT_READS = 8
    LIST_INTERVAL_S = 5.0
    MAX_MISSES = 100_000

    def __init__(self) -> None:
        self._found: dict[str, tuple[float, Subscription]] = {}
        self._missed: dict[str, float] = {}
        self._listed_at = -float("inf")

    async def resolve(self, ids: set[str], table: SubscriptionsTable) -> dict[str, Subscription]:
        now = time.monotonic()
        known: dict[str, Subscription] = {}
        unknown: list[str] = []
        for sub_id in ids:
            found = self._found.get(sub_id)
            if found and now - found[0] < self.FOUND_TTL_S:
                known[sub_id] = found[1]
            elif now - self._missed.get(sub_id, -float("inf")) >= self.MISS_TTL_S:
                unknown.append(sub_id)
        for sub_id, sub in zip(unknown, await self._look_up(unknown, table, now), strict=True):
            if sub is not None:
                known[sub_id] = sub
            elif len(self._missed) < self.MAX_MISSES:
                self._missed[sub_id] = now
        return known

    async def _look_up(self, ids: list[str], table: SubscriptionsTable, now: float) -> list[Subscription | None]:
        if len(ids) <= self.POINT_READS:
            return list(await asyncio.gather(*(table.get_subscription(i) for i in ids)))
        if now - self._listed_at < self.LIST_INTERVAL_S:
            return [None] * len(ids)
        self._listed_at = now
        self._missed.clear()
        everything = {sub.subscription_id: sub for sub in await table.list_subscriptions()}
        for sub_id, sub in everything.items():
            self._found[sub_id] = (now, sub)
        return [everything.get(i) for i in ids]


_subscriptions = SubscriptionCache()
Verified = list[tuple[graph_wire.ChangeNotification, Subscription]]


async def _verified_items(req: func.HttpRequest, settings: Settings, tables: IngressTables
                          ) -> tuple[Verified, int]:
    """The notifications whose subscription we know and whose clientState matches; and how many were dropped."""
    items = notification_items(validation.json_body(_body(req, settings.notification_max_body_bytes)))
    subscriptions = await _subscriptions.resolve({item["subscriptionId"] for item in items}, tables.subscriptions)
    verified: Verified = []
    for item in items:
        sub = subscriptions.get(item["subscriptionId"])
        given = str(item.get("clientState") or "")
        if sub is not None and hmac.compare_digest(given.encode(), sub.client_state.encode()):
            verified.append((item, sub))
    dropped = len(items) - len(verified)
    if dropped:
        log.warning("%d of %d notifications dropped: unknown subscription or wrong clientState",
                    dropped, len(items), extra={"dropped": dropped, "received": len(items)})
    return verified, dropped


async def _graph_post(req: func.HttpRequest, settings: Settings, tables: IngressTables,
                      to_answer: Callable[[Verified, int], Answer]) -> Answer:
    """Both Graph endpoints: the validation handshake, or verified items turned into an answer."""
    handshake = _validation(req)
    if handshake:
        return handshake
    verified, dropped = await _verified_items(req, settings, tables)
    return to_answer(verified, dropped)


def _room_signals(verified: Verified, dropped: int) -> Answer:
    """A room run for each room changed, unless a run of this process holds the room and runs once
    more for it anyway (the echoes of a long initial sync's writes would otherwise fill the queue
    that live changes wait in)."""
    rooms = sorted({sub.room for _, sub in verified})
    queued = [room for room in rooms if not signal_run_here(room)]
    answer = _json_answer(202, rooms=len(rooms), received=len(verified) + dropped, dropped=dropped,
                          queued=len(queued))
    now = datetime.now(UTC).isoformat()
    answer.work.extend(RoomWork(room, signalled_at=now) for room in queued)
    return answer


def _lifecycle_work(verified: Verified, dropped: int) -> Answer:
    work = [LifecycleWork(sub.subscription_id, item["lifecycleEvent"])
            for item, sub in verified if item.get("lifecycleEvent") in LIFECYCLE_EVENTS]
    answer = _json_answer(202, accepted=len(work), received=len(verified) + dropped, dropped=dropped)
    answer.work.extend(dict.fromkeys(work))
    return answer


@_refusing("Graph notification")
async def graph_notify(req: func.HttpRequest, settings: Settings, tables: IngressTables) -> Answer:
    """Change notifications: one "room changed" signal per room, whatever the number of items."""
    return await _graph_post(req, settings, tables, _room_signals)


@_refusing("Graph lifecycle notification")
async def graph_lifecycle(req: func.HttpRequest, settings: Settings, tables: IngressTables) -> Answer:
    return await _graph_post(req, settings, tables, _lifecycle_work)
