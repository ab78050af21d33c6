"""The admin surface (DESIGN §3.4): rules, activation, deactivation, deletion, status.

The same commands serve the CLI (`python -m sync …`, run locally) and the admin HTTP API
(`/api/manage/…`, run inside the function app as its managed identity); `run_command` is
the one dispatcher behind both.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sync.errors import ConcurrencyError, NotFoundError, RuleError
from sync.inbound import blocker_note
from sync.keys import normalise_mailbox
from sync.nightly import NightlyReport, run_nightly, sync_rule
from sync.services import STATUS_TTL_S
from sync.settings import StorageSettings
from sync.state import IntegrationStatus, Link, Rule, StateStore
from sync.work import POISON_QUEUE, RoomWork, Work
from sync.worker import Worker

log = logging.getLogger(__name__)
COMMANDS = ("rooms", "resources", "rules.list", "rules.add", "rules.remove", "activate", "deactivate", "delete",
            "status")


async def add_rule(store: StateStore, anny_resource_id: str, room: str, time_zone: str = "") -> Rule:
    anny_resource_id, room = anny_resource_id.strip(), normalise_mailbox(room)
    if not anny_resource_id:
        raise RuleError("the anny resource id is empty")
    if "@" not in room or room.startswith("@") or room.endswith("@"):
        raise RuleError("the room must be a mailbox address like room@contoso.com", room=room)
    if time_zone:
        try:
            ZoneInfo(time_zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise RuleError("unknown time zone; expected an IANA name like Europe/Berlin",
                            time_zone=time_zone) from None
    try:
        return await store.add_rule(Rule(anny_resource_id, room, time_zone=time_zone))
    except ConcurrencyError:
        mapped = await store.get_rule(anny_resource_id)
        if mapped is not None:
            raise RuleError("this anny resource is mapped already", anny_resource=anny_resource_id,
                            room=mapped.room) from None
        raise RuleError("this room is mapped already", room=room) from None


def rule_view(rule: Rule) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in asdict(rule).items()}


async def _set_state(store: StateStore, state: str) -> IntegrationStatus:
    def change(status: IntegrationStatus) -> None:
        status.state = state
        if state == "active":
            status.activated_at = datetime.now(UTC)

    return await store.update_status(change)


async def activate(worker: Worker) -> dict[str, Any]:
    """Subscribe every mapped room and sync the whole window both ways, now."""
    await _set_state(worker.services.store, "active")
    worker.services.forget_status()
    report = await run_nightly(worker)
    rooms = [w for w in report.follow_up if isinstance(w, RoomWork)]
    await _handle_all(worker, report.follow_up)
    return {"state": "active", "rooms": len(rooms), "bookings_checked": report.bookings_checked,
            "subscriptions_renewed": report.renewed}


async def _handle_all(worker: Worker, work: list[Work], limit: int = 50) -> None:
    """Run work items here and now, with the follow-ups they ask for (bounded)."""
    pending = list(work)
    while pending and limit > 0:
        limit -= 1
        pending.extend(await worker.handle(pending.pop(0)))


async def deactivate(worker: Worker) -> dict[str, Any]:
    """Stop syncing: subscriptions removed, webhooks acknowledged and ignored; nothing else removed."""
    store = worker.services.store
    await _set_state(store, "inactive")
    worker.services.forget_status()
    removed = 0
    for rule in await store.list_rules():
        removed += await worker.subscriptions.remove(rule.room)
    return {"state": "inactive", "subscriptions_removed": removed}


DELETION_GRACE_S = STATUS_TTL_S


@dataclass
class Removal:
    events: int = 0
    blockers: int = 0
    subscriptions: int = 0
    rules: int = 0


async def remove_rule(worker: Worker, anny_resource_id: str) -> dict[str, Any]:
    """Delete a rule and everything this app created for it (mirror events and blockers)."""
    store = worker.services.store
    rule = await store.get_rule(anny_resource_id)
    if rule is None:
        raise RuleError("no rule for this anny resource", anny_resource=anny_resource_id)
    rule.removing = True  # from now on the worker treats the resource and room as unmapped
    await store.save_rule(rule)
    removal = Removal()
    removal.subscriptions += await worker.subscriptions.remove(rule.room)
    for link in await store.all_links_of_room(rule.room):
        await _remove_link(worker, link, rule, removal)
    await _forget_rule(store, rule, removal)
    return {**rule_view(rule), "removed": asdict(removal)}


async def _forget_rule(store: StateStore, rule: Rule, removal: Removal) -> None:
    await store.delete_room_state(rule.room)
    try:
        await store.remove_rule(rule.anny_resource_id)
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
    await services.store.delete_link(link)


async def delete_integration(worker: Worker) -> dict[str, Any]:
    """Remove every mirror event and blocker, every subscription and all stored state."""
    store = worker.services.store
    await _set_state(store, "deleting")
    worker.services.forget_status()
    await asyncio.sleep(DELETION_GRACE_S)  # other instances stop taking work before the scan
    removal = Removal()
    rules = {rule.room: rule for rule in await store.list_rules()}
    for rule in rules.values():
        removal.subscriptions += await worker.subscriptions.remove(rule.room)
    for link in await store.all_links():
        await _remove_link(worker, link, rules.get(link.room), removal)
    removal.rules = len(rules)
    await store.clear_all()
    log.info("integration deleted", extra=asdict(removal))
    return {"state": "deleted", "removed": asdict(removal)}


async def poison_count(storage: StorageSettings) -> int | None:
    """Work items parked in the poison queue after maxDequeueCount failures (None: unknown)."""
    from azure.core.exceptions import AzureError, ResourceNotFoundError
    from azure.storage.queue.aio import QueueClient

    credential = None
    if storage.connection_string:
        client = QueueClient.from_connection_string(storage.connection_string, POISON_QUEUE)
    else:
        from azure.identity.aio import DefaultAzureCredential

        credential = DefaultAzureCredential(managed_identity_client_id=storage.client_id or None)
        client = QueueClient(storage.queue_service_uri, POISON_QUEUE, credential=credential)
    try:
        return (await client.get_queue_properties()).approximate_message_count
    except ResourceNotFoundError:
        return 0
    except AzureError as exc:
        log.warning("poison queue not readable", extra={"error": str(exc)})
        return None
    finally:
        await client.close()
        if credential is not None:
            await credential.close()


async def status_view(store: StateStore, storage: StorageSettings) -> dict[str, Any]:
    status = await store.get_status()
    subscriptions = {s.room: s.expires_at.isoformat() for s in await store.list_subscriptions()}
    rooms = {r.room: r for r in await store.list_room_states()}
    return {
        "state": status.state,
        "activated_at": _iso(status.activated_at),
        "last_error": status.last_error or None,
        "last_error_at": _iso(status.last_error_at),
        "poison_queue": await poison_count(storage),
        "rules": [{**rule_view(rule), "subscription_expires": subscriptions.get(rule.room),
                   "last_run_at": _iso(rooms[rule.room].last_run_at) if rule.room in rooms else None}
                  for rule in await store.list_rules()],
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


async def run_command(command: str, params: dict[str, str], worker: Worker) -> Any:
    """Carry out one admin command; raises RuleError (bad input) or SyncError."""
    store = worker.services.store
    if command == "rooms":  # what can be mapped: the tenant's room mailboxes (Graph Places)
        return [asdict(room) for room in await worker.services.graph.list_rooms()]
    if command == "resources":  # ... and anny's resources; only parents can be mapped
        return [asdict(resource) for resource in await worker.services.anny.list_resources()]
    if command == "rules.list":
        return [rule_view(r) for r in await store.list_rules()]
    if command == "rules.add":
        rule = await add_rule(store, params.get("anny_resource", ""), params.get("room", ""),
                              params.get("time_zone", ""))
        if await worker.services.is_active():  # a rule added while active is synced at once
            report = NightlyReport()
            await sync_rule(worker, rule, report)
            await _handle_all(worker, report.follow_up)
        return rule_view(rule)
    if command == "rules.remove":
        return await remove_rule(worker, params.get("anny_resource", ""))
    if command == "activate":
        return await activate(worker)
    if command == "deactivate":
        return await deactivate(worker)
    if command == "delete":
        return await delete_integration(worker)
    if command == "status":
        return await status_view(store, worker.services.settings.storage)
    raise RuleError(f"unknown command; expected one of {', '.join(COMMANDS)}", command=command)
