"""`make run` without credentials: the emulators with a seeded organisation, the app connected and active.

What a tenant admin does by hand in production (admin guide steps 4 and 5) happens here through
the same paths: the anny webhook is registered with the secret header, and the rooms are mapped
and the sync activated through the admin API with the master key.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from devhost.azurite import Azurite
from devhost.host import HostKeys, LocalFunctionsHost
from devhost.stack import WEBHOOK_SECRET, WEBHOOK_SECRET_HEADER, Emulators, app_env
from sandbox.organisation import ROOMS, TIME_ZONE, anny_seed, graph_seed, slug_of, today_here
from sync.admin_api import ROUTE_PREFIX, ROUTES
from sync.local_stack import SandboxRoomInfo
from sync.model import ANNY_CATEGORY, BLOCKER_MARKER

log = logging.getLogger("devhost")
ADMIN_TIMEOUT_S = 300  # activation syncs two weeks of bookings both ways
INITIAL_SYNC_TIMEOUT_S = 120


@dataclass
class SeededOrganisation:
    rooms: list[SandboxRoomInfo]
    anny_bookings: int
    anny_series: int
    outlook_meetings: int
    webhook_id: str = ""
    mirror_events: int = 0
    mirror_blockers: int = 0
    settled: bool = False


def start_emulators(graph_port: int, anny_port: int, anny_config: dict[str, Any] | None = None) -> Emulators:
    return Emulators.start(anny_config=anny_config, graph_port=graph_port, anny_port=anny_port)


def seed(emulators: Emulators) -> SeededOrganisation:
    """Rooms, people and meetings in Outlook; resources, customers and two weeks of bookings in anny."""
    today = today_here()
    graph = emulators.graph.seed(graph_seed(today))
    anny = emulators.anny.seed(anny_seed(today))
    resources: dict[str, str] = anny["resources"]
    rooms = [SandboxRoomInfo(room.email, room.name, resources[room.slug],
                             {child: resources[slug_of(child)] for child in room.children})
             for room in ROOMS if room.mapped]
    occurrences = sum(len(s["occurrences"]) for s in anny["series"])
    return SeededOrganisation(rooms, len(anny["bookings"]) + occurrences, len(anny["series"]), len(graph["events"]))


def sandbox_env(azurite: Azurite, emulators: Emulators, public_url: str, keys: HostKeys) -> dict[str, str]:
    return app_env(azurite, emulators, public_url, keys, "annysync", SYNC_TIME_ZONE=TIME_ZONE)


def connect(org: SeededOrganisation, emulators: Emulators, app_url: str, keys: HostKeys,
            on_step: Callable[[str], None] = lambda _: None) -> None:
    """Register the anny webhook, map every room to its anny resource and activate (admin guide 4–5)."""
    webhook = emulators.anny.create_webhook_subscription(
        f"{app_url}/api/anny/webhook?code={keys.default}", custom_headers={WEBHOOK_SECRET_HEADER: WEBHOOK_SECRET})
    org.webhook_id = str(webhook["id"])
    on_step("anny webhook registered")
    admin = f"{app_url}/api/{ROUTE_PREFIX}"
    with httpx.Client(base_url=admin, headers={"x-functions-key": keys.master}, timeout=ADMIN_TIMEOUT_S) as client:
        for room in org.rooms:
            _admin(client, "rules.add", {"anny_resource": room.anny_resource, "room": room.room})
        on_step(f"{len(org.rooms)} rooms mapped")
        _admin(client, "activate", {})


def wait_for_initial_sync(org: SeededOrganisation, emulators: Emulators, host: LocalFunctionsHost) -> None:
    """Ready means synced: wait until the work the activation queued is done, then count what the sync
    wrote (whatever the activation ran inline and whatever it queued)."""
    try:
        for _ in range(2):  # the echoes of the first round's writes queue a little more work
            host.call(host.drain(INITIAL_SYNC_TIMEOUT_S), timeout=INITIAL_SYNC_TIMEOUT_S + 10)
            emulators.anny.wait_settled()
        org.settled = True
    except TimeoutError:
        org.settled = False  # the banner says it goes on in the background
    org.mirror_events = sum(1 for room in org.rooms for event in emulators.graph.events(room.room)
                            if ANNY_CATEGORY in event.get("categories", []))
    org.mirror_blockers = sum(1 for booking in emulators.anny.bookings()
                              if booking["is_blocker"] and BLOCKER_MARKER in (booking.get("note") or ""))


def _admin(client: httpx.Client, command: str, body: dict[str, str]) -> Any:
    method, path = ROUTES[command]
    answer = client.request(method, path, json=body or None)
    if answer.status_code >= 400:
        raise RuntimeError(f"admin command {command} answered {answer.status_code}: {answer.text[:500]}")
    return answer.json()
