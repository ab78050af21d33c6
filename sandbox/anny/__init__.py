"""An emulator of the anny Admin API (JSON:API) with webhooks, a control API and fault injection.

    emu, server = start_anny_emulator(token="t", organization_id="org")
    room = emu.add_resource("Room 1", timezone="Europe/Berlin")
    emu.person_create_booking(room["id"], "2026-11-24T10:00", "2026-11-24T11:00", service="Meeting")
    server.stop()

See docs/emulators.md (section "anny emulator").
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sandbox.serve import BackgroundServer

from .config import BOOKING_EVENTS, AnnyConfig
from .emulator import AnnyEmulator
from .errors import AnnyError

__all__ = [
    "BOOKING_EVENTS",
    "AnnyConfig",
    "AnnyEmulator",
    "AnnyError",
    "running_anny_emulator",
    "start_anny_emulator",
]


def start_anny_emulator(
    config: AnnyConfig | None = None, *, host: str = "127.0.0.1", port: int = 0, **overrides: Any
) -> tuple[AnnyEmulator, BackgroundServer]:
    """Serve a new emulator on a free loopback port in a background thread; `server.stop()` ends it."""
    emulator = AnnyEmulator(config, **overrides)
    server = BackgroundServer(emulator.app(), host=host, port=port).start()
    emulator.url = server.url
    return emulator, server


@contextmanager
def running_anny_emulator(
    config: AnnyConfig | None = None, **overrides: Any
) -> Iterator[tuple[AnnyEmulator, BackgroundServer]]:
    emulator, server = start_anny_emulator(config, **overrides)
    try:
        yield emulator, server
    finally:
        server.stop()
