"""`python -m sync`: the tenant admin's command line.

With `--api https://<app>/api/manage --key <admin key>` it runs the commands inside the deployed
app (as its managed identity) through the admin HTTP API. Without it, next to `make run` it uses the
app that `make run` serves (found through the local stack file); otherwise it reads the same
settings as the app and works on the app's state directly.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx

from sync.admin import DELETE_CONFIRMATION, run_command
from sync.admin_api import ROUTES
from sync.errors import ConfirmationNeeded, InputError, RemoteError, RuleError, SettingsError, SyncError
from sync.local_stack import read_local_stack
from sync.services import Services
from sync.settings import Settings
from sync.status import render
from sync.worker import Worker

EXIT_OK, EXIT_REFUSED, EXIT_FAILED = 0, 2, 3
EXIT_CODES = f"""exit codes:
  {EXIT_OK}  done
  {EXIT_REFUSED}  refused: bad input, a missing confirmation or a wrong key; the message says what to fix
  {EXIT_FAILED}  failed: anny, Microsoft Graph, Table Storage or the admin API did not answer as
     expected; nothing half-done is kept where the command says so; try again later"""


def _common() -> argparse.ArgumentParser:
    """Options accepted anywhere on the line (before or after the subcommand)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print machine-readable JSON instead of text")
    common.add_argument("--api", default=argparse.SUPPRESS,
                        help="admin API base URL (…/api/manage); default $SYNC_ADMIN_API, else the app "
                             "`make run` serves, else work locally with the app's settings in the environment")
    common.add_argument("--key", default=argparse.SUPPRESS,
                        help="the function app's admin (master) key for --api; default $SYNC_ADMIN_KEY")
    return common


def _add(commands: argparse._SubParsersAction[argparse.ArgumentParser], name: str, summary: str, example: str,
         common: argparse.ArgumentParser, details: str = "") -> argparse.ArgumentParser:
    return commands.add_parser(
        name, help=summary, description=f"{summary}.\n\n{details}".strip(), parents=[common],
        epilog=f"example:\n  {example}\n\n{EXIT_CODES}", formatter_class=argparse.RawDescriptionHelpFormatter)


def _parser() -> argparse.ArgumentParser:
    common = _common()
    parser = argparse.ArgumentParser(
        prog="python -m sync", parents=[common], formatter_class=argparse.RawDescriptionHelpFormatter,
        description="anny ⇄ Microsoft 365 room sync: the admin's commands. "
                    "`python -m sync <command> --help` explains each one with an example.",
        epilog=f"typical first run:\n  python -m sync rooms\n  python -m sync resources\n"
               f"  python -m sync rules add --anny-resource <id> --room room-a@contoso.com\n"
               f"  python -m sync activate --dry-run\n  python -m sync activate\n  python -m sync status\n\n"
               f"{EXIT_CODES}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="<command>")
    _add(commands, "rooms", "list the tenant's room mailboxes (Microsoft Graph Places)", "python -m sync rooms",
         common)
    _add(commands, "resources", "list anny's resources; children show their parent and cannot be mapped",
         "python -m sync resources", common)
    rules = _add(commands, "rules", "map anny parent resources to rooms (add, list, remove)",
                 "python -m sync rules list", common).add_subparsers(dest="action", required=True, metavar="<action>")
    add = _add(rules, "add", "map an anny parent resource to a room mailbox",
               "python -m sync rules add --anny-resource 8f1c… --room room-a@contoso.com", common,
               "Refused (and nothing stored) for a child resource, an unknown resource, an address that is\n"
               "not a room in Places, or a resource or room mapped already. While the sync is active the\n"
               "rule is synced at once; if that fails, the rule is removed again.")
    add.add_argument("--anny-resource", required=True, help="the anny parent resource's id (see `resources`)")
    add.add_argument("--room", required=True, help="the room mailbox address (see `rooms`)")
    add.add_argument("--time-zone", default="", help="the resource's IANA time zone (default: anny's, else "
                                                     "SYNC_TIME_ZONE)")
    _add(rules, "list", "list the rules", "python -m sync rules list", common)
    remove = _add(rules, "remove", "delete a rule and the mirror events and blockers it created",
                  "python -m sync rules remove --anny-resource 8f1c…", common)
    remove.add_argument("--anny-resource", required=True, help="the rule's anny resource id")
    activate = _add(commands, "activate", "start syncing: subscribe every mapped room and sync both ways",
                    "python -m sync activate --dry-run", common,
                    "The first activation transfers everything in the window. After `deactivate`, activating\n"
                    "again transfers only what is created from then on; linked items catch up with their\n"
                    "changes, and what was created while off stays unsynced (`resync` brings it over).")
    activate.add_argument("--dry-run", action="store_true", help="only say what would happen, write nothing")
    _add(commands, "deactivate", "stop syncing (removes the subscriptions, keeps everything else)",
         "python -m sync deactivate", common)
    resync = _add(commands, "resync", "bring everything in the window over, both ways (all rules or one)",
                  "python -m sync resync --rule 8f1c… --confirm-deletions", common,
                  "Also how a rule held by the brake on mass deletion is released: check with --dry-run,\n"
                  "then resync it with --confirm-deletions.")
    resync.add_argument("--rule", default="", help="only this rule (its anny resource id)")
    resync.add_argument("--dry-run", action="store_true", help="only say what would happen, write nothing")
    resync.add_argument("--confirm-deletions", action="store_true",
                        help="allow this run to delete more mirrors than the brake allows")
    delete = _add(commands, "delete", "uninstall: remove every mirror event and blocker, the subscriptions "
                                      "and all state", "python -m sync delete --yes", common,
                  "Without --yes it says what it would remove and asks (or, not on a terminal, stops).")
    delete.add_argument("--yes", action="store_true", help="confirm: remove without asking")
    status = _add(commands, "status", "state, rules, last runs, what was repaired, the poison queue",
                  "python -m sync status --drift", common)
    status.add_argument("--drift", action="store_true", help="also list the items the last runs repaired")
    status.add_argument("--watch", action="store_true",
                        help="redraw every 2 s until the initial sync is done (progress bars in a terminal)")
    _add(commands, "replay-poison", "move the work items the poison queues keep back to their queues",
         "python -m sync replay-poison", common,
         "Once the cause is fixed (see `last error` in `status`). Runs as the app's identity, so you\n"
         "need no storage role; each item is worked on again as it was first queued.")
    return parser


def _command(args: argparse.Namespace) -> tuple[str, dict[str, str]]:
    params = {"anny_resource": getattr(args, "anny_resource", ""), "room": getattr(args, "room", ""),
              "time_zone": getattr(args, "time_zone", ""), "rule": getattr(args, "rule", "")}
    for flag in ("dry_run", "confirm_deletions", "drift"):
        if getattr(args, flag, False):
            params[flag] = "true"
    if getattr(args, "yes", False):
        params["confirm"] = DELETE_CONFIRMATION
    command = f"rules.{args.action}" if args.command == "rules" else args.command
    return command, {k: v for k, v in params.items() if v}


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
    query = params if method == "GET" else None
    async with httpx.AsyncClient(timeout=600) as client:
        try:
            answer = await client.request(method, f"{api.rstrip('/')}/{path}", json=body, params=query,
                                          headers={"x-functions-key": key})
        except httpx.HTTPError as exc:
            raise RemoteError(f"admin API unreachable: {type(exc).__name__}", api=api) from exc
    if answer.status_code < 400:
        return answer.json()
    error: dict[str, Any] = {}
    if answer.headers.get("content-type", "").startswith("application/json"):
        error = answer.json()
    detail = error.get("error") or answer.reason_phrase
    if error.get("needs_confirmation"):
        raise ConfirmationNeeded(str(detail))
    kind = RuleError if answer.status_code < 500 else RemoteError
    raise kind(f"admin API answered {answer.status_code}: {detail}", command=command)


def _print(command: str, result: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result, indent=2, default=str))
        return
    print(render(command, result))
    if command == "status" and sys.stdout.isatty():
        for line in progress_bars(result.get("initial_sync") or {}):
            print(line)


