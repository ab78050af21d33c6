"""A small local stand-in for the Azure Functions host (dev and test only).

The real host (Core Tools) cannot be installed on these machines, so this runner drives
`function_app.app` through its real triggers, read from `app.get_functions()`:

* HTTP triggers served on a loopback port under `/api/<route>`, auth levels honoured
  (function key as `?code=` or `x-functions-key`; admin level needs the master key);
* queue triggers fed from Azurite with the host's semantics: base64 messages, dequeue
  count, a 10-minute lease renewed while the function runs, retry after `visibilityTimeout`,
  `<queue>-poison` after `maxDequeueCount` (host.json), up to `batchSize` messages at once,
  the next batch fetched as soon as no more than `newBatchThreshold` are still running, and
  an idle listener's randomised exponential backoff from 100 ms to `maxPollingInterval` —
  which an output-binding write wakes only on the instance that made it (see `QueueListener`);
* timer triggers on their NCRONTAB schedule, or fired on demand;
* queue output bindings written to Azurite after the function returns.
"""

from __future__ import annotations

import asyncio
import hmac
import inspect
import json
import logging
import os
import random
import re
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import azure.functions as func
from aiohttp import web
from azure.core.exceptions import ResourceExistsError
from azure.functions.queue import QueueMessage
from azure.functions.timer import TimerRequest
from azure.storage.queue import BinaryBase64DecodePolicy, BinaryBase64EncodePolicy
from azure.storage.queue.aio import QueueClient

from devhost.logs import http_call_line
from sandbox.serve import BackgroundServer

log = logging.getLogger("devhost")
T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class HostKeys:
    """Function keys (`default` and per function) and the master key."""

    master: str = "local-master-key"
    default: str = "local-function-key"
    per_function: dict[str, str] = field(default_factory=dict)

    def is_master(self, given: str | None) -> bool:
        return bool(given) and _same(str(given).encode(errors="replace"), self.master)

    def allows(self, level: str, function_name: str, given: str | None) -> bool:
        """Whether `given` opens a function of this auth level; every comparison takes constant time."""
        if level == "anonymous":
            return True
        if not given:
            return False
        if self.is_master(given):
            return True
        offered = given.encode(errors="replace")
        candidates = [self.default, self.per_function.get(function_name) or ""]
        return level == "function" and any([_same(offered, key) for key in candidates if key])


def _same(offered: bytes, key: str) -> bool:
    return hmac.compare_digest(offered, key.encode())


@dataclass
class QueueOptions:
    """The host.json `extensions.queues` values the runner honours."""

    max_dequeue_count: int = 5
    visibility_timeout: float = 0.0  # how long a failed message stays invisible before its retry
    batch_size: int = 16
    max_polling_interval: float = 2.0
    new_batch_threshold: int | None = None  # the host's default: batchSize / 2
    # Whether every function runs in one host instance (Consumption, Premium, Dedicated, `func
    # start`). On Flex Consumption (the deployment target) functions scale per function, HTTP
    # triggers on instances of their own: a webhook's queue write cannot wake the queue listener.
    shared_instance: bool = False
    # Not a host.json setting: the host receives each message invisible for 10 minutes and, while
    # its function runs, renews that at half-time (QueueListener's `_visibilityTimeout`); tests shorten it.
    message_lease_s: int = 600

    @property
    def refill_at(self) -> int:
        return self.batch_size // 2 if self.new_batch_threshold is None else self.new_batch_threshold

    @classmethod
    def from_host_json(cls, path: Path = ROOT / "host.json") -> QueueOptions:
        queues = json.loads(path.read_text()).get("extensions", {}).get("queues", {})
        return cls(
            max_dequeue_count=int(queues.get("maxDequeueCount", 5)),
            visibility_timeout=_timespan(queues.get("visibilityTimeout", "00:00:00")),
            batch_size=int(queues.get("batchSize", 16)),
            max_polling_interval=_timespan(queues.get("maxPollingInterval", "00:01:00")),
            new_batch_threshold=int(queues["newBatchThreshold"]) if "newBatchThreshold" in queues else None,
        )


