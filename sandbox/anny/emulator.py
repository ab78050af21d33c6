"""`AnnyEmulator`: the emulated anny organisation, its HTTP app, and the in-process test API.

Every public method is safe to call from any thread: while the app is being served, the call
runs on the server's event loop (the only place state changes), otherwise directly.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import threading
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any, Concatenate, ParamSpec, TypeVar

from aiohttp import web

from sandbox.serve import thread_stack

from .api import api_middleware, api_routes
from .config import BOOKING_EVENTS, AnnyConfig
from .control import Body, ControlRoute, control_routes
from .errors import invalid
from .faults import ApiFaults
from .limits import RateLimiter
from .model import BookingDraft, Change
from .render import JsonObject, Renderer, flatten
from .seed import apply_seed
from .state import AnnyState, CustomerSpec
from .timefmt import Instant, parse_instant
from .webhooks import WebhookFaults, WebhookHub

P = ParamSpec("P")
R = TypeVar("R")
CALL_TIMEOUT_S = 30.0
PERSON_EDITS = ("start", "end", "resource", "status", "title", "description", "note", "customer_note")


def on_loop(method: Callable[Concatenate[AnnyEmulator, P], R]) -> Callable[Concatenate[AnnyEmulator, P], R]:
    """Run the method on the server's loop thread (where all state lives) and return its result."""

    @functools.wraps(method)
    def wrapper(self: AnnyEmulator, *args: P.args, **kwargs: P.kwargs) -> R:
        return self._call(functools.partial(method, self, *args, **kwargs))

    return wrapper


