"""The Graph emulator: state, request pipeline, in-process control methods, and startup.

In-process use (tests, benchmarks)::

    emulator, server = start_graph_emulator(concurrency=4)
    emulator.add_room("room1@contoso.com", "Room 1")
    client_base_url = emulator.base_url        # "<server.url>/v1.0"
    emulator.person_create_event("room1@contoso.com", subject="Standup", start=..., end=...)
    server.stop()

Every public method is safe to call from any thread: it runs on the server's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable, Iterator
from dataclasses import fields, replace
from datetime import timedelta
from typing import Any, ParamSpec, TypeVar

from aiohttp import web

from . import api_calendar, api_mailbox, api_subscriptions, batch, calendar, control
from .calendar import Change
from .clock import Clock
from .context import Context
from .errors import GraphError
from .eventbody import check_body, render, stored_view
from .httpglue import to_graph_request, to_web_response
from .limits import Counters, Fault, Faults, Latency, ThrottleConfig, Throttler
from .model import Mailbox, Room
from .notify import Notifier, NotifyConfig, Outgoing, running_loop
from .person import event_body, snake_keys
from .request import GraphRequest, GraphResponse
from .routes import Route, Router
from .state import GraphConfig, State
from .timefmt import instant

log = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")


def on_loop(method: Callable[P, R]) -> Callable[P, R]:
    """Run a method on the emulator's event loop when called from another thread."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        emulator: GraphEmulator = args[0]  # type: ignore[assignment]
        loop = emulator.loop
        if loop is None or running_loop() is loop:
            return method(*args, **kwargs)

        async def call() -> R:
            return method(*args, **kwargs)

        return asyncio.run_coroutine_threadsafe(call(), loop).result(30)

    return wrapper


def _calendar_alias(template: str) -> tuple[str, ...]:
    return (template.replace("/users/{mailbox}/", "/users/{mailbox}/calendar/", 1),)