class PollingBackoff:
    """The WebJobs SDK's `RandomizedExponentialBackoffStrategy` as its queue listener uses it:
    100 ms after a poll that found messages (or was woken), else 100 ms plus 100 ms × 2^(n-1)
    (±20 %) after the n-th empty poll in a row, capped at `maxPollingInterval`."""

    MINIMUM = 0.1
    RANDOMISATION = 0.2

    def __init__(self, maximum: float, rng: random.Random | None = None) -> None:
        self.maximum = max(maximum, self.MINIMUM)
        self.current = 0.0
        self._exponent = 0
        self._rng = rng or random.Random()

    def next_delay(self, found_messages: bool) -> float:
        if found_messages:
            self.current, self._exponent = self.MINIMUM, 1
        elif self.current != self.maximum:
            interval = self.MINIMUM
            if self._exponent > 0:
                factor = self._rng.uniform(1 - self.RANDOMISATION, 1 + self.RANDOMISATION)
                interval += factor * 2 ** (self._exponent - 1) * self.MINIMUM
            if interval < self.maximum:
                self.current, self._exponent = interval, self._exponent + 1
            else:
                self.current = self.maximum
        return self.current


def _timespan(value: str) -> float:
    hours, minutes, seconds = value.split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


class _Out(func.Out[Any]):
    def __init__(self) -> None:
        self._value: Any = None

    def set(self, val: Any) -> None:
        self._value = val

    def get(self) -> Any:
        return self._value


@dataclass
class _Function:
    name: str
    fn: Callable[..., Any]
    trigger: dict[str, Any]
    outputs: list[dict[str, Any]]


@dataclass
class _HttpRoute:
    function: _Function
    pattern: re.Pattern[str]
    methods: set[str]
    auth_level: str


def disabled_setting(function_name: str) -> str:
    """The app setting that disables a function on an instance."""
    return f"AzureWebJobs.{function_name}.Disabled"