def progress_bars(sync: dict[str, Any], width: int = 100) -> list[str]:
    """The initial sync as progress bars (tqdm), one per room and direction with work left."""
    from tqdm import tqdm

    now = datetime.now(UTC)
    bars = []
    for room in sync.get("rooms", []):
        elapsed = (now - datetime.fromisoformat(room["started_at"])).total_seconds()
        for direction, label in (("to_outlook", "anny → Outlook"), ("to_anny", "Outlook → anny")):
            counts = room[direction]
            if counts["total"]:
                bars.append(tqdm.format_meter(counts["done"], counts["total"], max(elapsed, 0.0),
                                              prefix=f"{room['room']} {label}", ncols=width, unit="item"))
    return bars


def _watch(run: Callable[[dict[str, str]], Any], params: dict[str, str], interval_s: float = 2.0) -> Any:
    """`status --watch`: redraw until no initial sync is left."""
    while True:
        result = run(params)
        if sys.stdout.isatty():
            print("\x1b[2J\x1b[H", end="")
        _print("status", result, as_json=False)
        if not (result.get("initial_sync") or {}).get("in_progress"):
            return result
        time.sleep(interval_s)


def _confirmed_interactively(exc: ConfirmationNeeded) -> bool:
    if not sys.stdin.isatty():
        return False
    print(exc.message, file=sys.stderr)
    return input(f"Type {DELETE_CONFIRMATION!r} to go on: ").strip() == DELETE_CONFIRMATION


def _admin_api(args: argparse.Namespace) -> tuple[str, str]:
    """--api, else SYNC_ADMIN_API, else the app `make run` serves on this machine (its stack file)."""
    api = getattr(args, "api", os.environ.get("SYNC_ADMIN_API", ""))
    key = getattr(args, "key", os.environ.get("SYNC_ADMIN_KEY", ""))
    stack = None if api else read_local_stack()
    if stack is not None:
        api, key = stack.admin_api, key or stack.admin_key
    return api, key


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if [a for a in argv if a != "--json"][:1] == ["sandbox"]:  # the sandbox helpers (development only)
        from devhost.person_cli import main as sandbox_main

        return sandbox_main([a for a in argv if a != "sandbox"])
    args = _parser().parse_args(argv)
    as_json = getattr(args, "json", False)
    api, key = _admin_api(args)
    command, params = _command(args)

    def run(p: dict[str, str]) -> Any:
        runner: Callable[[], Any] = (lambda: _run_remotely(api, key, command, p)) if api else (
            lambda: _run_locally(command, p))
        return asyncio.run(runner())

    try:
        try:
            result = run(params)
        except ConfirmationNeeded as exc:
            if as_json or command != "delete" or not _confirmed_interactively(exc):
                raise
            result = run({**params, "confirm": DELETE_CONFIRMATION})
        if command == "status" and getattr(args, "watch", False) and not as_json:
            _watch(run, params)
        else:
            _print(command, result, as_json)
    except SyncError as exc:
        if as_json:
            print(json.dumps({"error": str(exc), **exc.context}, default=str))
        else:
            print(f"error: {exc}", file=sys.stderr)
        return EXIT_REFUSED if isinstance(exc, RuleError | SettingsError | InputError) else EXIT_FAILED
    return EXIT_OK
