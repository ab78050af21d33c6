"""End-to-end fixtures: the function app under the local runner, Azurite and both emulators."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from devhost.azurite import Azurite
from devhost.stack import Emulators, LocalStack, start_stack
from sync.admin import activate
from sync.services import Services
from sync.settings import Settings, StorageSettings
from sync.worker import Worker
from tests.state_tables import AllTables

BERLIN = ZoneInfo("Europe/Berlin")
ROOM = "room.alpha@contoso.example"


@pytest.fixture(scope="session")
def emulators() -> Iterator[Emulators]:
    started = Emulators.start()
    yield started
    started.stop()


@pytest.fixture
def stack(azurite: Azurite, emulators: Emulators, table_prefix: str, request: pytest.FixtureRequest
          ) -> Iterator[LocalStack]:
    emulators.reset()
    settings = getattr(request, "param", {}) or {}
    running = start_stack(azurite, emulators, table_prefix, **settings)
    yield running
    running.stop()


@pytest.fixture
async def state(stack: LocalStack) -> AsyncIterator[AllTables]:
    """The app's tables, read from the test's own event loop."""
    storage = StorageSettings(connection_string=stack.azurite.connection_string)
    async with AllTables(storage, stack.env["TABLE_PREFIX"]) as store:
        yield store


@dataclass
class World:
    """A mapped room: anny parent resource with one child, and its room mailbox."""

    stack: LocalStack
    state: AllTables
    resource: str
    child: str
    room: str = ROOM

    def day(self, offset: int = 2) -> date:
        return datetime.now(BERLIN).date() + timedelta(days=offset)

    def at(self, offset: int, hour: int, minute: int = 0) -> str:
        """A local (Europe/Berlin) time, as a person types it into anny."""
        return datetime.combine(self.day(offset), datetime.min.time()).replace(hour=hour, minute=minute).isoformat()

    def utc(self, offset: int, hour: int, minute: int = 0) -> datetime:
        local = datetime.combine(self.day(offset), datetime.min.time(), BERLIN).replace(hour=hour, minute=minute)
        return local.astimezone(ZoneInfo("UTC"))

    async def settle(self, rounds: int = 12) -> None:
        """Deliver every webhook and notification and run every queued work item, until quiet."""
        quiet = 0
        for _ in range(rounds):
            before = (len(self.stack.anny.deliveries()), len(self.stack.graph.deliveries()))
            await self.stack.anny.settle()
            await self.stack.graph.wait_deliveries()
            await self.stack.drain()
            after = (len(self.stack.anny.deliveries()), len(self.stack.graph.deliveries()))
            quiet = quiet + 1 if before == after else 0
            if quiet == 2:  # a notification may still sit in the emulator's batching interval once
                return
            await asyncio.sleep(0.06)
        raise AssertionError("the system did not settle")

    async def activate(self) -> dict:
        """What the admin's `python -m sync activate` does: subscribe the rooms, sync both ways."""
        services = await Services.open(Settings.from_env(self.stack.env))
        try:
            answer = await activate(Worker(services))
        finally:
            await services.close()
        await self.settle()  # the initial sync runs in the background, from the backfill queue
        return answer

    async def admin(self, command: str, **params: str) -> Any:
        """An admin command as the local CLI runs it (the same dispatcher as the admin API)."""
        return await run_admin(self.stack, command, **params)

    async def admin_status(self) -> dict:
        """What `python -m sync status` shows."""
        return await self.admin("status")

    def mirror_events(self) -> list[dict]:
        return [e for e in self.stack.graph.events(self.room) if "anny" in (e.get("categories") or [])]


async def run_admin(stack: LocalStack, command: str, **params: str) -> Any:
    return await stack.admin(command, **params)


@pytest.fixture
async def world(stack: LocalStack, state: AllTables) -> World:
    parent = stack.anny.add_resource("Room Alpha", timezone="Europe/Berlin")
    child = stack.anny.add_resource("Desk A1", timezone="Europe/Berlin", parent=parent["id"])
    stack.anny.add_service("Meeting")
    stack.graph.add_room(ROOM, "Room Alpha")
    await run_admin(stack, "rules.add", anny_resource=parent["id"], room=ROOM)
    stack.subscribe_anny_webhooks()
    mapped = World(stack, state, parent["id"], child["id"])
    await mapped.activate()
    stack.graph.clear_deliveries()
    stack.graph.reset_counters()
    return mapped


def crash_once(monkeypatch: pytest.MonkeyPatch, owner: type, method: str = "_record") -> dict:
    """Injected crash: the first call of `owner.method` dies (after the remote write, before the
    link is recorded, for the flows' `_record`). Returns a counter of crashes left."""
    original = getattr(owner, method)
    crashes = {"left": 1}

    async def crashing(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        if crashes["left"]:
            crashes["left"] -= 1
            raise RuntimeError(f"injected crash in {owner.__name__}.{method}")
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(owner, method, crashing)
    return crashes
