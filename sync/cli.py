"""`python -m sync`: the tenant admin's command line. Reads the same settings as the app."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from typing import Any

from sync import admin
from sync.errors import SyncError
from sync.services import Services
from sync.settings import Settings
from sync.state import StateStore
from sync.worker import Worker


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sync", description="anny ⇄ Microsoft 365 room sync admin")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    commands = parser.add_subparsers(dest="command", required=True)
    rules = commands.add_parser("rules", help="map anny resources to rooms").add_subparsers(dest="action",
                                                                                            required=True)
    add = rules.add_parser("add", help="map an anny parent resource to a room mailbox")
    add.add_argument("--anny-resource", required=True, help="anny resource id")
    add.add_argument("--room", required=True, help="room mailbox address")
    add.add_argument("--time-zone", default="", help="the resource's IANA time zone (default: SYNC_TIME_ZONE)")
    rules.add_parser("list", help="list the rules")
    remove = rules.add_parser("remove", help="remove a rule (state only)")
    remove.add_argument("--anny-resource", required=True)
    commands.add_parser("activate", help="subscribe every mapped room and sync the window both ways")
    commands.add_parser("status", help="integration state, rules, subscriptions")
    return parser


async def _run(args: argparse.Namespace, settings: Settings) -> Any:
    if args.command == "activate":
        services = await Services.open(settings)
        try:
            return await admin.activate(Worker(services))
        finally:
            await services.close()
    async with StateStore(settings.storage, settings.table_prefix) as store:
        if args.command == "status":
            return await admin.status_view(store)
        if args.action == "add":
            return admin.rule_view(await admin.add_rule(store, args.anny_resource, args.room, args.time_zone))
        if args.action == "remove":
            return admin.rule_view(await admin.remove_rule(store, args.anny_resource))
        return [admin.rule_view(r) for r in await store.list_rules()]


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
    try:
        settings = Settings.from_env()
        _print(asyncio.run(_run(args, settings)), args.json)
    except SyncError as exc:
        if args.json:
            print(json.dumps({"error": str(exc), **exc.context}, default=str))
        else:
            print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
