"""Run an aiohttp application on a free loopback port in a background thread.

Used by the emulators (in-process pytest fixtures and benchmarks) and by the local
functions runner, so every server here starts, reports its URL and stops the same way.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import threading
import traceback
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from aiohttp import web

T = TypeVar("T")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on `host`."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def thread_stack(ident: int | None) -> str:
    """Where a thread is now, innermost call last; says so when the thread has ended."""
    frame = sys._current_frames().get(ident) if ident is not None else None
    if frame is None:
        return "its thread has ended"
    return "its thread is at:\n" + "".join(traceback.format_stack(frame))


class BackgroundServer:
    """An aiohttp app served from its own event loop in a daemon thread."""

    def __init__(self, app: web.Application, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = app
        self.host = host
        self.port = port or free_port(host)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=f"server:{self.port}", daemon=True)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> BackgroundServer:
        self._thread.start()
        self.call(self._start())
        return self

    async def _start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()

    def call(self, coro: Awaitable[T], timeout: float = 30) -> T:
        """Run a coroutine on the server's loop and wait for its result."""
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)  # type: ignore[arg-type]
        return future.result(timeout)

    def responsive(self, seconds: float = 5.0) -> bool:
        """Whether the server's loop runs a callback within `seconds` (not: its thread is blocked or gone)."""
        if not self._thread.is_alive() or self.loop.is_closed():
            return False
        ran = threading.Event()
        self.loop.call_soon_threadsafe(ran.set)
        return ran.wait(seconds)

    def where(self) -> str:
        """What the loop's thread is doing now (for the message of a call that timed out)."""
        return thread_stack(self._thread.ident)

    def abandon(self) -> None:
        """Give up on a server whose loop stopped running callbacks, without waiting for it: should
        the loop run again, it closes the server and stops (its thread is a daemon either way)."""
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.loop.create_task, self._shutdown())

    async def _shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self.loop.stop()

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        self.loop.call_soon_threadsafe(fn, *args)

    def stop(self) -> None:
        if self._runner is not None:
            self.call(self._runner.cleanup())
            self._runner = None
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_forever(app: web.Application, host: str, port: int) -> None:
    """Standalone mode (`python -m sandbox.graph --port P`): block until interrupted."""
    web.run_app(app, host=host, port=port, access_log=None, print=lambda *_: None)
