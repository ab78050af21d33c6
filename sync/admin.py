"""The admin surface (behaviour: rules, activation and removal): rules, activation, deactivation, deletion, status.

The same commands serve the CLI (`python -m sync …`, run locally) and the admin HTTP API
(`/api/manage/…`, run inside the function app as its managed identity); `run_command` is
the one dispatcher behind both.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from sync.activation import activate, deactivate, resync
from sync.budget import BACKFILL, priority
from sync.continuation import InlineSync
from sync.errors import ConcurrencyError, ConfirmationNeeded, NotFoundError, RuleError, RuleNotAdded, SyncError
from sync.inbound import blocker_note
from sync.rules import add_rule
from sync.runs import RunLog
from sync.services import STATUS_TTL_S, Services
from sync.state import Link, Rule
from sync.status import poison_count, rule_view, status_view
from sync.validation import anny_id, mailbox, text
from sync.worker import Worker

log = logging.getLogger(__name__)
COMMANDS = ("rooms", "resources", "rules.list", "rules.add", "rules.remove", "activate", "deactivate", "resync",
            "delete", "status", "replay-poison")


DELETION_GRACE_S = STATUS_TTL_S


@dataclass
class Removal:
    events: int = 0
    blockers: int = 0
    subscriptions: int = 0
    rules: int = 0


async def add_and_sync_rule(worker: Worker, params: dict[str, str]) -> dict[str, Any]:
    """Add a rule; while active, sync it at once. If that initial sync fails, the rule and
    whatever the sync wrote are removed again: a refused add stores nothing."""
    services = worker.services
    rule = await add_rule(services.rules, services.links, services.anny, services.graph,
                          params.get("anny_resource", ""), params.get("room", ""), params.get("time_zone", ""))
    if not await services.is_active():
        return rule_view(rule)
    run = RunLog("rule added", drift=False)
    inline = InlineSync(worker, run.kind)  # a 429 does not fail the add: the rest continues in the background
    try:
        rule.activated_at = datetime.now(UTC)
        await services.rules.save_rule(rule)
        report = await inline.sync(rule, run)
    except Exception as exc:  # whatever failed, the rule must not stay half-added
        cause = exc.message if isinstance(exc, SyncError) else f"{type(exc).__name__}: {exc}"
        context = exc.context if isinstance(exc, SyncError) else {}
        log.error("initial sync of a new rule failed; removing the rule again",
                  extra={"anny_resource": rule.anny_resource_id, "room": rule.room, "error": cause})
        try:
            await remove_rule(worker, rule.anny_resource_id)
        except Exception as cleanup:
            raise RuleNotAdded(f"rule not added: its initial sync failed ({cause}) and removing it failed "
                               f"too ({cleanup}); run `rules remove --anny-resource "
                               f"{rule.anny_resource_id}` once anny and Graph answer", **context) from exc
        raise RuleNotAdded(f"rule not added: its initial sync failed ({cause}); nothing was kept, "
                           "try again when the cause is fixed", **context) from exc
    await run.save(services.status)
    return {**rule_view(rule), "initial_sync": report, **({"note": inline.note} if inline.note else {})}


async def remove_rule(worker: Worker, anny_resource_id: str) -> dict[str, Any]:
    """Delete a rule and everything this app created for it (mirror events and blockers)."""
    services = worker.services
    rule = await services.rules.get_rule(anny_resource_id)
    if rule is None:
        raise RuleError("no rule for this anny resource", anny_resource=anny_resource_id)
    rule.removing = True  # from now on the worker treats the resource and room as unmapped
    await services.rules.save_rule(rule)
    # Then no guarded link write of the room succeeds any more: what the scan below does not see
    # is undone by its writer (behaviour: rules, activation and removal; LinksTable.save_link).
    await services.links.mark_room_unmapped(rule.room)
    removal = Removal()
    removal.subscriptions += await worker.subscriptions.remove(rule.room)
    for link in await services.links.all_links_of_room(rule.room):
        await _remove_link(worker, link, rule, removal)
    await _forget_rule(services, rule, removal)
    return {**rule_view(rule), "removed": asdict(removal)}


async def _forget_rule(services: Services, rule: Rule, removal: Removal) -> None:
    await services.rooms.delete_room_state(rule.room)
    try:
        await services.rules.remove_rule(rule.anny_resource_id)
    except NotFoundError:
        pass
    removal.rules += 1


async def _remove_link(worker: Worker, link: Link, rule: Rule | None, removal: Removal) -> None:
    """Remove what this app wrote for the link, then the link; what a person made is never touched."""
    services = worker.services
    if link.origin == "anny":
        event_id = link.event_id
        if not event_id:  # a create may have happened without its answer being recorded
            found = await services.graph.find_mirror_event(link.room, link.anny_id)
            event_id = found.event_id if found else ""
        if event_id:
            await services.graph.delete_event(link.room, event_id)
            removal.events += 1
    elif not link.suppressed:
        anny_id = link.anny_id
        if not anny_id and rule is not None:  # a blocker POST whose answer was never recorded
            anny_id = await worker.inbound.find_our_blocker(rule, blocker_note(link.room, link.event_id)) or ""
        if anny_id:
            await services.anny.delete_booking(anny_id)
            removal.blockers += 1
    try:
        await services.links.delete_link(link)
    except ConcurrencyError:
        # A worker wrote the link after the scan (an update: its writes of a new link would have
        # failed): remove it as it is now, unless it went to another room meanwhile.
        current = await services.links.owner_link(link)
        if current is not None and current.room == link.room:
            await _remove_link(worker, current, rule, Removal())


DELETE_CONFIRMATION = "delete"


async def deletion_preview(services: Services) -> dict[str, int]:
    """What `delete` would remove: this app's mirrors, subscriptions and rules (nothing a person made)."""
    links = await services.links.all_links()
    return {"events": sum(1 for link in links if link.origin == "anny"),
            "blockers": sum(1 for link in links if link.origin == "outlook" and not link.suppressed),
            "subscriptions": len(await services.subscriptions.list_subscriptions()),
            "rules": len(await services.rules.list_rules())}


