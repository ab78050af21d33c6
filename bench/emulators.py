"""Both emulators in processes of their own, driven through their control APIs (`/_control/...`).

A large benchmark must not measure the emulators' CPU as the app's: with the app, the runner
and both emulators in one Python process, every emulated request takes the GIL from the app.
Here each emulator is `python -m sandbox.anny` / `python -m sandbox.graph` on a free port, and
`RemoteAnny` / `RemoteGraph` offer the few emulator methods the benchmarks call, over HTTP, so a
`LocalStack` is wired to them exactly as to the in-process ones.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from devhost.azurite import _die_with_parent
from sandbox.anny.config import AnnyConfig
from sandbox.serve import free_port

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 30
SETTLED_DELIVERIES = frozenset({"delivered", "failed", "dropped", "held"})  # held: until released


@dataclass
class EmulatorProcess:
    """One emulator's process; `url` is its server root."""

    process: subprocess.Popen[bytes]
    url: str

    @classmethod
    def start(cls, module: str, *args: str) -> EmulatorProcess:
        port = free_port()
        # Killed with the benchmark however it ends, as Azurite is (devhost.azurite).
        process = subprocess.Popen([sys.executable, "-m", module, "--port", str(port), *args],
                                   cwd=ROOT, stdout=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        started = cls(process, f"http://127.0.0.1:{port}")
        started.wait_ready()
        return started

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"emulator at {self.url} exited with {self.process.returncode}")
            try:
                httpx.get(f"{self.url}/_control/health", timeout=1)
                return
            except httpx.HTTPError:
                time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"emulator at {self.url} did not start within {START_TIMEOUT_S} s")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class _Control:
    def __init__(self, url: str) -> None:
        self.url = url
        self._http = httpx.Client(base_url=f"{url}/_control", timeout=120)

    def call(self, method: str, path: str, body: Any = None) -> Any:
        answer = self._http.request(method, path, json=body)
        if answer.status_code >= 400:
            raise RuntimeError(f"{method} /_control{path} answered {answer.status_code}: {answer.text[:300]}")
        return answer.json() if answer.content else None

    def close(self) -> None:
        self._http.close()


class RemoteAnny(_Control):
    """The anny emulator's control API, with the names of `sandbox.anny.AnnyEmulator`'s methods."""

    config = AnnyConfig()  # the standalone emulator's token and organisation (its defaults)

    def seed(self, data: dict[str, Any]) -> dict[str, Any]:
        return dict(self.call("POST", "/seed", data))

    def bookings(self) -> list[dict[str, Any]]:
        return list(self.call("GET", "/bookings"))

    def person_create_booking(self, resource: str, start: str, end: str, **fields: Any) -> dict[str, Any]:
        return dict(self.call("POST", "/person/bookings", {"resource": resource, "start": start, "end": end,
                                                            **fields}))

    def create_webhook_subscription(self, url: str, **fields: Any) -> dict[str, Any]:
        return dict(self.call("POST", "/webhooks/subscriptions", {"url": url, **fields}))

    def set_latency(self, ms: int) -> None:
        self.call("PUT", "/faults/api", {"latency_ms": ms})

    def set_rate_limits(self, enabled: bool = True, **limits: Any) -> dict[str, Any]:
        return dict(self.call("PUT", "/rate-limits", {"enabled": enabled, **limits}))

    def counters(self) -> dict[str, int]:
        return dict(self.call("GET", "/counters"))

    def reset_counters(self) -> None:
        self.call("DELETE", "/counters")

    def throttled_count(self) -> int:
        return int(self.call("GET", "/rate-limits")["counters"].get("429", 0))

    def rate_limits(self) -> dict[str, Any]:
        return dict(self.call("GET", "/rate-limits"))

    def add_resource(self, name: str, **fields: Any) -> dict[str, Any]:
        return dict(self.call("POST", "/resources", {"name": name, **fields}))

    def add_service(self, name: str, **fields: Any) -> dict[str, Any]:
        return dict(self.call("POST", "/services", {"name": name, **fields}))

    def person_update_booking(self, booking_id: str, **changes: Any) -> dict[str, Any]:
        return dict(self.call("PATCH", f"/person/bookings/{quote(booking_id, safe='')}", changes))

    def person_move_booking(self, booking_id: str, start: str, end: str, **changes: Any) -> dict[str, Any]:
        return self.person_update_booking(booking_id, start=start, end=end, **changes)

    def deliveries(self) -> list[dict[str, Any]]:
        return list(self.call("GET", "/webhooks/deliveries"))

    async def settle(self, seconds: float = 10.0) -> None:
        """Until no webhook delivery is being sent or retried (the control API has no wait: polled)."""
        deadline = time.monotonic() + seconds
        while any(d["status"] not in SETTLED_DELIVERIES for d in self.deliveries()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"anny's webhook deliveries did not settle within {seconds} s")
            await asyncio.sleep(0.1)


class RemoteGraph(_Control):
    """The Graph emulator's control API, with the names of `sandbox.graph.GraphEmulator`'s methods."""

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1.0"

    def seed(self, data: dict[str, Any]) -> dict[str, Any]:
        return dict(self.call("POST", "/seed", data))

    def events(self, mailbox: str) -> list[dict[str, Any]]:
        return list(self.call("GET", f"/mailboxes/{quote(mailbox, safe='')}/events"))

    def person_create_event(self, mailbox: str, **fields: Any) -> dict[str, Any]:
        return dict(self.call("POST", f"/mailboxes/{quote(mailbox, safe='')}/events", fields))

    def set_latency(self, ms: float) -> None:
        self.call("POST", "/latency", {"ms": ms})

    def call_counts(self) -> dict[str, int]:
        return dict(self.call("GET", "/counters"))

    def throttled_counts(self) -> dict[str, int]:
        return dict(self.call("GET", "/throttled"))

    def reset_counters(self) -> None:
        self.call("DELETE", "/counters")

    def add_room(self, email: str, display_name: str | None = None, **fields: Any) -> dict[str, Any]:
        return dict(self.call("POST", "/rooms", {"email": email, "display_name": display_name, **fields}))

    async def wait_deliveries(self, timeout: float = 5.0) -> None:
        """Until every change notification has been delivered (or given up)."""
        await asyncio.to_thread(self.call, "POST", f"/notifications/drain?timeout={timeout}")


@dataclass
class RemoteEmulators:
    """Shaped like `devhost.stack.Emulators` (graph, graph_server, anny, anny_server), each emulator
    in its own process."""

    graph: RemoteGraph
    graph_server: EmulatorProcess
    anny: RemoteAnny
    anny_server: EmulatorProcess

    @classmethod
    def start(cls) -> RemoteEmulators:
        graph_server = EmulatorProcess.start("sandbox.graph")
        try:
            anny_server = EmulatorProcess.start("sandbox.anny")
        except BaseException:
            graph_server.stop()
            raise
        return cls(RemoteGraph(graph_server.url), graph_server, RemoteAnny(anny_server.url), anny_server)

    def stop(self) -> None:
        self.graph.close()
        self.anny.close()
        self.graph_server.stop()
        self.anny_server.stop()
