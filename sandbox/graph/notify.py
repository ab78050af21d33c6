"""Outgoing POSTs: validation handshakes, change and lifecycle notifications.

Notifications are collected for a short batching interval and POSTed per URL as
`{"value": [...]}`, in background tasks, retried with exponential backoff on non-2xx
answers and connection errors. Faults: drop the next N, deliver each POST K times,
hold the next N and deliver them in reverse order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import asdict, dataclass, field

import aiohttp


@dataclass
class NotifyConfig:
    batch_interval: float = 0.05
    max_attempts: int = 4
    retry_delay: float = 0.5  # doubled after each failed attempt
    timeout: float = 10.0


@dataclass
class NotifyFaults:
    drop_next: int = 0
    duplicate: int = 1
    reorder_next: int = 0
    before_response: bool = False


@dataclass
class Delivery:
    """One POST made (or not made) by the emulator."""

    kind: str  # change | lifecycle | validation
    url: str
    status: int | None  # None: no answer (connection error, timeout) or dropped
    attempt: int
    count: int
    body: dict | None
    error: str | None = None
    at: float = field(default_factory=time.time)

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Outgoing:
    kind: str
    url: str
    item: dict


class Notifier:
    def __init__(self, config: NotifyConfig) -> None:
        self.config = config
        self.faults = NotifyFaults()
        self.deliveries: list[Delivery] = []
        self.dropped: list[Outgoing] = []
        self._pending: list[Outgoing] = []
        self._held: list[Outgoing] = []
        self._tasks: set[asyncio.Task] = set()
        self._flush_handle: asyncio.TimerHandle | None = None
        self._session: aiohttp.ClientSession | None = None

    async def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return self._session

    async def close(self) -> None:
        self.cancel_pending()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def cancel_pending(self) -> None:
        """Drop queued and held notifications and stop deliveries in progress."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        for task in list(self._tasks):
            task.cancel()
        self._pending.clear()
        self._held.clear()

    def reset(self) -> None:
        self.faults = NotifyFaults()
        self.deliveries.clear()
        self.dropped.clear()

    # intake -----------------------------------------------------------------------------
    def enqueue(self, outgoing: list[Outgoing]) -> None:
        """Queue notifications for the next batch (needs the running loop to deliver)."""
        self._pending.extend(self._reorder([o for o in outgoing if self._keep(o)]))
        loop = running_loop()
        if self._pending and self._flush_handle is None and loop is not None:
            self._flush_handle = loop.call_later(self.config.batch_interval, self._flush)

    async def publish(self, outgoing: list[Outgoing], wait: bool = False) -> None:
        """Queue notifications; with `wait`, deliver them now and return once answered."""
        if not wait:
            self.enqueue(outgoing)
            return
        await self._send_groups(self._reorder([o for o in outgoing if self._keep(o)]))

    def _keep(self, outgoing: Outgoing) -> bool:
        if self.faults.drop_next > 0:
            self.faults.drop_next -= 1
            self.dropped.append(outgoing)
            self.deliveries.append(Delivery(outgoing.kind, outgoing.url, None, 0, 1, None, "dropped"))
            return False
        return True

    def _reorder(self, ready: list[Outgoing]) -> list[Outgoing]:
        """Hold notifications while reorder_next > 0; release them reversed, one POST each."""
        if self.faults.reorder_next <= 0:
            return ready
        taken = ready[: self.faults.reorder_next]
        self._held.extend(taken)
        self.faults.reorder_next -= len(taken)
        rest = ready[len(taken) :]
        if self.faults.reorder_next == 0:
            self.release_held()
        return rest

    def release_held(self) -> None:
        held, self._held = self._held[::-1], []
        for outgoing in held:
            self._spawn(self._post(outgoing.kind, outgoing.url, [outgoing.item]))

    def _flush(self) -> None:
        self._flush_handle = None
        batch, self._pending = self._pending, []
        self._spawn(self._send_groups(batch))

    def _spawn(self, coro) -> None:  # type: ignore[no-untyped-def]
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_groups(self, batch: list[Outgoing]) -> None:
        groups: dict[tuple[str, str], list[dict]] = {}
        for outgoing in batch:
            groups.setdefault((outgoing.kind, outgoing.url), []).append(outgoing.item)
        posts = [self._post(kind, address, items) for (kind, address), items in groups.items()]
        await asyncio.gather(*posts)

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait until everything queued has been delivered (or given up), at most `timeout` s."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._settle(), timeout)

    async def _settle(self) -> None:
        while self._flush_handle is not None or self._tasks:
            if pending := [task for task in self._tasks if not task.done()]:  # see anny's WebhookHub.drained
                await asyncio.gather(*pending, return_exceptions=True)
            else:
                await asyncio.sleep(self.config.batch_interval / 2)

    # delivery ---------------------------------------------------------------------------
    async def _post(self, kind: str, address: str, items: list[dict]) -> None:
        body = {"value": items}
        for _ in range(max(1, self.faults.duplicate)):
            await self._post_with_retry(kind, address, body)

    async def _post_with_retry(self, kind: str, address: str, body: dict) -> None:
        delay = self.config.retry_delay
        for attempt in range(1, self.config.max_attempts + 1):
            status, error = await self._post_once(address, body)
            self.deliveries.append(Delivery(kind, address, status, attempt, len(body["value"]), body, error))
            if status is not None and 200 <= status < 300:
                return
            if attempt < self.config.max_attempts:
                await asyncio.sleep(delay)
                delay *= 2

    async def _post_once(self, address: str, body: dict) -> tuple[int | None, str | None]:
        session = await self.session()
        timeout = aiohttp.ClientTimeout(total=self.config.timeout)
        headers = {"Content-Type": "application/json; charset=utf-8"}
        try:
            async with session.post(address, data=json.dumps(body), headers=headers, timeout=timeout) as answer:
                await answer.read()
                return answer.status, None
        except (aiohttp.ClientError, TimeoutError) as exc:
            return None, f"{type(exc).__name__}: {exc}"

    async def validate(self, address: str, token: str, timeout: float) -> str | None:
        """The validation handshake: POST `address` (already carrying the token); None if the
        endpoint answered 200, text/plain, body == token within `timeout`, else the reason."""
        session = await self.session()
        status: int | None = None
        try:
            async with session.post(address, timeout=aiohttp.ClientTimeout(total=timeout)) as answer:
                status, text = answer.status, await answer.text()
                problem = _validation_problem(answer.status, answer.content_type, text, token)
        except TimeoutError:
            problem = f"the endpoint did not answer within {timeout:g} s"
        except aiohttp.ClientError as exc:
            problem = f"the endpoint could not be reached ({type(exc).__name__}: {exc})"
        self.deliveries.append(Delivery("validation", address, status, 1, 0, None, problem))
        return problem


def running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _validation_problem(status: int, content_type: str, text: str, token: str) -> str | None:
    if status != 200:
        return f"the endpoint answered {status}, expected 200"
    if content_type != "text/plain":
        return f"the endpoint answered Content-Type '{content_type}', expected text/plain"
    if text != token:
        return "the endpoint's body was not the validation token"
    return None
