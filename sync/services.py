"""The app's long-lived clients, created once per event loop from the validated settings."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from sync.anny import AnnyClient
from sync.budget import Limits, OrgBudget
from sync.graph import GraphGateway
from sync.logs import put_context_in_messages, quiet_sdk_loggers
from sync.queues import WorkQueues
from sync.settings import Settings
from sync.state import (
    BudgetTable,
    LinksTable,
    ProcessedEvents,
    Repositories,
    RoomsTable,
    RulesTable,
    StatusTable,
    SubscriptionsTable,
    Tables,
)

STATUS_TTL_S = 10.0  # activation and deactivation reach every instance within this time


@dataclass
class Services:
    """The clients, and one repository per table (`sync.state`): each caller is given the ones it uses."""

    settings: Settings
    tables: Tables
    anny: AnnyClient
    graph: GraphGateway
    budget: OrgBudget
    queues: WorkQueues
    categories_ensured: set[str] = field(default_factory=set)
    _active_since: float | None = None
    rules: RulesTable = field(init=False)
    links: LinksTable = field(init=False)
    subscriptions: SubscriptionsTable = field(init=False)
    rooms: RoomsTable = field(init=False)
    status: StatusTable = field(init=False)
    processed: ProcessedEvents = field(init=False)
    budget_log: BudgetTable = field(init=False)

    def __post_init__(self) -> None:
        made = Repositories.over(self.tables)
        self.rules, self.links, self.subscriptions, self.rooms = made.rules, made.links, made.subscriptions, made.rooms
        self.status, self.processed, self.budget_log = made.status, made.processed, made.budget_log

    async def is_active(self) -> bool:
        """Whether the integration is active. Only "active" is cached (for STATUS_TTL_S): work
        arriving right after an activation elsewhere is never dropped on a stale "inactive"."""
        now = time.monotonic()
        if self._active_since is not None and now - self._active_since < STATUS_TTL_S:
            return True
        active = (await self.status.get_status()).state == "active"
        self._active_since = now if active else None
        return active

    def forget_status(self) -> None:
        self._active_since = None

    @classmethod
    async def open(cls, settings: Settings) -> Services:
        tables = Tables(settings.storage, settings.table_prefix)
        await tables.open()
        budget_log = BudgetTable(tables)
        budget = OrgBudget(budget_log, Limits.configured(settings))
        anny = AnnyClient(settings.anny_base_url, settings.anny_api_token, settings.anny_organization_id,
                          budget=budget)
        return cls(settings, tables, anny, GraphGateway.from_settings(settings, budget_log=budget_log), budget,
                   WorkQueues(settings.storage))

    async def close(self) -> None:
        await self.budget.close()
        await self.tables.close()
        await self.anny.close()
        await self.graph.close()
        await self.queues.close()


_by_loop: dict[asyncio.AbstractEventLoop, Services] = {}
_locks: dict[asyncio.AbstractEventLoop, asyncio.Lock] = {}


async def get_services(env: Mapping[str, str] | None = None) -> Services:
    """The services of the running loop; the first call validates the settings. Every call sees
    that the app's log lines carry their fields (`sync.logs`: the worker's handler keeps only the
    message)."""
    put_context_in_messages()
    loop = asyncio.get_running_loop()
    lock = _locks.setdefault(loop, asyncio.Lock())
    async with lock:
        if loop not in _by_loop:
            quiet_sdk_loggers()
            _by_loop[loop] = await Services.open(Settings.from_env(os.environ if env is None else env))
    return _by_loop[loop]


async def close_services() -> None:
    """Close this loop's services (tests and the CLI)."""
    loop = asyncio.get_running_loop()
    services = _by_loop.pop(loop, None)
    _locks.pop(loop, None)
    if services is not None:
        await services.close()