class LocalFunctionsHost:
    """Loads a FunctionApp and drives its triggers as the Functions host would."""

    def __init__(self, app: func.FunctionApp, connection_string: str, *,
                 keys: HostKeys | None = None, queues: QueueOptions | None = None,
                 env: Mapping[str, str] | None = None, poll_queues: bool = True,
                 run_timers: bool = False, port: int = 0) -> None:
        self.keys = keys or HostKeys()
        self.queue_options = queues or QueueOptions.from_host_json()
        self.connection_string = connection_string
        self._env = env if env is not None else os.environ
        self._poll = poll_queues
        self._run_timers = run_timers
        self.functions = [self._describe(f) for f in indexed_functions(app)]
        self.routes = [self._route(f) for f in self.functions if f.trigger["type"] == "httpTrigger"]
        web_app = web.Application(client_max_size=64 * 1024 * 1024)
        web_app.router.add_route("*", "/{tail:.*}", self._handle_http)
        self.server = BackgroundServer(web_app, port=port)
        self._tasks: list[asyncio.Task[None]] = []
        self._queue_clients: dict[str, QueueClient] = {}
        self._in_flight = 0
        self._wake: dict[str, asyncio.Event] = {}  # queue function name → its listener's wake-up
        self.invocations: dict[str, int] = {f.name: 0 for f in self.functions}
        self.failures: dict[str, int] = {f.name: 0 for f in self.functions}

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> LocalFunctionsHost:
        self.server.start()
        self.server.call(self._start_background())
        return self

    def disabled(self, name: str) -> bool:
        """The app setting `AzureWebJobs.<name>.Disabled` (true or 1; also with `_` for `.`, as
        environments without dots in names have it), as the host reads it: the function's trigger
        does not run on this instance; an HTTP one answers 404 to all but the master key."""
        setting = disabled_setting(name)
        value = self._env.get(setting) or self._env.get(setting.replace(".", "_")) or ""
        return value.strip().lower() in ("true", "1")

    async def _start_background(self) -> None:
        for f in self.functions:
            if self.disabled(f.name):
                continue
            if f.trigger["type"] == "queueTrigger":
                await self.ensure_queue(self._resolve(f.trigger["queueName"]))
                if self._poll:
                    self._tasks.append(asyncio.create_task(self._poll_queue(f)))
            if f.trigger["type"] == "timerTrigger" and self._run_timers:
                self._tasks.append(asyncio.create_task(self._timer_loop(f)))

    def stop(self) -> None:
        self.server.call(self._stop_background())
        self.server.stop()

    async def _stop_background(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for client in self._queue_clients.values():
            await client.close()

    def __enter__(self) -> LocalFunctionsHost:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def call(self, coro: Awaitable[T], timeout: float = 60) -> T:
        """Run a coroutine on the host's event loop (where the app's clients live) and wait."""
        return self.server.call(coro, timeout)

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await a coroutine on the host's loop from another event loop (async tests)."""
        future = asyncio.run_coroutine_threadsafe(coro, self.server.loop)
        return await asyncio.wrap_future(future)

    # -- metadata ------------------------------------------------------------------------------

    @staticmethod
    def _describe(function: Any) -> _Function:
        bindings = [b.get_dict_repr() for b in function.get_bindings()]
        for b in bindings:
            b["direction"] = getattr(b["direction"], "name", b["direction"])
        trigger = next(b for b in bindings if b["type"].endswith("Trigger"))
        outputs = [b for b in bindings if b["direction"] == "OUT" and b["type"] == "queue"]
        return _Function(function.get_function_name(), function.get_user_function(), trigger, outputs)

    def _route(self, f: _Function) -> _HttpRoute:
        template = f.trigger.get("route") or f.name
        methods = {getattr(m, "value", m).upper() for m in f.trigger.get("methods") or ["GET", "POST"]}
        level = getattr(f.trigger.get("authLevel"), "value", f.trigger.get("authLevel") or "function")
        return _HttpRoute(f, _route_regex(template), methods, str(level).lower())

    def _resolve(self, value: str) -> str:
        """Binding expressions `%Setting%` read app settings, as the host does."""
        def lookup(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in self._env:
                raise KeyError(f"binding expression %{name}% names an app setting that is not set")
            return self._env[name]

        return re.sub(r"%([^%]+)%", lookup, value)

    # -- HTTP -------------------------------------------------------------------------------------

    async def _handle_http(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if not path.startswith("/api/"):
            return web.Response(status=404)
        tail = path[len("/api/"):].removesuffix("/")  # ASP.NET routing: a trailing slash matches too
        # The methods are a route constraint: a request whose method no route takes matches none (404).
        matches = [(r, m) for r in self.routes if (m := r.pattern.fullmatch(tail)) and request.method in r.methods]
        if not matches:
            return web.Response(status=404)
        route, match = matches[0]
        header = request.headers.get("x-functions-key")
        key = header if header is not None else request.query.get("code")  # the header wins, even empty
        if not self.keys.allows(route.auth_level, route.function.name, key):
            return web.Response(status=401)
        if self.disabled(route.function.name) and not self.keys.is_master(key):
            return web.Response(status=404)  # a disabled function still runs for the master key
        # The host hands the worker a body only when the request says its length (not when chunked).
        body = await request.read() if request.content_length else b""
        params = dict(request.query)  # every query parameter reaches the function, `code` too
        http_request = func.HttpRequest(
            request.method, str(request.url), headers=dict(request.headers), params=params,
            route_params={k: v for k, v in match.groupdict().items() if v is not None}, body=body)
        outputs = {o["name"]: _Out() for o in route.function.outputs}
        try:
            response = await self._invoke(route.function, {route.function.trigger["name"]: http_request,
                                                            **outputs})
            await self._write_outputs(route.function, outputs)
        except Exception:
            log.exception("function %s failed", route.function.name)
            return web.Response(status=500)
        answer = _to_aiohttp(response)
        log.info(http_call_line(route.function.name, request.method, request.path, answer.status,
                                _body_bytes(answer), answer.content_type))
        return answer

    async def _invoke(self, f: _Function, kwargs: dict[str, Any]) -> Any:
        self.invocations[f.name] += 1
        wanted = inspect.signature(f.fn).parameters
        result = f.fn(**{k: v for k, v in kwargs.items() if k in wanted})
        if inspect.isawaitable(result):
            result = await result
        return result

    # -- queues -------------------------------------------------------------------------------------

    async def ensure_queue(self, name: str) -> QueueClient:
        client = self._queue_clients.get(name)
        if client is None:
            client = QueueClient.from_connection_string(
                self.connection_string, name, message_encode_policy=BinaryBase64EncodePolicy(),
                message_decode_policy=BinaryBase64DecodePolicy())
            try:
                await client.create_queue()
            except ResourceExistsError:
                pass
            self._queue_clients[name] = client
        return client

    async def _write_outputs(self, f: _Function, outputs: dict[str, _Out]) -> None:
        for binding in f.outputs:
            value = outputs[binding["name"]].get()
            if value is None:
                continue
            queue = self._resolve(binding["queueName"])
            client = await self.ensure_queue(queue)
            for item in value if isinstance(value, list) else [value]:
                data = item if isinstance(item, bytes) else str(item).encode()
                await client.send_message(data)
            self._notify(f, queue)

    def _notify(self, writer: _Function, queue: str) -> None:
        """The WebJobs SDK's `SharedQueueWatcher`: the queue output binding, which the host (not the
        Python worker) writes, wakes the listeners of that queue in the same host instance."""
        for listener in self.functions:
            if listener.trigger["type"] != "queueTrigger" or self._resolve(listener.trigger["queueName"]) != queue:
                continue
            if self.queue_options.shared_instance or listener is writer:
                self._wake.setdefault(listener.name, asyncio.Event()).set()

    async def _poll_queue(self, f: _Function) -> None:
        """The WebJobs SDK's `QueueListener`: fetch up to `batchSize`; while messages come, fetch
        again once no more than `newBatchThreshold` run; when none come, back off (woken early
        by `_notify`)."""
        client = await self.ensure_queue(self._resolve(f.trigger["queueName"]))
        wake = self._wake.setdefault(f.name, asyncio.Event())
        backoff = PollingBackoff(self.queue_options.max_polling_interval)
        running: set[asyncio.Task[None]] = set()
        try:
            await self._listen(f, client, wake, backoff, running)
        finally:
            for task in running:
                task.cancel()

    async def _listen(self, f: _Function, client: QueueClient, wake: asyncio.Event, backoff: PollingBackoff,
                      running: set[asyncio.Task[None]]) -> None:
        found_since_delay = False
        while True:
            wake.clear()
            try:
                messages = await self._receive(client)
            except Exception:
                log.exception("polling queue of %s failed", f.name)
                messages = []
            for message in messages:
                running.add(asyncio.create_task(self._run_counted(f, client, message)))
            if messages:
                found_since_delay = True
                while len(running) > self.queue_options.refill_at:
                    done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                    running -= done
                continue
            delay = backoff.next_delay(found_since_delay)
            found_since_delay = False
            try:
                await asyncio.wait_for(wake.wait(), delay)
            except TimeoutError:
                pass
            running -= {task for task in running if task.done()}

    async def _receive(self, client: QueueClient) -> list[Any]:
        options = self.queue_options
        return [m async for m in client.receive_messages(
            messages_per_page=options.batch_size, max_messages=options.batch_size,
            visibility_timeout=options.message_lease_s)]

    async def _run_counted(self, f: _Function, client: QueueClient, message: Any) -> None:
        self._in_flight += 1
        try:
            await self._run_message(f, client, message, max(int(self.queue_options.visibility_timeout), 0) or None)
        finally:
            self._in_flight -= 1

    async def process_queue_once(self, function_name: str) -> int:
        """Receive one batch for a queue-triggered function and run it; returns messages handled."""
        f = self._function(function_name)
        client = await self.ensure_queue(self._resolve(f.trigger["queueName"]))
        messages = await self._receive(client)
        await asyncio.gather(*(self._run_counted(f, client, m) for m in messages))
        return len(messages)

    async def _run_message(self, f: _Function, client: QueueClient, message: Any,
                           visibility: int | None) -> None:
        body = message.content
        if message.dequeue_count > self.queue_options.max_dequeue_count:
            # The host's QueueProcessor.BeginProcessingMessageAsync: its attempts were lost (an
            # instance stopped while running it), not failed; it goes to the poison queue unrun.
            log.warning("message %s dequeued %s times: moved to the poison queue without running %s",
                        message.id, message.dequeue_count, f.name)
            await self._poison(client, message)
            return
        # azure-functions leaves QueueMessage.__init__ unannotated.
        queue_message = QueueMessage(  # type: ignore[no-untyped-call]
            id=message.id, body=body, dequeue_count=message.dequeue_count, insertion_time=message.inserted_on,
            expiration_time=message.expires_on, pop_receipt=message.pop_receipt)
        outputs = {o["name"]: _Out() for o in f.outputs}
        try:
            async with self._leased(client, message):
                await self._invoke(f, {f.trigger["name"]: queue_message, **outputs})
            await self._write_outputs(f, outputs)
        except Exception:
            self.failures[f.name] += 1
            log.exception("function %s failed on message %s (dequeue count %s)", f.name, message.id,
                          message.dequeue_count)
            if message.dequeue_count >= self.queue_options.max_dequeue_count:
                await self._poison(client, message)
            else:
                await client.update_message(message, visibility_timeout=visibility or 0)
            return
        await client.delete_message(message)

    async def _poison(self, client: QueueClient, message: Any) -> None:
        poison = await self.ensure_queue(f"{client.queue_name}-poison")
        await poison.send_message(message.content)
        await client.delete_message(message)

    @asynccontextmanager
    async def _leased(self, client: QueueClient, message: Any) -> AsyncIterator[None]:
        """The host's `UpdateQueueMessageVisibilityCommand`: while the function runs, the message's
        invisibility is renewed at half its lease, and its new pop receipt kept for the delete. A
        renewal under way when the function ends is let finish (its receipt is the valid one)."""
        lease = self.queue_options.message_lease_s
        done = asyncio.Event()

        async def renew() -> None:
            while True:
                try:
                    await asyncio.wait_for(done.wait(), lease / 2)
                    return
                except TimeoutError:
                    pass
                try:
                    renewed = await client.update_message(message, visibility_timeout=lease)
                    message.pop_receipt, message.next_visible_on = renewed.pop_receipt, renewed.next_visible_on
                except Exception:
                    log.warning("renewing the lease of message %s failed", message.id, exc_info=True)

        renewing = asyncio.create_task(renew())
        try:
            yield
        finally:
            done.set()
            await renewing

    async def drain(self, timeout: float = 30) -> None:
        """Process queue-triggered functions until their queues are empty (tests, on demand); a
        disabled function's queue is another instance's."""
        queue_functions = [f for f in self.functions
                           if f.trigger["type"] == "queueTrigger" and not self.disabled(f.name)]
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            handled = 0
            if not self._poll:
                for f in queue_functions:
                    handled += await self.process_queue_once(f.name)
            if not handled and not self._in_flight and await self._all_empty(queue_functions):
                return
            await asyncio.sleep(0 if handled else 0.02)
        raise TimeoutError("queues did not drain in time")

    async def _all_empty(self, functions: list[_Function]) -> bool:
        for f in functions:
            client = await self.ensure_queue(self._resolve(f.trigger["queueName"]))
            if (await client.get_queue_properties()).approximate_message_count:
                return False
        return True

    async def queue_messages(self, queue: str) -> list[bytes]:
        """Peek at up to 32 visible messages of a queue (decoded)."""
        client = await self.ensure_queue(queue)
        return [m.content for m in await client.peek_messages(max_messages=32)]

    # -- timers -------------------------------------------------------------------------------------

    async def fire_timer(self, function_name: str, past_due: bool = False) -> None:
        """Run a timer-triggered function now (its queue outputs are written as usual)."""
        f = self._function(function_name)
        outputs = {o["name"]: _Out() for o in f.outputs}
        await self._invoke(f, {f.trigger["name"]: TimerRequest(past_due=past_due), **outputs})
        await self._write_outputs(f, outputs)

    async def _timer_loop(self, f: _Function) -> None:
        from croniter import croniter

        schedule = croniter(self._resolve(f.trigger["schedule"]), datetime.now(UTC), second_at_beginning=True)
        while True:
            due = schedule.get_next(datetime)
            await asyncio.sleep(max(0.0, (due - datetime.now(UTC)).total_seconds()))
            try:
                await self.fire_timer(f.name)
            except Exception:
                self.failures[f.name] += 1
                log.exception("timer function %s failed", f.name)

    def _function(self, name: str) -> _Function:
        for f in self.functions:
            if f.name == name:
                return f
        raise KeyError(f"no function named {name}")


_indexed: weakref.WeakKeyDictionary[func.FunctionApp, list[Any]] = weakref.WeakKeyDictionary()


def indexed_functions(app: func.FunctionApp) -> list[Any]:
    """`get_functions()` validates names and refuses a second call, so index each app once."""
    cached = _indexed.get(app)
    if cached is None:
        cached = _indexed[app] = app.get_functions()
    return cached


def _route_regex(template: str) -> re.Pattern[str]:
    """Turn a Functions route template (`a/{id}`, `{id:int}`, `{id?}`, `{*rest}`) into a regex."""
    parts = []
    for piece in re.split(r"(\{[^}]+\})", template.strip("/")):
        if piece.startswith("{"):
            name = piece[1:-1].split(":")[0]
            if name.startswith("*"):
                parts.append(f"(?P<{name[1:]}>.*)")
            else:
                parts.append(f"(?P<{name.rstrip('?')}>[^/]+){'?' if name.endswith('?') else ''}")
        else:
            parts.append(re.escape(piece))
    return re.compile("".join(parts), re.IGNORECASE)  # ASP.NET routing ignores case


def _body_bytes(answer: web.Response) -> bytes:
    """The body `_to_aiohttp` set: bytes or text, never a streamed payload."""
    return bytes(answer.body) if isinstance(answer.body, (bytes, bytearray)) else b""


def _to_aiohttp(response: Any) -> web.Response:
    if response is None:
        return web.Response(status=204)
    if isinstance(response, func.HttpResponse):
        headers = dict(response.headers)
        if response.mimetype and "content-type" not in {k.lower() for k in headers}:
            charset = f"; charset={response.charset}" if response.charset else ""
            headers["Content-Type"] = f"{response.mimetype}{charset}"
        return web.Response(status=response.status_code, body=response.get_body(), headers=headers)
    return web.Response(status=200, text=str(response))