class AnnyEmulator:
    def __init__(self, config: AnnyConfig | None = None, **overrides: Any) -> None:
        self.config = self._initial_config = (config or AnnyConfig()).updated(**overrides)
        self.state = AnnyState(self.config)
        self.render = Renderer(self.state)
        self.hub = WebhookHub(lambda: self.config, self.state.clock)
        self.api_faults = ApiFaults()
        self.rate_limiter = RateLimiter()
        self.url: str | None = None  # set by `start_anny_emulator`
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None

    # ---- serving ---------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[api_middleware(self)], client_max_size=1024**2)
        app.add_routes(api_routes(self))
        app.add_routes(control_routes(self.control_table()))
        app.on_startup.append(self._on_startup)
        app.on_cleanup.append(self._on_cleanup)
        return app

    async def _on_startup(self, _app: web.Application) -> None:
        self._loop, self._loop_thread = asyncio.get_running_loop(), threading.get_ident()
        await self.hub.start()

    async def _on_cleanup(self, _app: web.Application) -> None:
        await self.hub.close()
        self._loop = self._loop_thread = None

    def _call(self, fn: Callable[[], R]) -> R:
        loop = self._loop
        if loop is None or threading.get_ident() == self._loop_thread:
            return fn()
        future: concurrent.futures.Future[R] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(fn())
            except BaseException as error:  # handed to the calling thread
                future.set_exception(error)

        loop.call_soon_threadsafe(run)
        try:
            return future.result(timeout=CALL_TIMEOUT_S)
        except TimeoutError:
            raise self._stuck(f"did not run {getattr(fn, 'func', fn).__name__} within {CALL_TIMEOUT_S:g} s") from None

    def _stuck(self, what: str) -> TimeoutError:
        return TimeoutError(f"the anny emulator's event loop {what}; {thread_stack(self._loop_thread)}")

    def control_table(self) -> list[ControlRoute]:
        """The control API (`/_control/...`): each route is one method of this class, with the JSON
        body (`b`) as keyword arguments and the path parameters (`p`)."""
        return [
            ("GET", "/health", lambda b, p: {"ok": True}),
            ("POST", "/reset", lambda b, p: self.reset()),
            ("GET", "/config", lambda b, p: self.config.as_dict()),
            ("PATCH", "/config", lambda b, p: self.configure(**b).as_dict()),
            ("POST", "/seed", lambda b, p: self.seed(b)),
            ("GET", "/resources", lambda b, p: self.resources()),
            ("POST", "/resources", lambda b, p: self.add_resource(**b)),
            ("POST", "/services", lambda b, p: self.add_service(**b)),
            ("POST", "/customers", lambda b, p: self.add_customer(**b)),
            ("GET", "/bookings", lambda b, p: self.bookings()),
            ("GET", "/bookings/{id}", lambda b, p: self.booking(p["id"])),
            ("POST", "/person/bookings", lambda b, p: self.person_create_booking(**b)),
            ("PATCH", "/person/bookings/{id}", lambda b, p: self.person_update_booking(p["id"], **b)),
            ("POST", "/person/bookings/{id}/cancel", lambda b, p: self.person_cancel_booking(p["id"])),
            ("DELETE", "/person/bookings/{id}", lambda b, p: self.person_delete_booking(p["id"])),
            ("POST", "/person/series", lambda b, p: self.person_create_series(**b)),
            ("POST", "/person/blockers", lambda b, p: self.person_create_blocker(**b)),
            ("GET", "/faults", lambda b, p: self.faults()),
            ("DELETE", "/faults", lambda b, p: self.clear_faults()),
            ("PUT", "/faults/api", lambda b, p: self._set_api_faults(b)),
            ("POST", "/faults/api/fail-next", lambda b, p: self.fail_next(**b)),
            ("POST", "/faults/webhooks", lambda b, p: self.set_webhook_faults(**b)),
            ("GET", "/counters", lambda b, p: self.counters()),
            ("GET", "/rate-limits", lambda b, p: self.rate_limits()),
            ("PUT", "/rate-limits", lambda b, p: self.set_rate_limits(**b)),
            ("DELETE", "/counters", lambda b, p: self.reset_counters()),
            ("GET", "/webhooks/subscriptions", lambda b, p: self.webhook_subscriptions()),
            ("POST", "/webhooks/subscriptions", lambda b, p: self.create_webhook_subscription(**b)),
            ("GET", "/webhooks/deliveries", lambda b, p: self.deliveries()),
            ("POST", "/webhooks/release", lambda b, p: {"groups": self.release_held_webhooks()}),
        ]

    def _set_api_faults(self, body: Body) -> Any:
        """`{"latency_ms": 50, "forced_status": 401}`: either key may be left out."""
        if "latency_ms" in body:
            self.set_latency(int(body["latency_ms"]))
        if "forced_status" in body:
            self.force_status(body["forced_status"])
        return self.faults()

    # ---- organisation ----------------------------------------------------------------------

    @on_loop
    def reset(self) -> None:
        """Back to as constructed: no resources, bookings, subscriptions, deliveries, faults, counters,
        and the construction-time config."""
        self.config = self.state.config = self._initial_config
        self.state.clear()
        self.hub.reset()
        self.api_faults = ApiFaults()
        self.rate_limiter.reset()

    @on_loop
    def configure(self, **changes: Any) -> AnnyConfig:
        """Change settings (see `AnnyConfig`), e.g. `configure(cancel_event="bookings.updated")`."""
        self.config = self.state.config = self.config.updated(**changes)
        return self.config

    @on_loop
    def seed(self, data: dict[str, Any]) -> dict[str, Any]:
        """Add a seed document (format in docs/emulators.md); seeding sends no webhooks."""
        return apply_seed(self, data)

    @on_loop
    def add_resource(self, name: str, **options: Any) -> JsonObject:
        """Options: timezone, parent (id or slug), slug, id, description, hidden, archived."""
        return flatten(self.render.resource(self.state.add_resource(name, **options)))

    @on_loop
    def add_service(self, name: str, **options: Any) -> JsonObject:
        """Options: price, currency, padding_before, padding_after (minutes), slug, id."""
        return flatten(self.render.service(self.state.add_service(name, **options)))

    @on_loop
    def add_customer(
        self, full_name: str, email: str, *, phone: str | None = None, id: str | None = None
    ) -> JsonObject:
        return flatten(self.render.customer(self.state.add_customer(full_name, email, phone=phone, id=id)))

    @on_loop
    def resources(self) -> list[JsonObject]:
        return [flatten(self.render.resource(r)) for r in self.state.resources.values()]

    # ---- bookings: reads -------------------------------------------------------------------

    @on_loop
    def booking(self, booking_id: str) -> JsonObject:
        """The booking as webhook `data` shows it (flat, resource nested); AnnyError 404 if missing."""
        return self.render.booking_flat(self.state.booking(booking_id))

    @on_loop
    def bookings(self) -> list[JsonObject]:
        return [self.render.booking_flat(b) for b in self.state.bookings.values()]

    # ---- bookings: a person in anny --------------------------------------------------------

    def draft(
        self,
        resource: str,
        start: Instant,
        end: Instant,
        *,
        service: str | None = None,
        customer: CustomerSpec = None,
        is_blocker: bool = False,
        **text: Any,
    ) -> BookingDraft:
        """A new booking's fields from references (resource id/slug, service id/slug/name, customer).
        Used by the person actions and the seed; call it on the server loop."""
        found = self.state.resource(resource)
        person = None if is_blocker else self.state.customer_for(customer)
        return BookingDraft(
            resource_id=found.id,
            start=parse_instant(start, found.timezone),
            end=parse_instant(end, found.timezone),
            is_blocker=is_blocker,
            service_id=None if is_blocker or service is None else self.state.service_named(service).id,
            customer_id=person.id if person else None,
            **text,
        )

    @on_loop
    def person_create_booking(
        self,
        resource: str,
        start: Instant,
        end: Instant,
        *,
        service: str = "Room booking",
        customer: CustomerSpec = None,
        status: str = "accepted",
        **text: Any,
    ) -> JsonObject:
        """A booking made in anny. `customer`: id, e-mail, or {"email", "phone"?, "name"?}.
        `text`: description, note, customer_note, title. Naive times are the resource's local time."""
        draft = self.draft(resource, start, end, service=service, customer=customer, status=status, **text)
        return self._flat_of(self._publish(self.state.create_booking(draft)))[0]

    @on_loop
    def person_create_blocker(self, resource: str, start: Instant, end: Instant, **text: Any) -> JsonObject:
        """A blocker a person created in anny. `text`: title, description, note."""
        draft = self.draft(resource, start, end, is_blocker=True, **text)
        return self._flat_of(self._publish(self.state.create_booking(draft)))[0]

    @on_loop
    def person_create_series(
        self,
        resource: str,
        start: Instant,
        end: Instant,
        count: int,
        *,
        interval_days: int = 7,
        service: str = "Room booking",
        customer: CustomerSpec = None,
        **text: Any,
    ) -> JsonObject:
        """`count` occurrences every `interval_days` from start/end. Returns {"master", "occurrences"}."""
        draft = self.draft(resource, start, end, service=service, customer=customer, **text)
        master, *occurrences = self._flat_of(
            self._publish(self.state.create_series(draft, count, timedelta(days=interval_days)))
        )
        return {"master": master, "occurrences": occurrences}

    @on_loop
    def person_update_booking(self, booking_id: str, **changes: Any) -> JsonObject:
        """Edit any booking (blockers too): start, end, resource, status, title, description, note,
        customer_note. Moving an occurrence keeps its series master spanning the series."""
        self._publish(self.state.update_booking(booking_id, self._edits(booking_id, changes)))
        return self.booking(booking_id)

    def person_move_booking(self, booking_id: str, start: Instant, end: Instant, **changes: Any) -> JsonObject:
        return self.person_update_booking(booking_id, start=start, end=end, **changes)

    @on_loop
    def person_cancel_booking(self, booking_id: str) -> JsonObject:
        """Cancel (a series master cancels its series): status canceled, canceled_at set."""
        self._publish(self.state.cancel_booking(booking_id))
        return self.booking(booking_id)

    @on_loop
    def person_delete_booking(self, booking_id: str) -> None:
        self._publish(self.state.delete_booking(booking_id))

    def _edits(self, booking_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        """Person-level changes (references, ISO strings) as state edits."""
        unknown = set(changes) - set(PERSON_EDITS)
        if unknown:
            raise invalid(f"cannot edit {', '.join(sorted(unknown))}", "/")
        edits = dict(changes)
        if "resource" in edits:
            edits["resource_id"] = self.state.resource(edits.pop("resource")).id
        zone = self.state.resources[edits.get("resource_id", self.state.booking(booking_id).resource_id)].timezone
        for name in ("start", "end"):
            if name in edits:
                edits[name] = parse_instant(edits[name], zone)
        return edits

    def _flat_of(self, changes: Iterable[Change]) -> list[JsonObject]:
        return [self.render.booking_flat(self.state.bookings[c.booking.id]) for c in changes]

    # ---- webhooks --------------------------------------------------------------------------

    def _publish(self, changes: list[Change]) -> list[Change]:
        """Send the webhooks for these changes (not waiting for them)."""
        self._deliveries_for(changes)
        return changes

    def _deliveries_for(self, changes: list[Change]) -> list[asyncio.Task[None]]:
        events = {"created": "bookings.created", "updated": "bookings.updated", "deleted": "bookings.deleted"}
        events["canceled"] = self.config.cancel_event
        tasks: list[asyncio.Task[None]] = []
        for change in changes:
            data = self.render.booking_flat(change.booking)
            tasks += self.hub.publish(events[change.kind], data, self.state.clock.now())
        return tasks

    async def announce(self, changes: list[Change]) -> None:
        """An API write's webhooks: awaited before its response under `deliver_before_response`."""
        tasks = self._deliveries_for(changes)
        if self.hub.faults.deliver_before_response:
            await asyncio.gather(*tasks, return_exceptions=True)

    @on_loop
    def create_webhook_subscription(
        self,
        url: str,
        events: Iterable[str] = BOOKING_EVENTS,
        *,
        name: str = "sync",
        custom_headers: dict[str, str] | None = None,
        is_active: bool = True,
    ) -> JsonObject:
        """Like `POST /api/v1/webhook-subscriptions`; the result carries `id` and `signing_key`."""
        attributes = {"url": url, "events": list(events), "name": name, "is_active": is_active}
        attributes["custom_headers"] = dict(custom_headers or {})
        return flatten(self.hub.subscribe(attributes).jsonapi())

    @on_loop
    def webhook_subscriptions(self) -> list[JsonObject]:
        return [flatten(s.jsonapi()) for s in self.hub.subscriptions.values()]

    @on_loop
    def deliveries(self) -> list[JsonObject]:
        """Webhook deliveries made: url, event, event_id, booking_id, status, attempts, responses, payload."""
        return [d.summary() for d in self.hub.deliveries]

    @on_loop
    def set_webhook_faults(self, **faults: Any) -> JsonObject:
        """duplicate (K), reorder_batch (N), delay_ms, drop_next (N), deliver_before_response (bool)."""
        current = vars(self.hub.faults) | faults
        self.hub.faults = WebhookFaults(**current)
        return vars(self.hub.faults)

    @on_loop
    def release_held_webhooks(self) -> int:
        """Send the deliveries held by `reorder_batch` now (newest first); how many groups started."""
        return len(self.hub.release_held())

    async def settle(self, seconds: float = 10.0) -> None:
        """Wait (from any event loop) until no webhook delivery is being sent or retried."""
        loop = self._loop
        if loop is None:
            return
        drained = self.hub.drained()
        try:
            async with asyncio.timeout(seconds):
                if loop is asyncio.get_running_loop():
                    await drained
                else:
                    await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(drained, loop))
        except TimeoutError:
            pending = [f"{d.event} to {d.url} ({d.attempts} attempts: {d.responses})"
                       for d in list(self.hub.deliveries) if d.status == "pending"]
            raise self._stuck(f"still had webhook deliveries in flight after {seconds:g} s: {pending}") from None

    def wait_settled(self, seconds: float = 10.0) -> None:
        """`settle` for synchronous code (not on the server's own loop thread)."""
        if self._loop is not None:
            asyncio.run_coroutine_threadsafe(self.hub.drained(), self._loop).result(seconds)

    # ---- API faults and counters -----------------------------------------------------------

    @on_loop
    def set_latency(self, ms: int) -> None:
        self.api_faults.latency_ms = ms

    @on_loop
    def fail_next(self, status: int, count: int = 1, route: str | None = None, retry_after: int | None = None) -> None:
        """The next `count` API calls (to `route`, e.g. "POST /api/v1/bookings", or any) answer `status`."""
        self.api_faults.fail_next(status, count, route, retry_after)

    @on_loop
    def force_status(self, status: int | None) -> None:
        """Answer every API call with 401 or 403 until `force_status(None)`."""
        if status not in (None, 401, 403):
            raise invalid("forced status must be 401, 403 or null", "/status")
        self.api_faults.forced_status = status

    @on_loop
    def clear_faults(self) -> None:
        """Remove API and webhook faults (held deliveries stay held until released)."""
        self.api_faults.clear()
        self.hub.faults = WebhookFaults()

    @on_loop
    def faults(self) -> JsonObject:
        return {"api": self.api_faults.describe(), "webhooks": vars(self.hub.faults)}

    @on_loop
    def counters(self) -> dict[str, int]:
        """API calls per route, e.g. {"GET /api/v1/bookings/{id}": 3}."""
        return dict(self.api_faults.counters)

    @on_loop
    def reset_counters(self) -> None:
        self.api_faults.counters.clear()

    # ---- rate limits -----------------------------------------------------------------------

    @on_loop
    def set_rate_limits(self, enabled: bool = True, **limits: Any) -> JsonObject:
        """Switch anny's rate limits on or off; `limits`: reads_per_window, writes_per_window,
        rate_window_s, rate_window ("rolling"/"fixed"), identical_per_second. Clears the windows."""
        self.configure(rate_limits=enabled, **limits)
        self.rate_limiter.reset()
        return self.rate_limits()

    @on_loop
    def rate_limits(self) -> JsonObject:
        """The limits, what the current window holds, and the 429s sent ("429", "429 reads", …)."""
        return self.rate_limiter.describe(self.config.limits, self.config.rate_limits)

    @on_loop
    def throttled_count(self) -> int:
        """429s sent for the rate limits (injected faults not included)."""
        return self.rate_limiter.counters["429"]
