"""The admin HTTP API (`/api/manage/…`, admin key): the admin commands, run as the app's identity."""

from __future__ import annotations

import json
import logging
import math
from typing import Any

import azure.functions as func

from sync.admin import run_command
from sync.continuation import answering_within
from sync.errors import ConfirmationNeeded, InputError, RemoteThrottled, RuleError, SyncError
from sync.validation import json_object, request_body, text
from sync.worker import Worker

log = logging.getLogger(__name__)
ROUTE_PREFIX = "manage"
# command → (method, path below /api/manage); the CLI's remote mode uses the same table.
ROUTES: dict[str, tuple[str, str]] = {
    "rooms": ("GET", "rooms"),
    "resources": ("GET", "resources"),
    "rules.list": ("GET", "rules"),
    "rules.add": ("POST", "rules"),
    "rules.remove": ("DELETE", "rules/{anny_resource}"),
    "activate": ("POST", "activate"),
    "deactivate": ("POST", "deactivate"),
    "resync": ("POST", "resync"),
    "delete": ("POST", "delete"),
    "status": ("GET", "status"),
    "replay-poison": ("POST", "poison/replay"),
}


def command_for(method: str, path: str) -> tuple[str, dict[str, str]] | None:
    """Match a request to a command; path parameters are returned as params."""
    parts = path.strip("/").split("/")
    for command, (route_method, template) in ROUTES.items():
        pattern = template.split("/")
        if route_method != method.upper() or len(pattern) != len(parts):
            continue
        params: dict[str, str] = {}
        for want, got in zip(pattern, parts, strict=True):
            if want.startswith("{"):
                params[want.strip("{}")] = got
            elif want != got:
                break
        else:
            return command, params
    return None


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body, default=str), status_code=status, mimetype="application/json",
                             headers=headers)


def _body_params(req: func.HttpRequest) -> dict[str, str]:
    """The JSON object body's fields as command parameters: strings, whole numbers (ids) or booleans (flags)."""
    raw = request_body(req)
    if not raw:
        return {}
    params: dict[str, str] = {}
    for name, value in json_object(raw).items():
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, int):
            value = str(value)
        params[name] = text(value, name)
    return params


def command_params(req: func.HttpRequest, from_path: dict[str, str]) -> dict[str, str]:
    """A command's parameters: the path's win over the body's, the body's over the query's. The
    host hands every query parameter over, its key (`code`) too: that one is not the command's."""
    query = {k: str(v) for k, v in req.params.items() if k != "code"}
    return {**query, **_body_params(req), **from_path}


async def handle(req: func.HttpRequest, worker: Worker) -> func.HttpResponse:
    matched = command_for(req.method, req.route_params.get("path", ""))
    if matched is None:
        return _json(404, {"error": "unknown admin command", "commands": sorted(ROUTES)})
    command, params = matched
    try:
        params = command_params(req, params)
        with answering_within(worker.services.settings.admin_answer_s):
            return _json(200, await run_command(command, params, worker))
    except ConfirmationNeeded as exc:
        return _json(400, {"error": str(exc), "needs_confirmation": True, **exc.context})
    except InputError as exc:
        log.warning("admin request refused (%s): %s", exc.status, exc, extra={"command": command})
        return _json(exc.status, {"error": str(exc), "field": exc.field, "problem": exc.problem})
    except RuleError as exc:
        return _json(400, {"error": str(exc), **exc.context})
    except RemoteThrottled as exc:
        # What an admin command syncs continues in the background after a 429 (sync.continuation);
        # what reaches here is a read the answer needs (a preview, a listing): say when to ask again.
        wait = max(1, math.ceil(exc.retry_after_s))
        log.warning("admin command throttled", extra={"command": command, "retry_after_s": wait})
        return _json(503, {"error": f"{exc}: try again in {wait} s", **exc.context, "retry_after_s": wait},
                     headers={"Retry-After": str(wait)})
    except SyncError as exc:
        log.error("admin command failed", extra={"command": command, "error": str(exc)})
        return _json(502, {"error": str(exc), **exc.context})