async def delete_integration(worker: Worker, confirm: str = "") -> dict[str, Any]:
    """Remove every mirror event and blocker, every subscription and all stored state.

    Refused (ConfirmationNeeded, saying what it would remove) unless `confirm` is "delete".
    """
    services = worker.services
    if confirm != DELETE_CONFIRMATION:
        preview = await deletion_preview(services)
        raise ConfirmationNeeded(
            f"delete removes {preview['events']} mirror event(s) from the room calendars, "
            f"{preview['blockers']} mirror blocker(s) from anny, {preview['subscriptions']} Graph "
            f"subscription(s), {preview['rules']} rule(s) and all stored state; nothing a person created. "
            f'To go on, send {{"confirm": "delete"}} (CLI: delete --yes)', would_remove=preview)
    await services.status.update_status(lambda status: setattr(status, "state", "deleting"))
    worker.services.forget_status()
    await asyncio.sleep(DELETION_GRACE_S)  # other instances stop taking work before the scan
    removal = Removal()
    rules = {rule.room: rule for rule in await services.rules.list_rules()}
    for rule in rules.values():
        removal.subscriptions += await worker.subscriptions.remove(rule.room)
    for link in await services.links.all_links():
        await _remove_link(worker, link, rules.get(link.room), removal)
    removal.rules = len(rules)
    await services.tables.clear_all()
    services.rules.forget()
    log.info("integration deleted", extra=asdict(removal))
    return {"state": "deleted", "removed": asdict(removal)}


FLAG_VALUES = {"1": True, "true": True, "yes": True, "on": True, "": False, "0": False, "false": False,
               "no": False, "off": False}


def flag(params: dict[str, str], name: str) -> bool:
    """A yes/no parameter as the CLI and the admin API send it. Anything else is refused: a typo
    in `dry_run` must never turn a preview into the real thing."""
    value = str(params.get(name, "")).strip().lower()
    if value not in FLAG_VALUES:
        raise RuleError(f"{name} must be true or false", **{name: value[:20]})
    return FLAG_VALUES[value]


def checked_params(command: str, params: dict[str, str]) -> dict[str, str]:
    """The format of the admin's input (what it means is the commands' check): ids that fit anny's
    format, mailbox addresses, short valid text. A rule is removable whatever its stored id."""
    checks: dict[str, Callable[[str, str], str]] = {
        "anny_resource": text if command == "rules.remove" else anny_id, "room": mailbox, "rule": anny_id,
        "time_zone": lambda value, name: text(value, name, 64)}
    checked = {}
    for name, value in params.items():
        value = text(value, name).strip()  # an empty value is the command's own (clearer) refusal
        checked[name] = checks[name](value, name) if value and name in checks else value
    return checked


async def run_command(command: str, params: dict[str, str], worker: Worker) -> Any:
    """Carry out one admin command; raises RuleError (bad input) or SyncError."""
    services = worker.services
    params = checked_params(command, params)
    if command == "rooms":  # what can be mapped: the tenant's room mailboxes (Graph Places)
        return [asdict(room) for room in await worker.services.graph.list_rooms()]
    if command == "resources":  # ... and anny's resources; only parents can be mapped
        return [asdict(resource) for resource in await worker.services.anny.list_resources()]
    if command == "rules.list":
        return [rule_view(r) for r in await services.rules.list_rules()]
    if command == "rules.add":
        with priority(BACKFILL):  # a new rule's initial sync comes after live changes
            return await add_and_sync_rule(worker, params)
    if command == "rules.remove":
        return await remove_rule(worker, params.get("anny_resource", ""))
    if command == "activate":
        with priority(BACKFILL):
            return await activate(worker, dry_run=flag(params, "dry_run"))
    if command == "deactivate":
        return await deactivate(worker)
    if command == "resync":
        with priority(BACKFILL):
            return await resync(worker, params.get("rule", ""), dry_run=flag(params, "dry_run"),
                                confirm_deletions=flag(params, "confirm_deletions"))
    if command == "delete":
        return await delete_integration(worker, params.get("confirm", ""))
    if command == "status":
        return await status_view(services, drift=flag(params, "drift"), budget=services.budget)
    if command == "replay-poison":  # as the app's identity: the admin needs no storage role
        moved = await services.queues.replay_poison()
        return {"moved back": moved, "still in the poison queues": await poison_count(services.settings.storage)}
    raise RuleError(f"unknown command; expected one of {', '.join(COMMANDS)}", command=command)