class GraphEmulator:
    def __init__(self, config: GraphConfig | None = None, **overrides: Any) -> None:
        self.initial_config = replace(config or GraphConfig(), **overrides)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.server: Any = None
        self.url: str | None = None  # server root, e.g. http://127.0.0.1:40123 (control API: url + "/_control")
        self.base_url: str | None = None  # what Graph clients use: url + "/v1.0"
        self.clock = Clock()
        self.counters = Counters()
        self.faults = Faults()
        self.router = Router(self._routes())
        self.notifier = Notifier(NotifyConfig())
        self._configure(self.initial_config)

    def _configure(self, config: GraphConfig) -> None:
        self.config = replace(config)
        self.state = State()
        if config.delta_token_ttl_seconds is not None:
            self.state.delta.ttl = timedelta(seconds=config.delta_token_ttl_seconds)
        self.latency = Latency(config.latency_ms)
        self.throttler = Throttler(
            ThrottleConfig(config.concurrency, config.budget, config.window_seconds, config.concurrency_retry_after)
        )
        self.notifier.config = NotifyConfig(
            config.notification_batch_interval,
            config.notification_max_attempts,
            config.notification_retry_delay,
            config.notification_timeout,
        )

    def _routes(self) -> list[Route]:
        events, view, subs = "/users/{mailbox}/events", "/users/{mailbox}/calendarView", "/subscriptions"
        categories, instances = "/users/{mailbox}/outlook/masterCategories", events + "/{id}/instances"
        return [
            Route("GET", events, api_calendar.list_events, _calendar_alias(events)),
            Route("POST", events, api_calendar.create_event, _calendar_alias(events)),
            Route("GET", events + "/{id}", api_calendar.get_event, _calendar_alias(events + "/{id}")),
            Route("PATCH", events + "/{id}", api_calendar.update_event, _calendar_alias(events + "/{id}")),
            Route("DELETE", events + "/{id}", api_calendar.delete_event, _calendar_alias(events + "/{id}")),
            Route("GET", instances, api_calendar.instances, _calendar_alias(instances)),
            Route("GET", view, api_calendar.calendar_view, _calendar_alias(view)),
            Route("GET", view + "/delta", api_calendar.delta, _calendar_alias(view + "/delta")),
            Route("GET", "/users/{mailbox}", api_mailbox.get_user),
            Route("GET", categories, api_mailbox.list_categories),
            Route("POST", categories, api_mailbox.create_category),
            Route("GET", categories + "/{id}", api_mailbox.get_category),
            Route("PATCH", categories + "/{id}", api_mailbox.update_category),
            Route("DELETE", categories + "/{id}", api_mailbox.delete_category),
            Route("GET", "/places/microsoft.graph.room", api_mailbox.list_rooms, ("/places/graph.room",)),
            Route("GET", subs, api_subscriptions.list_all),
            Route("POST", subs, api_subscriptions.create),
            Route("GET", subs + "/{id}", api_subscriptions.get_one),
            Route("PATCH", subs + "/{id}", api_subscriptions.update),
            Route("DELETE", subs + "/{id}", api_subscriptions.delete),
            Route("POST", subs + "/{id}/reauthorize", api_subscriptions.reauthorize),
            Route("POST", "/$batch", lambda ctx: batch.run(ctx, self.dispatch)),
        ]

    # request pipeline -------------------------------------------------------------------
    async def dispatch(self, request: GraphRequest) -> GraphResponse:
        """Count, authenticate, route, inject faults, throttle, delay, serve, notify."""
        try:
            route, params = self.router.find(request)
        except GraphError as error:
            self.counters.add(f"{request.method} <unmatched>")
            return GraphResponse.of_error(self._auth_error(request) or error)
        self.counters.add(route.key)
        try:
            auth = self._auth_error(request)
            if auth is not None:
                raise auth
            ctx = Context(request, params, self.state, self.config, self.clock, self.notifier)
            if route.scoped:
                ctx.mailbox_or_none = self.state.mailbox(params["mailbox"])
            return await self._serve(route, ctx)
        except GraphError as error:
            return GraphResponse.of_error(error)
        except Exception as exc:  # a bug in the emulator: answer like Graph's 500
            log.exception("graph emulator failed on %s %s", request.method, "/".join(request.segments))
            return GraphResponse.of_error(GraphError(500, "InternalServerError", f"{type(exc).__name__}: {exc}"))

    @staticmethod
    def _auth_error(request: GraphRequest) -> GraphError | None:
        if request.bearer():
            return None
        return GraphError(401, "InvalidAuthenticationToken", "Access token is empty.")

    async def _serve(self, route: Route, ctx: Context) -> GraphResponse:
        mailbox = ctx.mailbox_or_none.key if ctx.mailbox_or_none else None
        fault = self.faults.take(route.key, mailbox)
        if fault is not None and not fault.after_write:
            raise fault.error()
        if mailbox is not None:
            self.throttler.enter(mailbox, self.clock.now().timestamp())
        try:
            delay = self.latency.for_route(route.key)
            if delay > 0:
                await asyncio.sleep(delay / 1000)
            response = await route.handler(ctx)
        finally:
            if mailbox is not None:
                self.throttler.leave(mailbox)
        await self.notifier.publish(self._outgoing(ctx.changes), wait=self.notifier.faults.before_response)
        if fault is not None:
            raise fault.error()
        return response

    def _outgoing(self, changes: list[Change]) -> list[Outgoing]:
        now, tenant = self.clock.now(), self.config.tenant_id
        return [
            api_subscriptions.change_notification(sub, change, tenant)
            for change in changes
            for sub in self.state.subscriptions.for_mailbox(change.mailbox.key, now)
            if sub.wants(change.change_type)
        ]

    def _notify_later(self, changes: list[Change]) -> None:
        self.notifier.enqueue(self._outgoing(changes))

    # aiohttp ----------------------------------------------------------------------------
    def app(self) -> web.Application:
        """The aiohttp application: `/_control/...` plus Graph under any path (`/v1.0/...`)."""
        app = web.Application(client_max_size=8 * 1024 * 1024)
        control.register(app, self)
        app.router.add_route("*", "/{tail:.*}", self._http)
        app.on_startup.append(self._on_startup)
        app.on_cleanup.append(self._on_cleanup)
        return app

    async def _http(self, request: web.Request) -> web.StreamResponse:
        return to_web_response(await self.dispatch(await to_graph_request(request)))

    async def _on_startup(self, _app: web.Application) -> None:
        self.loop = asyncio.get_running_loop()

    async def _on_cleanup(self, _app: web.Application) -> None:
        await self.notifier.close()
        self.loop = None

    # seeding and reset ------------------------------------------------------------------
    @on_loop
    def reset(self) -> None:
        """Forget everything (mailboxes, events, subscriptions, tokens, faults, counters,
        deliveries) and restore the configuration given at construction."""
        self.notifier.cancel_pending()
        self.notifier.reset()
        self.faults.clear()
        self.counters.reset()
        self.clock.reset()
        self._configure(self.initial_config)

    @on_loop
    def add_room(self, email: str, display_name: str | None = None, **room_fields: Any) -> Room:
        """A room mailbox, listed by `/places/microsoft.graph.room` (fields: capacity, building, …)."""
        room_fields = snake_keys(room_fields)
        known = {f.name for f in fields(Room)}
        room = Room(email=email, display_name=display_name or email.split("@")[0], **_pick(room_fields, known))
        self.state.add(Mailbox(address=email, display_name=room.display_name, room=room))
        return room

    @on_loop
    def add_mailbox(self, email: str, display_name: str | None = None) -> Mailbox:
        """A user mailbox (not a room)."""
        return self.state.add(Mailbox(address=email, display_name=display_name or email.split("@")[0]))

    @on_loop
    def seed(self, data: dict) -> dict:
        """Load `{"rooms": [...], "mailboxes": [...], "events": [...]}` (see docs/emulators.md)."""
        for room in data.get("rooms") or []:
            room = dict(room)
            self.add_room(room.pop("email", None) or room.pop("emailAddress"), room.pop("displayName", None), **room)
        for box in data.get("mailboxes") or []:
            self.add_mailbox(box.get("email") or box["emailAddress"], box.get("displayName"))
        created = [self.person_create_event(**dict(event)) for event in data.get("events") or []]
        return {"rooms": len(self.state.rooms()), "mailboxes": len(self.state.mailboxes), "events": created}

    # a person in Outlook ----------------------------------------------------------------
    @on_loop
    def person_create_event(self, mailbox: str, **fields_: Any) -> dict:
        """Create an event (or series, with `recurrence=`) as a person would in Outlook."""
        box = self.state.mailbox(mailbox)
        body = check_body(event_body(fields_, box, creating=True), creating=True)
        event, changes = calendar.create(box, body, self.clock.now())
        self._notify_later(changes)
        return stored_view(event, box)

    @on_loop
    def person_update_event(self, mailbox: str, event_id: str, **fields_: Any) -> dict:
        """Edit an event, a whole series, or (with an occurrence id) one occurrence."""
        box = self.state.mailbox(mailbox)
        body = check_body(event_body(fields_, box, creating=False), creating=False)
        _inst, changes = calendar.update(box, event_id, body, self.clock.now())
        self._notify_later(changes)
        return self._raw(box, event_id)

    @on_loop
    def person_cancel_event(self, mailbox: str, event_id: str, *, remove: bool = False) -> None:
        """Cancel: the event stays with `isCancelled: true`, or with `remove` it is deleted."""
        box = self.state.mailbox(mailbox)
        changes = calendar.delete(box, event_id) if remove else calendar.cancel(box, event_id, self.clock.now())
        self._notify_later(changes)

    @on_loop
    def person_delete_event(self, mailbox: str, event_id: str) -> None:
        self.person_cancel_event(mailbox, event_id, remove=True)

    @on_loop
    def person_update_occurrence(self, mailbox: str, series_id: str, occurrence: Any, **fields_: Any) -> dict:
        """Edit one occurrence (making it an exception). `occurrence`: an occurrence id, a date
        (that day's occurrence) or its original start (naive = the series' wall time)."""
        return self.person_update_event(mailbox, self.occurrence_id(mailbox, series_id, occurrence), **fields_)

    @on_loop
    def person_cancel_occurrence(
        self, mailbox: str, series_id: str, occurrence: Any, *, remove: bool = True
    ) -> None:
        """Delete one occurrence (default) or keep it as a cancelled exception (`remove=False`)."""
        self.person_cancel_event(mailbox, self.occurrence_id(mailbox, series_id, occurrence), remove=remove)

    @on_loop
    def person_delete_occurrence(self, mailbox: str, series_id: str, occurrence: Any) -> None:
        self.person_cancel_occurrence(mailbox, series_id, occurrence, remove=True)

    @on_loop
    def occurrence_id(self, mailbox: str, series_id: str, occurrence: Any) -> str:
        series, _ = calendar.resolve(self.state.mailbox(mailbox), series_id)
        return calendar.occurrence_of(series, occurrence)

    # reading back -----------------------------------------------------------------------
    def _raw(self, box: Mailbox, item_id: str) -> dict:
        event, original = calendar.resolve(box, item_id)
        if original is None:
            return stored_view(event, box)
        return render(calendar.instance(box, item_id), box, "UTC", expand=[])

    @on_loop
    def events(self, mailbox: str) -> list[dict]:
        """Stored events (singles and series masters) in UTC, with every extended property,
        transactionId, exceptions and deleted occurrences."""
        box = self.state.mailbox(mailbox)
        return [stored_view(event, box) for event in box.events.values()]

    @on_loop
    def event(self, mailbox: str, event_id: str) -> dict:
        return self._raw(self.state.mailbox(mailbox), event_id)

    @on_loop
    def calendar_view(self, mailbox: str, start: Any, end: Any, time_zone: str = "UTC") -> list[dict]:
        """What calendarView would return (all pages), rendered in `time_zone`."""
        box = self.state.mailbox(mailbox)
        found = calendar.view(box, instant(str(start)), instant(str(end)))
        return [render(inst, box, time_zone) for inst in found]

    @on_loop
    def categories(self, mailbox: str) -> list[dict]:
        return [category.to_graph() for category in self.state.mailbox(mailbox).categories]

    # subscriptions and delta ------------------------------------------------------------
    @on_loop
    def subscriptions(self) -> list[dict]:
        return [sub.to_graph() for sub in self.state.subscriptions.active(self.clock.now())]

    @on_loop
    def fire_lifecycle(self, subscription_id: str, event: str) -> None:
        """POST a lifecycle notification (reauthorizationRequired, subscriptionRemoved, missed);
        subscriptionRemoved also deletes the subscription."""
        sub = self.state.subscriptions.get(subscription_id, self.clock.now())
        self.notifier.enqueue([api_subscriptions.lifecycle_notification(sub, event, self.config.tenant_id)])
        if event == "subscriptionRemoved":
            del self.state.subscriptions.items[sub.id]

    @on_loop
    def expire_subscription(self, subscription_id: str) -> None:
        """Expire now: no more notifications; Graph then answers 404 for it."""
        sub = self.state.subscriptions.get(subscription_id, self.clock.now())
        sub.expiration = self.clock.now()

    @on_loop
    def expire_delta_tokens(self, mailbox: str = "*") -> int:
        """Invalidate every delta/skip token of a mailbox ("*": all): next use answers 410."""
        key = "*" if mailbox == "*" else self.state.mailbox(mailbox).key
        return self.state.delta.expire(key)

    @on_loop
    def advance_clock(self, seconds: float) -> None:
        """Move the emulator's clock (subscription expiry, budget windows, token age)."""
        self.clock.advance(seconds)

    # faults, limits, counters -----------------------------------------------------------
    @on_loop
    def add_fault(self, status: int, route: str = "*", **options: Any) -> Fault:
        """Answer `status` (429/500/503/504) for matching requests: `count=N` (the next N) or
        `rate=0.1` with `seed`; `mailbox`, `retry_after` (seconds, None for no header),
        `after_write` (serve first, then fail), `code`. `route` is an fnmatch pattern over
        keys like "POST /users/{mailbox}/events"."""
        return self.faults.add(Fault(status=int(status), route=route, **snake_keys(options)))

    @on_loop
    def list_faults(self) -> list[dict]:
        return [fault.to_json() for fault in self.faults.rules]

    @on_loop
    def clear_faults(self) -> None:
        self.faults.clear()

    @on_loop
    def set_latency(self, ms: float, route: str | None = None) -> None:
        """Delay every request (or those matching the `route` pattern) by `ms` milliseconds."""
        if route is None:
            self.latency.default_ms = float(ms)
        else:
            self.latency.by_route[route] = float(ms)

    @on_loop
    def set_throttling(self, **limits: Any) -> None:
        """Change concurrency, budget, window_seconds or concurrency_retry_after."""
        _assign(self.throttler.config, limits, "throttling setting")

    @on_loop
    def throttled_counts(self) -> dict[str, int]:
        """429s sent for Graph's own limits (per-mailbox budget, MailboxConcurrency); injected faults not included."""
        return dict(self.throttler.refused)

    @on_loop
    def call_counts(self) -> dict[str, int]:
        """Calls per "METHOD /template" plus "total" (every request received, answered or not)."""
        return self.counters.snapshot()

    @on_loop
    def reset_counters(self) -> None:
        self.counters.reset()

    @on_loop
    def set_delta_faults(self, omit_removals: int = 0) -> dict:
        """The next `omit_removals` deletions are never reported by any delta round, as real
        Graph drops some (microsoft-graph-docs #11728, #3121: deletes missing from delta)."""
        self.state.delta.omit_removals = int(omit_removals)
        return {"omit_removals": self.state.delta.omit_removals}

    # notification faults and deliveries -------------------------------------------------
    @on_loop
    def set_notification_faults(self, **faults: Any) -> dict:
        """drop_next=N, duplicate=K, reorder_next=N (hold N, deliver reversed),
        before_response=True (a write's notification is delivered before its response)."""
        _assign(self.notifier.faults, faults, "notification fault")
        return vars(self.notifier.faults).copy()

    @on_loop
    def set_notification_delivery(self, **settings: Any) -> None:
        """Change batch_interval, max_attempts, retry_delay (doubling) or timeout (seconds)."""
        _assign(self.notifier.config, settings, "notification setting")

    @on_loop
    def release_held_notifications(self) -> None:
        self.notifier.release_held()

    @on_loop
    def deliveries(self, kind: str | None = None) -> list[dict]:
        """POSTs made: kind (change|lifecycle|validation), url, status, attempt, count, body, error."""
        return [d.to_json() for d in self.notifier.deliveries if kind in (None, d.kind)]

    @on_loop
    def clear_deliveries(self) -> None:
        self.notifier.deliveries.clear()

    async def wait_deliveries(self, timeout: float = 5.0) -> None:
        """Wait (from any event loop) until queued notifications are delivered or given up."""
        if self.loop is None or running_loop() is self.loop:
            await self.notifier.drain(timeout)
            return
        future = asyncio.run_coroutine_threadsafe(self.notifier.drain(timeout), self.loop)
        await asyncio.wrap_future(future)


