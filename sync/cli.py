"""`python -m sync`: the tenant admin's command line.

Locally it reads the same settings as the app and works on the app's state directly. With
`--api https://<app>/api/manage --key <admin key>` it runs the same commands inside the
deployed app (as its managed identity) through the admin HTTP API.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import httpx

from sync.admin import run_command
from sync.admin_api import ROUTES
from sync.errors import RemoteError, SyncError
from sync.services import Services
from sync.settings import Settings
from sync.worker import Worker


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sync", description="anny ⇄ Microsoft 365 room sync admin")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    parser.add_argument("--api", default=os.environ.get("SYNC_ADMIN_API", ""),
                        help="admin API base URL (…/api/manage); default: work locally with the app's settings")
    parser.add_argument("--key", default=os.environ.get("SYNC_ADMIN_KEY", ""),
                        help="the function app's admin (master) key, for --api")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("rooms", help="list the tenant's room mailboxes (from Microsoft Graph)")
    commands.add_parser("resources", help="list anny's resources (parents can be mapped)")
    rules = commands.add_parser("rules", help="map anny resources to rooms").add_subparsers(dest="action",
                                                                                            required=True)
    add = rules.add_parser("add", help="map an anny parent resource to a room mailbox")
    add.add_argument("--anny-resource", required=True, help="anny resource id")
    add.add_argument("--room", required=True, help="room mailbox address")
    add.add_argument("--time-zone", default="", help="the resource's IANA time zone (default: SYNC_TIME_ZONE)")
    rules.add_parser("list", help="list the rules")
    remove = rules.add_parser("remove", help="delete a rule and the mirror events and blockers it created")
    remove.add_argument("--anny-resource", required=True)
    commands.add_parser("activate", help="subscribe every mapped room and sync the window both ways")
    commands.add_parser("deactivate", help="stop syncing (removes the subscriptions, keeps everything else)")
    commands.add_parser("delete", help="remove every mirror event and blocker, the subscriptions and all state")
    commands.add_parser("status", help="integration state, rules, subscriptions")
    return parser


def _command(args: argparse.Namespace) -> tuple[str, dict[str, str]]:
    if args.command == "rules":
        params = {"anny_resource": getattr(args, "anny_resource", ""), "room": getattr(args, "room", ""),
                  "time_zone": getattr(args, "time_zone", "")}
        return f"rules.{args.action}", {k: v for k, v in params.items() if v}
    return args.command, {}


async def _run_locally(command: str, params: dict[str, str]) -> Any:
    services = await Services.open(Settings.from_env())
    try:
        return await run_command(command, params, Worker(services))
    finally:
        await services.close()


async def _run_remotely(api: str, key: str, command: str, params: dict[str, str]) -> Any:
    method, template = ROUTES[command]
    path = template.format(**{k: quote(v, safe="") for k, v in params.items()}) if "{" in template else template
    body = None if method == "GET" or "{" in template else params
    async with httpx.AsyncClient(timeout=600) as client:
        try:
            answer = await client.request(method, f"{api.rstrip('/')}/{path}", json=body,
                                          headers={"x-functions-key": key})
        except httpx.HTTPError as exc:
            raise RemoteError(f"admin API unreachable: {type(exc).__name__}", api=api) from exc
    if answer.status_code >= 400:
        detail = answer.json().get("error") if answer.headers.get("content-type", "").startswith(
            "application/json") else answer.reason_phrase
        raise RemoteError(f"admin API answered {answer.status_code}: {detail}", command=command)
    return answer.json()


def _print(result: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result, indent=2, default=str))
        return
    rows = result if isinstance(result, list) else [result]
    for row in rows:
        print("  ".join(f"{k}={v}" for k, v in row.items() if v not in (None, "", [])))
    if not rows:
        print("(none)")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    command, params = _command(args)
    try:
        if args.api:
            result = asyncio.run(_run_remotely(args.api, args.key, command, params))
        else:
            result = asyncio.run(_run_locally(command, params))
        _print(result, args.json)
    except SyncError as exc:
        if args.json:
            print(json.dumps({"error": str(exc), **exc.context}, default=str))
        else:
            print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
