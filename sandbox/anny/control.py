"""The control API (`/_control/...`, no auth): seed, reset, a person acting in anny, faults, inspection.

Plain JSON in and out; each route is one method of the emulator (documented in docs/emulators.md).
The table of routes is `AnnyEmulator.control_table`; this module is the HTTP around it, so the
emulator imports it and not the other way round.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

from .errors import AnnyError

Body = dict[str, Any]
Params = dict[str, str]
Action = Callable[[Body, Params], Any]
ControlRoute = tuple[str, str, Action]  # (method, path under /_control, action)


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


def control_routes(table: list[ControlRoute]) -> list[web.RouteDef]:
    """`/_control/<path>` for each (method, path, action) of the emulator's table."""
    return [web.route(method, f"/_control{path}", _handler(action)) for method, path, action in table]
