"""The whole product on this machine: Azurite, both emulators and the function app under the runner.

Used by the end-to-end tests, the benchmarks and `make run` (sandbox mode), so all of
them wire the app to its surroundings the same way.
"""

from __future__ import annotations

import importlib
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from devhost.azurite import Azurite
from devhost.host import HostKeys, LocalFunctionsHost, QueueOptions
from sync.work import BACKFILL_QUEUE, POISON_QUEUES, WORK_QUEUE

WEBHOOK_SECRET_HEADER = "x-sync-secret"
WEBHOOK_SECRET = "local-webhook-secret"
GRAPH_TOKEN = "local-graph-token"


@dataclass
class Emulators:
    graph: Any
    graph_server: Any
    anny: Any
    anny_server: Any
    graph_config: Mapping[str, Any] = field(default_factory=dict)
    anny_config: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def start(cls, graph_config: Mapping[str, Any] | None = None,
              anny_config: Mapping[str, Any] | None = None, *, graph_port: int = 0,
              anny_port: int = 0) -> Emulators:
        from sandbox.anny import start_anny_emulator
        from sandbox.graph.emulator import start_graph_emulator

        graph, graph_server = start_graph_emulator(port=graph_port, **dict(graph_config or {}))
        try:
            anny, anny_server = start_anny_emulator(port=anny_port, **dict(anny_config or {}))
        except BaseException:
            graph_server.stop()
            raise
        return cls(graph, graph_server, anny, anny_server, dict(graph_config or {}), dict(anny_config or {}))

    def reset(self) -> None:
        """Both emulators back to empty. One whose event loop hung (in an earlier test, which failed
        for it) is replaced first, with a warning saying where its thread was stuck."""
        for replaced in self.replace_unresponsive():
            warnings.warn(f"replaced a hung emulator: {replaced}", RuntimeWarning, stacklevel=2)
        self.graph.reset()
        self.anny.reset()

    def replace_unresponsive(self, seconds: float = 5.0) -> list[str]:
        """Start a fresh emulator (on a new free port) in place of one whose event loop no longer
        runs callbacks, so a hang fails the test it happened in rather than every later one.
        Returns, per replaced emulator, where its thread was stuck."""
        from sandbox.anny import start_anny_emulator
        from sandbox.graph.emulator import start_graph_emulator

        replaced: list[str] = []
        if not self.graph_server.responsive(seconds):
            replaced.append(f"graph emulator unresponsive for {seconds:g} s; {self.graph_server.where()}")
            self.graph_server.abandon()
            self.graph, self.graph_server = start_graph_emulator(**dict(self.graph_config))
        if not self.anny_server.responsive(seconds):
            replaced.append(f"anny emulator unresponsive for {seconds:g} s; {self.anny_server.where()}")
            self.anny_server.abandon()
            self.anny, self.anny_server = start_anny_emulator(**dict(self.anny_config))
        return replaced

    def stop(self) -> None:
        self.graph_server.stop()
        self.anny_server.stop()


@dataclass
class LocalStack:
    """The app wired to Azurite and the emulators; `host` drives its triggers."""

    azurite: Azurite
    emulators: Emulators
    host: LocalFunctionsHost
    env: dict[str, str]
    keys: HostKeys = field(default_factory=HostKeys)
    previous_environ: dict[str, str] = field(default_factory=dict)

    @property
    def graph(self) -> Any:
        return self.emulators.graph

    @property
    def anny(self) -> Any:
        return self.emulators.anny

    @property
    def webhook_url(self) -> str:
        return f"{self.host.url}/api/anny/webhook?code={self.keys.default}"

    def subscribe_anny_webhooks(self) -> dict[str, Any]:
        """Register the app's webhook in anny, as the admin guide tells the admin to."""
        subscription: dict[str, Any] = self.anny.create_webhook_subscription(
            self.webhook_url, custom_headers={WEBHOOK_SECRET_HEADER: WEBHOOK_SECRET})
        return subscription

    async def drain(self, timeout: float = 60) -> None:
        """Let every queued work item run (tests drive the queue on demand)."""
        await self.host.run(self.host.drain(timeout))

    async def admin(self, command: str, **params: str) -> Any:
        """An admin command as the local CLI runs it (the same dispatcher as the admin API)."""
        from sync.admin import run_command
        from sync.services import Services
        from sync.settings import Settings
        from sync.worker import Worker

        services = await Services.open(Settings.from_env(self.env))
        try:
            return await run_command(command, params, Worker(services))
        finally:
            await services.close()

    async def poison_messages(self) -> list[bytes]:
        return [m for name in POISON_QUEUES for m in await self.host.run(self.host.queue_messages(name))]

    def stop(self) -> None:
        from sync.services import close_services

        self.host.call(close_services())
        self.host.stop()
        os.environ.clear()
        os.environ.update(self.previous_environ)


def app_env(azurite: Azurite, emulators: Emulators, public_url: str, keys: HostKeys, table_prefix: str,
            **overrides: str) -> dict[str, str]:
    anny = emulators.anny
    env = {
        "AzureWebJobsStorage": azurite.connection_string,
        "TABLE_PREFIX": table_prefix,
        "GRAPH_BASE_URL": emulators.graph.base_url,
        "GRAPH_AUTH_MODE": "static_token",
        "GRAPH_STATIC_TOKEN": GRAPH_TOKEN,
        "ANNY_BASE_URL": emulators.anny_server.url,
        "ANNY_API_TOKEN": anny.config.token,
        "ANNY_ORGANIZATION_ID": anny.config.organization_id,
        "ANNY_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "ANNY_WEBHOOK_SECRET_HEADER": WEBHOOK_SECRET_HEADER,
        "PUBLIC_BASE_URL": public_url,
        "GRAPH_NOTIFICATION_KEY": keys.default,
    }
    env.update(overrides)
    return env


def start_stack(azurite: Azurite, emulators: Emulators, table_prefix: str, *, poll_queues: bool = False,
                queues: QueueOptions | None = None, port: int = 0, **settings: str) -> LocalStack:
    """Point the app's settings at the emulators, start the runner, clear the work queues."""
    keys = HostKeys()
    app = importlib.import_module("function_app").app
    host = LocalFunctionsHost(app, azurite.connection_string, keys=keys, port=port, poll_queues=poll_queues,
                              queues=queues or QueueOptions(max_dequeue_count=5, visibility_timeout=0))
    env = app_env(azurite, emulators, host.url, keys, table_prefix, **settings)
    previous = dict(os.environ)
    os.environ.update(env)  # the app reads its settings from the environment, as in Azure
    host.start()
    host.call(_clear(host))
    return LocalStack(azurite, emulators, host, env, keys, previous)


async def _clear(host: LocalFunctionsHost) -> None:
    for name in (WORK_QUEUE, BACKFILL_QUEUE, *POISON_QUEUES):
        await (await host.ensure_queue(name)).clear_messages()