def _assign(target: object, values: dict, what: str) -> None:
    """Set known dataclass fields from keyword arguments, converted to the field's type."""
    for name, value in snake_keys(values).items():
        if name.startswith("_") or not hasattr(target, name):
            raise ValueError(f"unknown {what} {name!r}")
        setattr(target, name, type(getattr(target, name))(value))


def _pick(values: dict, allowed: set[str]) -> dict:
    unknown = set(values) - allowed
    if unknown:
        raise ValueError(f"unknown room fields {sorted(unknown)}")
    return values


def start_graph_emulator(*, port: int = 0, **config: Any) -> tuple[GraphEmulator, Any]:
    """Start on a loopback port (default: a free one) in a background thread: (emulator, BackgroundServer).
    Clients use `emulator.base_url` (`<server.url>/v1.0`); stop with `server.stop()`."""
    from sandbox.serve import BackgroundServer

    emulator = GraphEmulator(**config)
    server = BackgroundServer(emulator.app(), port=port).start()
    emulator.server, emulator.url, emulator.base_url = server, server.url, f"{server.url}/v1.0"
    return emulator, server


@contextlib.contextmanager
def running_graph_emulator(**config: Any) -> Iterator[tuple[GraphEmulator, Any]]:
    """`with running_graph_emulator() as (graph, server):` … `graph.base_url` …; stopped on exit."""
    emulator, server = start_graph_emulator(**config)
    try:
        yield emulator, server
    finally:
        server.stop()
