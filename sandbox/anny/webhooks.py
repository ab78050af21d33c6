"""Webhook subscriptions and deliveries: signed POSTs with retries, and injectable delivery faults.

Runs on the server's event loop. Deliveries made before the server runs wait in a backlog
and go out when it starts.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import secrets
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from .config import BOOKING_EVENTS, AnnyConfig
from .errors import invalid, not_found
from .render import JsonObject, resource_object
from .timefmt import Clock, utc_stamp

SUBSCRIPTION_TYPE = "webhook-subscriptions"
SUBSCRIPTION_FIELDS = ("name", "url", "events", "custom_headers", "is_active")


@dataclass
class Subscription:
    id: str
    name: str
    url: str
    events: list[str]
    custom_headers: dict[str, str]
    is_active: bool
    signing_key: str
    created_at: datetime
    updated_at: datetime
    consecutive_failures: int = 0

    def jsonapi(self) -> JsonObject:
        attributes = {name: getattr(self, name) for name in (*SUBSCRIPTION_FIELDS, "signing_key")}
        attributes |= {"created_at": utc_stamp(self.created_at), "updated_at": utc_stamp(self.updated_at)}
        return resource_object(SUBSCRIPTION_TYPE, self.id, attributes)


@dataclass
class WebhookFaults:
    duplicate: int = 1  # send every delivery this many times (same body, same event_id)
    reorder_batch: int = 0  # hold deliveries until this many are held, then send them newest first
    delay_ms: int = 0  # wait this long before a delivery's first attempt
    drop_next: int = 0  # silently drop the next N deliveries
    deliver_before_response: bool = False  # an API write answers only after its webhooks were delivered


@dataclass
class Delivery:
    id: int
    subscription_id: str
    url: str
    event: str
    event_id: str
    booking_id: str
    body: bytes
    headers: dict[str, str]
    copy: int = 1
    status: str = "pending"  # pending | held | delivered | failed | dropped
    attempts: int = 0
    responses: list[int | str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        record = {k: v for k, v in asdict(self).items() if k not in ("body", "headers")}
        return record | {"payload": json.loads(self.body)}


def _check_subscription(attributes: dict[str, Any]) -> None:
    url = attributes.get("url")
    if "url" in attributes and not (isinstance(url, str) and urlsplit(url).scheme in ("http", "https")):
        raise invalid("url must be an http(s) URL", "/data/attributes/url")
    events = attributes.get("events")
    if "events" in attributes and not (isinstance(events, list) and events and all(isinstance(e, str) for e in events)):
        raise invalid("events must be a non-empty list of event names", "/data/attributes/events")
    headers = attributes.get("custom_headers")
    if "custom_headers" in attributes and not (
        isinstance(headers, dict) and all(isinstance(v, str) for v in headers.values())
    ):
        raise invalid("custom_headers must map header names to strings", "/data/attributes/custom_headers")
    if "is_active" in attributes and not isinstance(attributes["is_active"], bool):
        raise invalid("is_active must be a boolean", "/data/attributes/is_active")


class WebhookHub:
    def __init__(self, config: Callable[[], AnnyConfig], clock: Clock) -> None:
        self._config = config
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._backlog: list[list[Delivery]] = []
        self.reset()

    def reset(self) -> None:
        for task in self._tasks:
            task.cancel()
        self._tasks = set()
        self._backlog = []
        self._held: list[Delivery] = []
        self._ids = itertools.count(9000)
        self._delivery_ids = itertools.count(1)
        self.subscriptions: dict[str, Subscription] = {}
        self.deliveries: list[Delivery] = []
        self.faults = WebhookFaults()

    async def start(self) -> None:
        self._session = aiohttp.ClientSession()
        backlog, self._backlog = self._backlog, []
        self._launch(backlog)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def drained(self) -> None:
        """Return once no delivery is being sent or retried (held ones, see `release_held`, do not count)."""
        # Only tasks not done yet: a finished task leaves `_tasks` through a done-callback the loop
        # runs later, and on Python 3.13 awaiting `gather` of finished tasks does not yield to the
        # loop, so waiting on them again would spin forever without letting that callback run.
        while pending := [task for task in self._tasks if not task.done()]:
            await asyncio.gather(*pending, return_exceptions=True)

    # ---- subscriptions ---------------------------------------------------------------------

    def subscribe(self, attributes: dict[str, Any]) -> Subscription:
        if "url" not in attributes:
            raise invalid("url is required", "/data/attributes/url")
        attributes = {"name": "", "events": list(BOOKING_EVENTS), "custom_headers": {}, "is_active": True} | {
            k: v for k, v in attributes.items() if k in SUBSCRIPTION_FIELDS
        }
        _check_subscription(attributes)
        now = self._clock.now()
        ident = next(str(n) for n in self._ids if str(n) not in self.subscriptions)
        subscription = Subscription(
            id=ident, signing_key=secrets.token_hex(32), created_at=now, updated_at=now, **attributes
        )
        self.subscriptions[ident] = subscription
        return subscription

    def subscription(self, ident: str) -> Subscription:
        if ident not in self.subscriptions:
            raise not_found("webhook subscription", ident)
        return self.subscriptions[ident]

    def update_subscription(self, ident: str, attributes: dict[str, Any]) -> Subscription:
        subscription = self.subscription(ident)
        changes = {k: v for k, v in attributes.items() if k in SUBSCRIPTION_FIELDS}
        _check_subscription(changes)
        for name, value in changes.items():
            setattr(subscription, name, value)
        subscription.updated_at = self._clock.now()
        subscription.consecutive_failures = 0
        return subscription

    def unsubscribe(self, ident: str) -> None:
        self.subscription(ident)
        del self.subscriptions[ident]

    # ---- deliveries ------------------------------------------------------------------------

    def publish(self, event: str, data: JsonObject, occurred_at: datetime) -> list[asyncio.Task[None]]:
        """Deliver one event to every active subscription that wants it; returns the sending tasks."""
        event_id = str(uuid.uuid4())
        groups: list[list[Delivery]] = []
        for sub in self.subscriptions.values():
            if sub.is_active and event in sub.events:
                copies = self._copies(sub, self._envelope(sub, event, event_id, data, occurred_at))
                self.deliveries.extend(copies)
                groups.extend(self._route(copies))
        return self._launch(groups)

    def _envelope(
        self, sub: Subscription, event: str, event_id: str, data: JsonObject, occurred_at: datetime
    ) -> JsonObject:
        return {
            "event": event,
            "timestamp": utc_stamp(occurred_at),
            "event_id": event_id,
            "webhook_id": sub.id,
            "triggered_at": utc_stamp(self._clock.now()),
            "data": data,
        }

    def _copies(self, sub: Subscription, envelope: JsonObject) -> list[Delivery]:
        body = json.dumps(envelope).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "anny-webhooks (emulator)",
            "x-anny-event": envelope["event"],
            "x-anny-timestamp": str(int(self._clock.now().timestamp())),
            **sub.custom_headers,
        }
        signature_header = self._config().signature_header
        if signature_header:
            headers[signature_header] = hmac.new(sub.signing_key.encode(), body, hashlib.sha256).hexdigest()
        return [
            Delivery(
                id=next(self._delivery_ids),
                subscription_id=sub.id,
                url=sub.url,
                event=envelope["event"],
                event_id=envelope["event_id"],
                booking_id=str(envelope["data"].get("id")),
                body=body,
                headers=headers,
                copy=n,
            )
            for n in range(1, max(1, self.faults.duplicate) + 1)
        ]

    def _route(self, copies: list[Delivery]) -> list[list[Delivery]]:
        """What to send now (groups, each sent in order), after the drop and reorder faults."""
        if self.faults.drop_next > 0:
            self.faults.drop_next -= 1
            self._mark(copies, "dropped")
            return []
        if self.faults.reorder_batch > 0:
            self._held.extend(self._mark(copies, "held"))
            return [self._unhold()] if len(self._held) >= self.faults.reorder_batch else []
        return [copies]

    @staticmethod
    def _mark(deliveries: list[Delivery], status: str) -> list[Delivery]:
        for delivery in deliveries:
            delivery.status = status
        return deliveries

    def _unhold(self) -> list[Delivery]:
        batch, self._held = self._held[::-1], []
        return self._mark(batch, "pending")

    def release_held(self) -> list[asyncio.Task[None]]:
        """Send the held deliveries now, newest first."""
        return self._launch([self._unhold()])

    def _launch(self, groups: list[list[Delivery]]) -> list[asyncio.Task[None]]:
        """Start sending each group in order; without a running server, keep them for `start`."""
        groups = [group for group in groups if group]
        if self._session is None:
            self._backlog.extend(groups)
            return []
        tasks = [asyncio.get_running_loop().create_task(self._send_group(group)) for group in groups]
        for task in tasks:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return tasks

    async def _send_group(self, group: list[Delivery]) -> None:
        if self.faults.delay_ms:
            await asyncio.sleep(self.faults.delay_ms / 1000)
        for delivery in group:
            await self._deliver(delivery)

    async def _deliver(self, delivery: Delivery) -> None:
        config = self._config()
        for attempt in range(config.webhook_retries + 1):
            if attempt:
                await asyncio.sleep(config.retry_backoff_s * attempt)
            if await self._attempt(delivery, config.webhook_timeout_s):
                delivery.status = "delivered"
                self._record_outcome(delivery.subscription_id, ok=True)
                return
        delivery.status = "failed"
        self._record_outcome(delivery.subscription_id, ok=False)

    async def _attempt(self, delivery: Delivery, seconds: float) -> bool:
        assert self._session is not None
        delivery.attempts += 1
        try:
            async with self._session.post(
                delivery.url,
                data=delivery.body,
                headers=delivery.headers,
                timeout=aiohttp.ClientTimeout(total=seconds),
            ) as response:
                delivery.responses.append(response.status)
                return 200 <= response.status < 300
        except (aiohttp.ClientError, TimeoutError) as error:
            delivery.responses.append(type(error).__name__)
            return False

    def _record_outcome(self, subscription_id: str, *, ok: bool) -> None:
        subscription = self.subscriptions.get(subscription_id)
        if subscription is None:
            return
        subscription.consecutive_failures = 0 if ok else subscription.consecutive_failures + 1
        limit = self._config().deactivate_after_failures
        if limit is not None and subscription.consecutive_failures >= limit:
            subscription.is_active = False
