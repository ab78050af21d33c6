"""The control API (`/_control/...`, no auth): seed, reset, a person acting in anny, faults, inspection.

Plain JSON in and out; each route is one `AnnyEmulator` method (documented in docs/emulators.md).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .errors import AnnyError

if TYPE_CHECKING:
    from .emulator import AnnyEmulator

Body = dict[str, Any]
Params = dict[str, str]
Action = Callable[[Body, Params], Any]


def _handler(action: Action) -> Callable[[web.Request], Any]:
    async def handle(request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.read() or b"{}")
            result = action(body, dict(request.match_info))
        except AnnyError as error:
            return web.json_response(error.document(), status=error.status)
        except (ValueError, TypeError, KeyError) as error:
            return web.json_response({"error": f"{type(error).__name__}: {error}"}, status=400)
        return web.Response(status=204) if result is None else web.json_response(result)

    return handle


def control_routes(emu: AnnyEmulator) -> list[web.RouteDef]:
    table: list[tuple[str, str, Action]] = [
        ("GET", "/health", lambda b, p: {"ok": True}),
        ("POST", "/reset", lambda b, p: emu.reset()),
        ("GET", "/config", lambda b, p: emu.config.as_dict()),
        ("PATCH", "/config", lambda b, p: emu.configure(**b).as_dict()),
        ("POST", "/seed", lambda b, p: emu.seed(b)),
        ("GET", "/resources", lambda b, p: emu.resources()),
        ("POST", "/resources", lambda b, p: emu.add_resource(**b)),
        ("POST", "/services", lambda b, p: emu.add_service(**b)),
        ("POST", "/customers", lambda b, p: emu.add_customer(**b)),
        ("GET", "/bookings", lambda b, p: emu.bookings()),
        ("GET", "/bookings/{id}", lambda b, p: emu.booking(p["id"])),
        ("POST", "/person/bookings", lambda b, p: emu.person_create_booking(**b)),
        ("PATCH", "/person/bookings/{id}", lambda b, p: emu.person_update_booking(p["id"], **b)),
        ("POST", "/person/bookings/{id}/cancel", lambda b, p: emu.person_cancel_booking(p["id"])),
        ("DELETE", "/person/bookings/{id}", lambda b, p: emu.person_delete_booking(p["id"])),
        ("POST", "/person/series", lambda b, p: emu.person_create_series(**b)),
        ("POST", "/person/blockers", lambda b, p: emu.person_create_blocker(**b)),
        ("GET", "/faults", lambda b, p: emu.faults()),
        ("DELETE", "/faults", lambda b, p: emu.clear_faults()),
        ("PUT", "/faults/api", lambda b, p: _set_api_faults(emu, b)),
        ("POST", "/faults/api/fail-next", lambda b, p: emu.fail_next(**b)),
        ("POST", "/faults/webhooks", lambda b, p: emu.set_webhook_faults(**b)),
        ("GET", "/counters", lambda b, p: emu.counters()),
        ("GET", "/rate-limits", lambda b, p: emu.rate_limits()),
        ("PUT", "/rate-limits", lambda b, p: emu.set_rate_limits(**b)),
        ("DELETE", "/counters", lambda b, p: emu.reset_counters()),
        ("GET", "/webhooks/subscriptions", lambda b, p: emu.webhook_subscriptions()),
        ("POST", "/webhooks/subscriptions", lambda b, p: emu.create_webhook_subscription(**b)),
        ("GET", "/webhooks/deliveries", lambda b, p: emu.deliveries()),
        ("POST", "/webhooks/release", lambda b, p: {"groups": emu.release_held_webhooks()}),
    ]
    return [web.route(method, f"/_control{path}", _handler(action)) for method, path, action in table]


def _set_api_faults(emu: AnnyEmulator, body: Body) -> Any:
    """`{"latency_ms": 50, "forced_status": 401}`: either key may be left out."""
    if "latency_ms" in body:
        emu.set_latency(int(body["latency_ms"]))
    if "forced_status" in body:
        emu.force_status(body["forced_status"])
    return emu.faults()
